"""Alerting tasks: what fires now, a routing test sent end to end, silences for maintenance."""

from __future__ import annotations

import datetime as dt
import secrets
import time

from invoke import Collection

from deploysuite.cli import task
from deploysuite.config.session import session
from deploysuite.core.runner import Command
from deploysuite.deploy.live import LiveStack, live_stack
from deploysuite.deploy.lock import new_info
from deploysuite.deploy.preflight_items import records
from deploysuite.monitoring import alerts as al


def _amtool(live: LiveStack, *args: str, mutates: bool = False):  # type: ignore[no-untyped-def]
    stack = live.stack
    argv = al.amtool_argv(stack.project, stack.files, stack.profiles, *args)
    fix = "is the monitoring profile on? inv status names Alertmanager's state"
    return live.runner.run(Command(argv, env=live.env, mutates=mutates, timeout=60), fix=fix)


def _in_alertmanager(live: LiveStack, *argv: str) -> str:
    stack = live.stack
    full = al.exec_argv(stack.project, stack.files, stack.profiles, *argv)
    return live.runner.run(Command(full, env=live.env, mutates=False, timeout=60)).stdout


@task(default=True)
def show(c, env="local", json=False):
    """Show the alerts firing now: severity, service, age and the runbook's first command."""
    s = session(env, json=json)
    with live_stack(s) as live:
        result = _amtool(live, *al.query_args())
    rows = al.parse_alerts(result.stdout, dt.datetime.now(dt.UTC))
    title = f"alerts of '{env}' ({live.where}): " + (
        f"{len(rows)} firing" if rows else "none firing"
    )
    s.events.result(rows, al.COLUMNS, title=title, extra={"env": env})


@task(help={"timeout": "Seconds to wait for every receiver (default 120)."})
def test(c, env="local", timeout=120, json=False):
    """Send a synthetic alert through Alertmanager and wait until every receiver took it.

    Run it after every change of routing: exits non-zero when an integration (e-mail, the
    webhook) failed or did not deliver in time. The alert resolves by itself after 5 minutes."""
    s = session(env, json=json)
    with live_stack(s) as live:
        routing = _in_alertmanager(live, "cat", "/etc/alertmanager/alertmanager.yml")
        integrations = al.configured_integrations(routing)
        before = al.notification_counts(_in_alertmanager(live, *al.metrics_args()))
        token = secrets.token_hex(4)
        _amtool(live, *al.test_alert_args(env, token, dt.datetime.now(dt.UTC)), mutates=True)
        deadline = time.monotonic() + float(timeout)
        with s.events.step(f"waiting for {', '.join(integrations) or 'a receiver'}"):
            while True:
                after = al.notification_counts(_in_alertmanager(live, *al.metrics_args()))
                sent, failed = al.delivery_progress(before, after, integrations)
                if failed or len(sent) == len(integrations) or time.monotonic() > deadline:
                    break
                time.sleep(2)
    rows = [
        {"integration": name,
         "result": "failed" if name in failed else "delivered" if name in sent else "no answer"}
        for name in integrations
    ]  # fmt: skip
    s.events.result(rows, ["integration", "result"], title=f"routing test of '{env}' ({token}):")
    missing = [r["integration"] for r in rows if r["result"] != "delivered"]
    failed = missing if integrations else ["no receiver configured"]
    records.record_result(s, "alert-tests", records.new_record(not failed, failed, env=env,
        token=token, results=rows))  # fmt: skip
    if missing or not integrations:
        raise al.AlertsError(
            f"the test alert did not reach: {', '.join(missing) or 'no receiver configured'}",
            f"inv logs --env={env} --service alertmanager",
        )


@task(
    iterable=["match"],
    help={
        "match": "A label matcher, e.g. alertname=ServiceDown or service=~chat|auth. Repeatable.",
        "for_": "How long the silence lasts (Alertmanager duration: 30m, 2h).",
        "comment": "Why: shown beside the silence to whoever looks at 3 a.m.",
    },
)
def silence(c, env="local", match=None, for_="2h", comment="", json=False):
    """Silence matching alerts for a while (maintenance); prints the silence's id."""
    s = session(env, json=json)
    author = new_info("", dt.datetime.now(dt.UTC), {}).owner
    args = al.silence_args(match or [], for_, comment, author)
    with live_stack(s) as live:
        result = _amtool(live, *args, mutates=True)
    row = {"silence": result.stdout.strip() or "(dry run)", "matchers": ", ".join(match or []),
           "for": for_, "by": author}  # fmt: skip
    s.events.result([row], list(row), title=f"silenced in '{env}':")


@task(help={"id_": "The silence's id, as inv alerts.silence printed it."})
def unsilence(c, env="local", id_=""):
    """Expire a silence before its time."""
    s = session(env)
    with live_stack(s) as live:
        _amtool(live, *al.expire_args(id_), mutates=True)
    s.events.info(f"silence {id_} expired")


ns = Collection("alerts")
ns.add_task(show, default=True)
ns.add_task(test)
ns.add_task(silence)
ns.add_task(unsilence)
