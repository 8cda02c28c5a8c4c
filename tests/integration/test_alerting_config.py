"""The alert rules and Alertmanager's routing on the real tools: promtool of the suite's
Prometheus image checks the rendered rules and runs their unit tests, amtool of its Alertmanager
image checks the rendered configuration and its routes, and a running Alertmanager delivers to a
Slack-compatible webhook and to SMTP while holding back what HostDown and PostgresDown explain."""

from __future__ import annotations

import email
import json
import os
import re
import secrets
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploysuite.config.layers import known_environments, load_config
from deploysuite.monitoring import alertmanager as am
from deploysuite.monitoring.rules import (
    AlertThresholds,
    alert_names,
    alert_thresholds,
    promtool_check_rules_argv,
    promtool_test_argv,
    render_rules,
    rule_test_files,
    write_rule_check_folder,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TEST_LABEL = "com.mysaaschat.test=alerting"
HOOK_PORT = 8099
SMTP_PORT = 2525


def run(argv: tuple[str, ...] | list[str], timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def as_me() -> str:
    """The test's own uid:gid: the rendered Alertmanager files are 0600 and belong to it."""
    return f"{os.getuid()}:{os.getgid()}"


def check_folder(tmp_path: Path, thresholds: AlertThresholds) -> tuple[Path, list, list]:
    folder = tmp_path / "check"
    folder.mkdir()
    rules, tests = write_rule_check_folder(folder, render_rules(thresholds), rule_test_files())
    return folder, rules, tests


# --- promtool -----------------------------------------------------------------------------------


def test_rendered_rules_pass_promtool_check_and_every_unit_test(base_images, tmp_path: Path):
    image = base_images["prometheus"]
    folder, rules, tests = check_folder(tmp_path, AlertThresholds())
    check = run(promtool_check_rules_argv(image, folder, rules))
    assert check.returncode == 0, check.stdout + check.stderr
    total = sum(int(n) for n in re.findall(r"SUCCESS: (\d+) rules found", check.stdout))
    assert total == len(alert_names(render_rules(AlertThresholds())))
    result = run(promtool_test_argv(image, folder, tests))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(tests)


def test_a_changed_threshold_fails_the_unit_tests_it_breaks(base_images, tmp_path: Path):
    """The unit tests hold the defaults: a `for:` twice as long and a higher 5xx ratio make the
    firing cases of ServiceDown and High5xxRatio fail, and promtool says so."""
    changed = AlertThresholds(service_down_for="2m", http_5xx_ratio=0.1)
    folder, _, tests = check_folder(tmp_path, changed)
    result = run(promtool_test_argv(base_images["prometheus"], folder, tests))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "alertname: ServiceDown, time: 2m" in output
    assert "alertname: High5xxRatio, time: 6m" in output


def test_every_environment_renders_rules_promtool_accepts(base_images, tmp_path: Path):
    folder = tmp_path / "envs"
    files: list[str] = []
    envs = known_environments(REPO)
    for env in envs:
        rendered = render_rules(alert_thresholds(load_config(env, root=REPO, process_env={})))
        rules, _ = write_rule_check_folder(folder / env, rendered, {})
        files += [f"{env}/{rel}" for rel in rules]
    folder.chmod(0o755)
    result = run(promtool_check_rules_argv(base_images["prometheus"], folder, files))
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(envs) >= 3 and result.stdout.count("SUCCESS") == len(files)


# --- amtool -------------------------------------------------------------------------------------


@pytest.fixture
def rendered(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """The local environment's Alertmanager folder, and one with a webhook and SMTP login."""
    local = tmp_path / "local"
    am.write_alertmanager(am.alertmanager_routing(load_config("local", process_env={})), local)
    full = tmp_path / "full"
    am.write_alertmanager(
        am.AlertRouting(
            email_to="oncall@example.test",
            email_from="alertmanager@example.test",
            smtp_smarthost="smtp.example.test:587",
            smtp_require_tls=True,
            smtp_username="alerts",
            smtp_password=secrets.token_urlsafe(16),
            webhook_url=f"https://chat.example.test/hooks/{secrets.token_urlsafe(24)}",
        ),
        full,
    )
    yield {"local": local, "full": full}


@pytest.mark.parametrize("variant", ["local", "full"])
def test_amtool_accepts_the_rendered_configuration(base_images, rendered, variant: str):
    result = run(
        am.amtool_check_config_argv(base_images["alertmanager"], rendered[variant], as_me())
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    assert "2 inhibit rules" in result.stdout and "2 receivers" in result.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        ({"alertname": "ServiceDown", "severity": "critical", "service": "chat"}, "page"),
        ({"alertname": "DiskFillingUp", "severity": "warning"}, "ticket"),
        ({"alertname": "Unlabelled"}, "ticket"),
    ],
)
def test_amtool_routes_by_severity(base_images, rendered, labels: dict, receiver: str):
    image = base_images["alertmanager"]
    result = run(am.amtool_route_argv(image, rendered["full"], labels, receiver, as_me()))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def test_amtool_route_check_fails_on_the_wrong_receiver(base_images, rendered):
    labels = {"alertname": "ServiceDown", "severity": "critical"}
    argv = am.amtool_route_argv(
        base_images["alertmanager"], rendered["full"], labels, "ticket", as_me()
    )
    result = run(argv)
    assert result.returncode != 0
    assert result.stdout.splitlines()[0] == "page"
    assert "did not match" in result.stdout


# --- a running Alertmanager ---------------------------------------------------------------------

# Runs in a container sharing the Alertmanager's network namespace: a Slack-compatible webhook
# and an SMTP server on loopback record what arrives; the alerts of ALERTS (JSON) are posted to
# Alertmanager's API; once three notifications have arrived each way (or a minute has passed)
# it prints what arrived and Alertmanager's view of the alerts, as one JSON document.
SIDECAR = r"""
import asyncore, json, os, smtpd, sys, threading, time, urllib.request, warnings
from http.server import BaseHTTPRequestHandler, HTTPServer

hooks, mails = [], []


class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        hooks.append({"path": self.path, "body": json.loads(body)})
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


class Sink(smtpd.SMTPServer):
    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        mails.append({"from": mailfrom, "to": rcpttos, "data": data.decode(errors="replace")})


server = HTTPServer(("127.0.0.1", int(os.environ["HOOK_PORT"])), Hook)
threading.Thread(target=server.serve_forever, daemon=True).start()
Sink(("127.0.0.1", int(os.environ["SMTP_PORT"])), None)
threading.Thread(target=asyncore.loop, kwargs={"timeout": 0.2}, daemon=True).start()

api = "http://127.0.0.1:9093"
deadline = time.monotonic() + 60
while True:
    try:
        urllib.request.urlopen(api + "/-/ready", timeout=2)
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit("alertmanager did not become ready")
        time.sleep(0.3)
request = urllib.request.Request(
    api + "/api/v2/alerts", data=os.environ["ALERTS"].encode(), method="POST",
    headers={"Content-Type": "application/json"},
)
urllib.request.urlopen(request, timeout=10)
while time.monotonic() < deadline and (len(hooks) < 3 or len(mails) < 3):
    time.sleep(0.2)
time.sleep(3)  # a held-back alert that arrives anyway would arrive by now
alerts = json.load(urllib.request.urlopen(api + "/api/v2/alerts", timeout=10))
print(json.dumps({
    "hooks": hooks,
    "mails": mails,
    "alerts": [{"labels": a["labels"], "status": a["status"]} for a in alerts],
}))
"""


def alert(name: str, severity: str, **labels: str) -> dict:
    return {
        "labels": {"alertname": name, "severity": severity, **labels},
        "annotations": {
            "summary": f"{name} summary",
            "description": f"{name} description",
            "runbook": f"{name} runbook: inv status --env=local",
        },
    }


ALERTS = [
    alert("HostDown", "critical", host="app-1", instance="app-1:9100", job="node"),
    alert("ServiceDown", "critical", host="app-1", service="chat", job="services"),
    alert("PostgresDown", "critical", dependency="postgresql", job="postgres"),
    alert("ServiceNotReady", "warning", dependency="postgresql", service="auth", job="services"),
    alert("DiskFillingUp", "warning", host="app-2", mountpoint="/", job="node"),
]


def test_alertmanager_pages_and_tickets_through_webhook_and_mail_and_inhibits(
    base_images, tmp_path: Path
):
    token = secrets.token_urlsafe(24)
    routing = am.AlertRouting(
        email_to="oncall@example.test",
        email_from="alertmanager@example.test",
        smtp_smarthost=f"127.0.0.1:{SMTP_PORT}",
        webhook_url=f"http://127.0.0.1:{HOOK_PORT}/hooks/{token}",
        group_wait="1s",
        group_interval="1s",
    )
    folder = tmp_path / "alertmanager"
    am.write_alertmanager(routing, folder)
    name = f"mysaaschat-test-alertmanager-{uuid.uuid4().hex[:12]}"
    # As the files' owner (they are 0600), state in /tmp, no cluster: a single instance sends
    # at once instead of waiting for peers to settle.
    started = run([
        "docker", "run", "--detach", "--name", name, "--label", TEST_LABEL, "--user", as_me(),
        "--volume", f"{folder}:{am.CONFIG_DIR}:ro",
        base_images["alertmanager"],
        f"--config.file={am.CONFIG_DIR / am.CONFIG_FILE}", "--storage.path=/tmp",
        "--cluster.listen-address=",
    ])  # fmt: skip
    try:
        assert started.returncode == 0, started.stderr
        sidecar = run(
            [
                "docker", "run", "--rm", "--label", TEST_LABEL, "--network", f"container:{name}",
                "--env", f"HOOK_PORT={HOOK_PORT}", "--env", f"SMTP_PORT={SMTP_PORT}",
                "--env", f"ALERTS={json.dumps(ALERTS)}", "--env", "PYTHONWARNINGS=ignore",
                base_images["python"], "python3", "-c", SIDECAR,
            ],
            timeout=180,
        )  # fmt: skip
        logs = run(["docker", "logs", name]).stderr[-3000:]
        assert sidecar.returncode == 0, f"{sidecar.stdout}\n{sidecar.stderr}\n{logs}"
        seen = json.loads(sidecar.stdout.strip().splitlines()[-1])
    finally:
        run(["docker", "rm", "--force", "--volumes", name])

    states = {a["labels"]["alertname"]: a["status"] for a in seen["alerts"]}
    assert states["ServiceDown"]["state"] == "suppressed" and states["ServiceDown"]["inhibitedBy"]
    assert states["ServiceNotReady"]["state"] == "suppressed"
    assert states["ServiceNotReady"]["inhibitedBy"]
    for active in ("HostDown", "PostgresDown", "DiskFillingUp"):
        assert states[active]["state"] == "active", (active, states[active], logs)

    # The webhook: the URL came from the secret file (its path carries the token), Slack's
    # message shape, one message per group, nothing for the held-back alerts.
    assert {h["path"] for h in seen["hooks"]} == {f"/hooks/{token}"}, logs
    titles = sorted(h["body"]["attachments"][0]["title"] for h in seen["hooks"])
    assert [t.split(" ")[0] for t in titles] == ["[page]", "[page]", "[ticket]"], titles
    assert ["DiskFillingUp" in titles[2], "HostDown" in " ".join(titles)] == [True, True]
    assert not any("ServiceDown" in t or "ServiceNotReady" in t for t in titles)
    texts = " ".join(h["body"]["attachments"][0]["text"] for h in seen["hooks"])
    assert "Runbook: HostDown runbook: inv status --env=local" in texts

    # The mail: the same three notifications, to the on-call address, subject-tagged.
    subjects = sorted(email.message_from_string(m["data"])["Subject"] for m in seen["mails"])
    assert [s.split(" ")[0] for s in subjects] == ["[page]", "[page]", "[ticket]"], subjects
    assert all(m["to"] == ["oncall@example.test"] for m in seen["mails"])
    assert not any("ServiceDown" in s or "ServiceNotReady" in s for s in subjects)
