"""inv timeline as data: the window, Prometheus's queries and the argv that asks them inside its
container, each source's parser on small saved answers, and the merged view, newest first."""

from __future__ import annotations

import datetime as dt
import importlib
import json
from pathlib import Path

import pytest
from invoke import Collection

from deploysuite.core.errors import CommandFailed
from deploysuite.monitoring import timeline as tl
from deploysuite.monitoring.timeline import TimelineEvent

END = dt.datetime(2026, 12, 6, 3, 0, tzinfo=dt.UTC)  # unix 1796526000
FILES = [Path("/r/docker-compose.prod.yml"), Path("/r/services.env.yml")]


def at(hour: int, minute: int, second: int = 0, day: int = 6) -> dt.datetime:
    return dt.datetime(2026, 12, day, hour, minute, second, tzinfo=dt.UTC)


def unix(when: dt.datetime) -> float:
    return when.timestamp()


def matrix(*series: tuple[dict[str, str], list[float], list[str] | str]) -> str:
    """A query_range answer: (labels, sample times, values or one value for all)."""
    result = []
    for labels, stamps, values in series:
        texts = values if isinstance(values, list) else [values] * len(stamps)
        result.append({"metric": labels,
                       "values": [[s, v] for s, v in zip(stamps, texts, strict=True)]})  # fmt: skip
    return json.dumps({"status": "success", "data": {"resultType": "matrix", "result": result}})


def vector(*samples: tuple[dict[str, str], float, str]) -> str:
    result = [{"metric": labels, "value": [stamp, value]} for labels, stamp, value in samples]
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}})


EMPTY = matrix()


# --- the window ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("6h", 21600), ("90m", 5400), ("2d", 172800), ("300s", 300), (" 6h ", 21600)],
)
def test_since_is_a_whole_number_and_a_unit(text: str, seconds: int):
    assert tl.parse_since(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("6x", "--since '6x' is not a duration"),
        ("-1h", "--since '-1h' is not a duration"),
        ("1.5h", "--since '1.5h' is not a duration"),
        ("6", "--since '6' is not a duration"),
        ("", "--since needs a duration"),
        ("  ", "--since needs a duration"),
        ("0h", "--since 0 is an empty window"),
    ],
)
def test_a_bad_since_is_one_clear_error_with_exit_12(text: str, message: str):
    with pytest.raises(tl.TimelineError) as info:
        tl.parse_since(text)
    assert info.value.what == message
    assert info.value.exit_code == 12
    assert "6h" in (info.value.fix or "")


def test_the_step_is_the_rule_interval_until_the_window_would_exceed_the_point_limit():
    assert tl.range_step(dt.timedelta(hours=6)) == 15
    assert tl.range_step(dt.timedelta(days=1)) == 15
    assert tl.range_step(dt.timedelta(days=7)) == 61  # 604800 s / 10,000 points, rounded up


# --- commands as data ---------------------------------------------------------------------


def test_urls_are_urlencoded_for_prometheus_inside_its_container():
    start = END - dt.timedelta(hours=6)
    assert tl.query_range_url('ALERTS{alertstate="firing"}', start, END, 15) == (
        "http://127.0.0.1:9090/api/v1/query_range?query=ALERTS%7Balertstate%3D%22firing%22%7D"
        "&start=1796504400&end=1796526000&step=15"
    )
    assert tl.query_url("max_over_time(backup_wal_spool_oldest_seconds[21600s])", END) == (
        "http://127.0.0.1:9090/api/v1/query?query=max_over_time%28backup_wal_spool_oldest_seconds"
        "%5B21600s%5D%29&time=1796526000"
    )
    assert tl.query_url("up", END + dt.timedelta(milliseconds=250)) == (
        "http://127.0.0.1:9090/api/v1/query?query=up&time=1796526000.250"
    )


def test_prometheus_is_read_with_wget_inside_its_container():
    url = "http://127.0.0.1:9090/api/v1/query?query=up&time=1796526000"
    assert tl.prometheus_exec_argv("p1", FILES, ("monitoring", "backup"), url) == (
        "docker", "compose", "--project-name", "p1", "--file", "/r/docker-compose.prod.yml",
        "--file", "/r/services.env.yml", "--profile", "monitoring", "--profile", "backup",
        "exec", "-T", "prometheus", "wget", "-q", "-O", "-", url,
    )  # fmt: skip


def test_the_queries_of_a_remote_and_of_the_local_environment():
    start = END - dt.timedelta(hours=6)
    remote = tl.prometheus_queries("staging", start, END, local=False)
    assert [(q.source, q.query) for q in remote] == [
        ("alerts", 'ALERTS{alertstate="firing"}'),
        ("verified", "backup_newest_verified_timestamp_seconds"),
        ("failed", "backup_last_error_timestamp_seconds"),
        ("wal lag", "max_over_time(backup_wal_spool_oldest_seconds[21600s])"),
    ]
    assert remote[1].url == (
        "http://127.0.0.1:9090/api/v1/query_range?query=backup_newest_verified_timestamp_seconds"
        "&start=1796504400&end=1796526000&step=15"
    )
    assert remote[3].url == tl.query_url(remote[3].query, END)
    local = tl.prometheus_queries("local", start, END, local=True)
    assert local[:4] == remote
    assert (local[4].source, local[4].query) == (
        "deploys",
        'deploysuite_last_deploy_timestamp_seconds{env="local"}',
    )
    assert local[4].url == tl.query_range_url(local[4].query, start, END, 15)


# --- Prometheus's answers -----------------------------------------------------------------


def test_an_answer_that_is_not_json_names_the_query():
    with pytest.raises(tl.TimelineError) as info:
        tl.alert_events("<html>502 Bad Gateway</html>\nmore", END, 15)
    assert info.value.what == (
        'Prometheus\'s answer to ALERTS{alertstate="firing"} is not JSON: '
        "<html>502 Bad Gateway</html>"
    )
    with pytest.raises(tl.TimelineError, match="is not JSON: an empty answer"):
        tl.backup_events("", EMPTY, END)


def test_an_error_status_names_the_query_and_prometheus_reason():
    refused = json.dumps({"status": "error", "errorType": "bad_data",
                          "error": "exceeded maximum resolution of 11,000 points"})  # fmt: skip
    with pytest.raises(tl.TimelineError) as info:
        tl.backup_events(EMPTY, refused, END)
    assert info.value.what == (
        "Prometheus refused backup_last_error_timestamp_seconds: "
        "bad_data: exceeded maximum resolution of 11,000 points"
    )
    with pytest.raises(tl.TimelineError) as info:
        tl.deploy_metric_events("[]")
    assert info.value.what == (
        "Prometheus refused deploysuite_last_deploy_timestamp_seconds: no status 'success'"
    )


def test_alert_runs_become_fired_and_resolved_events():
    start = at(2, 50)
    answer = matrix(
        (
            {"__name__": "ALERTS", "alertname": "ServiceDown", "alertstate": "firing",
             "severity": "critical", "service": "billing", "instance": "billing:8000"},
            # a run that began before the window, a gap, a second run of three minutes
            [unix(at(2, 50)), unix(at(2, 51)), unix(at(2, 56)), unix(at(2, 57)), unix(at(2, 58))],
            "1",
        ),
        (
            {"alertname": "HighLatencyP99", "severity": "warning", "instance": "chat:8000"},
            [unix(at(2, m)) for m in (55, 56, 57, 58, 59)] + [unix(END)],
            "1",
        ),
    )  # fmt: skip
    assert tl.alert_events(answer, END, 60, start) == [
        TimelineEvent(at(2, 50), "alert fired", "ServiceDown",
                      "severity=critical, service=billing; firing since before the window"),
        TimelineEvent(at(2, 52), "alert resolved", "ServiceDown",
                      "severity=critical, service=billing; fired for at least 2 min"),
        TimelineEvent(at(2, 56), "alert fired", "ServiceDown",
                      "severity=critical, service=billing"),
        TimelineEvent(at(2, 59), "alert resolved", "ServiceDown",
                      "severity=critical, service=billing; fired for 3 min"),
        TimelineEvent(at(2, 55), "alert fired", "HighLatencyP99",
                      "severity=warning, instance=chat:8000; still firing"),
    ]  # fmt: skip


def test_a_run_whose_last_point_is_the_last_before_the_end_is_still_firing():
    # step 60 from 02:50:30: points up to 02:59:30; firing there means firing at the end
    answer = matrix(({"alertname": "DiskFillingUp"}, [unix(at(2, 59, 30))], "1"))
    assert tl.alert_events(answer, END, 60) == [
        TimelineEvent(at(2, 59, 30), "alert fired", "DiskFillingUp", "severity=-; still firing"),
    ]
    assert tl.alert_events(EMPTY, END, 60) == []


AUDIT = [
    {"time": "2026-12-05T20:59:59+00:00", "action": "deploy", "env": "staging",
     "release": "r0", "outcome": "deployed", "by": "ci@runner"},
    {"time": "2026-12-06T01:00:00+00:00", "action": "deploy", "env": "staging",
     "release": "r2", "outcome": "rolled back", "previous": "r1", "by": "ana@laptop",
     "ci_run_url": "https://ci.example/run/9", "changed": ["chat", "auth"],
     "detail": "smoke failed:\n  chat /health/ready 503"},
    {"time": "2026-12-06T01:30:00+00:00", "action": "rollback", "env": "staging",
     "release": "r0", "outcome": "rolled back to", "previous": "r1", "by": "ana@laptop",
     "ci_run_url": "", "changed": [], "detail": ""},
    {"time": "2026-12-06T02:00:00Z", "action": "scale", "env": "staging",
     "replicas": {"chat": 3, "auth": 2}, "by": "ana@laptop", "ci_run_url": ""},
    {"time": "yesterday", "action": "deploy", "release": "r9", "outcome": "deployed"},
    {"action": "deploy", "release": "r8", "outcome": "deployed"},
    {"time": "2026-12-06T02:30:00+00:00", "action": "rollback", "release": "r0",
     "outcome": "failed", "previous": "r1", "detail": "connection lost"},
    {"time": "2026-12-06T02:40:00", "action": "prune", "release": "r0"},
]  # fmt: skip


def test_audit_records_inside_the_window_become_events():
    assert tl.audit_events(AUDIT, at(21, 0, day=5)) == [
        TimelineEvent(at(1, 0), "deploy", "r2 rolled back",
                      "from r1; changed chat, auth; by ana@laptop; https://ci.example/run/9; "
                      "smoke failed: chat /health/ready 503"),
        TimelineEvent(at(1, 30), "rollback", "to r0", "from r1; by ana@laptop"),
        TimelineEvent(at(2, 0), "scale", "auth=2, chat=3", "by ana@laptop"),
        TimelineEvent(at(2, 30), "rollback", "to r0 (failed)", "from r1; connection lost"),
        TimelineEvent(at(2, 40), "audit", "prune r0", ""),
    ]  # fmt: skip
    assert tl.audit_events(AUDIT, END) == []
    assert tl.audit_events([], at(21, 0, day=5)) == []


def test_backup_series_repeat_values_each_distinct_one_is_one_event():
    since = at(21, 0, day=5)
    before = unix(at(20, 0, day=5))  # the newest backup when the window began
    verified = matrix(
        ({"job": "backup", "instance": "backup:9187"},
         [unix(at(h, 0)) for h in (0, 1, 2, 3)],
         [str(before), str(before), str(unix(at(1, 30))), str(unix(at(1, 30)))]),
    )  # fmt: skip
    failed = matrix(
        ({"job": "backup", "instance": "backup:9187"},
         [unix(at(h, 0)) for h in (0, 1, 2)],
         [str(unix(at(0, 45))), str(unix(at(0, 45))), str(unix(at(1, 50)))]),
    )  # fmt: skip
    assert tl.backup_events(verified, failed, since) == [
        TimelineEvent(at(1, 30), "backup verified", "dumps of every database",
                      "each database's newest verified dump is this new"),
        TimelineEvent(at(0, 45), "backup failed", "dumps, base backup or WAL shipping",
                      "which one and why: the backup service's log"),
        TimelineEvent(at(1, 50), "backup failed", "dumps, base backup or WAL shipping",
                      "which one and why: the backup service's log"),
    ]  # fmt: skip
    assert tl.backup_note(verified, failed, since) is None


def test_no_backup_service_gives_no_events_and_one_line():
    since = at(21, 0, day=5)
    assert tl.backup_events(EMPTY, EMPTY, since) == []
    assert tl.backup_note(EMPTY, EMPTY, since) == (
        "no backup metrics in the window: the stack runs no backup service "
        "(compose profile backup), so no backup events"
    )
    old = matrix(({"job": "backup"}, [unix(at(0, 0))], str(unix(at(20, 0, day=5)))))
    assert tl.backup_events(old, EMPTY, since) == []
    assert tl.backup_note(old, EMPTY, since) == (
        "no backup verified in the window; the newest verified one finished at "
        "2026-12-05T20:00:00+00:00"
    )
    failed_only = matrix(({"job": "backup"}, [unix(at(0, 0))], str(unix(at(23, 0, day=5)))))
    assert tl.backup_note(EMPTY, failed_only, since) == (
        "the backup service verified no backup in the window, only failed runs"
    )


def test_wal_lag_is_one_summary_line_when_above_zero():
    window = dt.timedelta(hours=6)
    answer = vector(({"job": "backup", "instance": "backup:9187"}, unix(END), "340"))
    assert tl.wal_lag_events(answer, END, window) == [
        TimelineEvent(END, "wal lag", "WAL waited up to 5 min",
                      "the longest wait in the spool over the last 6 h 0 min; "
                      "WalShippingBehind fires above WAL_MAX_LAG_SECONDS"),
    ]  # fmt: skip
    assert tl.wal_lag_events(vector(({}, unix(END), "0")), END, window) == []
    assert tl.wal_lag_events(vector(({}, unix(END), "NaN")), END, window) == []
    assert tl.wal_lag_events(vector(), END, window) == []


def test_the_deploy_metric_gives_the_local_deploys_from_a_vector_or_a_range():
    deployed, failed = unix(at(2, 10, 5)) + 0.123, unix(at(1, 5))
    answer = vector(
        ({"env": "local", "outcome": "deployed", "job": "node"}, unix(END), str(deployed)),
        ({"env": "local", "outcome": "failed", "job": "node"}, unix(END), str(failed)),
        ({"env": "local", "outcome": "rolled back to"}, unix(END), str(unix(at(1, 0)))),
    )
    assert tl.deploy_metric_events(answer) == [
        TimelineEvent(at(1, 0), "rollback", "rolled back to",
                      "env=local, from the suite's textfile metric (no release id)"),
        TimelineEvent(at(1, 5), "deploy", "failed",
                      "env=local, from the suite's textfile metric (no release id)"),
        TimelineEvent(dt.datetime.fromtimestamp(deployed, dt.UTC), "deploy", "deployed",
                      "env=local, from the suite's textfile metric (no release id)"),
    ]  # fmt: skip
    # a range: every distinct value is one deploy; the one before the window is left out
    ranged = matrix(
        ({"env": "local", "outcome": "deployed"}, [unix(at(h, 0)) for h in (0, 1, 2)],
         [str(unix(at(20, 0, day=5))), str(unix(at(0, 30))), str(unix(at(0, 30)))]),
    )  # fmt: skip
    events = tl.deploy_metric_events(ranged, since=at(21, 0, day=5))
    assert [(e.time, e.kind, e.what) for e in events] == [(at(0, 30), "deploy", "deployed")]


# --- the view -----------------------------------------------------------------------------


def test_merge_is_newest_first_with_iso_seconds():
    events = [
        TimelineEvent(at(1, 0, 0), "deploy", "r2 deployed", "by ana"),
        TimelineEvent(at(2, 30, 15) + dt.timedelta(microseconds=400), "alert fired", "X", "d"),
        TimelineEvent(at(2, 0), "backup verified", "dumps of every database", ""),
        TimelineEvent(at(2, 0), "alert resolved", "Y", ""),
    ]
    assert tl.merge(events) == [
        {"time": "2026-12-06T02:30:15+00:00", "kind": "alert fired", "what": "X", "detail": "d"},
        {"time": "2026-12-06T02:00:00+00:00", "kind": "alert resolved", "what": "Y", "detail": ""},
        {"time": "2026-12-06T02:00:00+00:00", "kind": "backup verified",
         "what": "dumps of every database", "detail": ""},
        {"time": "2026-12-06T01:00:00+00:00", "kind": "deploy", "what": "r2 deployed",
         "detail": "by ana"},
    ]  # fmt: skip
    assert tl.merge([]) == []


def test_a_bad_answer_costs_its_own_source_only():
    start, end = END - dt.timedelta(hours=6), END
    answers: dict[tl.Source, str] = {
        "alerts": "not json",
        "verified": EMPTY,
        "failed": EMPTY,
        "wal lag": vector(({}, unix(END), "12")),
        "deploys": matrix(({"env": "local", "outcome": "deployed"}, [unix(at(1, 0))],
                           str(unix(at(0, 59))))),
    }  # fmt: skip
    events, notes = tl.read_answers(answers, start, end)
    assert [(e.kind, e.what) for e in events] == [
        ("wal lag", "WAL waited up to 12 s"),
        ("deploy", "deployed"),
    ]
    assert notes == [
        'Prometheus\'s answer to ALERTS{alertstate="firing"} is not JSON: not json; '
        "no alert events",
        "no backup metrics in the window: the stack runs no backup service "
        "(compose profile backup), so no backup events",
    ]
    assert tl.read_answers({}, start, end) == ([], [])


# --- the task -----------------------------------------------------------------------------


class DownRunner:
    """A runner whose every command fails as `docker compose exec` does on a stopped stack."""

    def __init__(self) -> None:
        self.calls = 0

    def run(self, command, **_):  # type: ignore[no-untyped-def]
        self.calls += 1
        raise CommandFailed(command.argv, 1, 'service "prometheus" is not running')


def test_a_stopped_prometheus_is_one_line_and_asked_once():
    from deploysuite.deploy.live import LiveStack
    from deploysuite.engines.stack import Stack
    from tasks import timeline as task_module

    runner = DownRunner()
    live = LiveStack(runner, Stack("p1", tuple(FILES), ("monitoring",)), {}, "h1")  # type: ignore[arg-type]
    queries = tl.prometheus_queries("local", END - dt.timedelta(hours=6), END, local=True)
    answers, notes = task_module._ask_prometheus(live, queries)
    assert (answers, runner.calls) == ({}, 1)
    assert notes == [
        "Prometheus did not answer on h1, so this timeline has no alert, backup, WAL lag or "
        "deploy events: [local] `docker compose --project-name ...` exited 1: "
        'service "prometheus" is not running'
    ]


def test_the_task_imports_as_a_package_module_and_is_a_root_task():
    module = importlib.import_module("tasks.timeline")
    assert isinstance(module.ns, Collection)
    from invoke.loader import FilesystemLoader

    root, _ = FilesystemLoader(start=str(Path(__file__).resolve().parents[2])).load("tasks")
    tree = Collection.from_module(root)
    assert "timeline" in tree.tasks
    body = tree.tasks["timeline"]
    assert body.__doc__.splitlines()[0] == (
        "Show what happened to an environment, newest first: deploys, rollbacks, alerts, backups."
    )
    assert {a.name: bool(a.help) for a in body.get_arguments()} == {
        "env": True, "since": True, "json": True,
    }  # fmt: skip


def test_a_remote_timeline_shows_the_audit_log_when_prometheus_or_the_release_is_missing(
    monkeypatch,
):
    from contextlib import contextmanager
    from types import SimpleNamespace

    from deploysuite.deploy.live import LiveStack
    from deploysuite.engines.stack import Stack
    from tasks import timeline as task_module

    host = SimpleNamespace(conn=SimpleNamespace(host=SimpleNamespace(name="h1")))
    live = LiveStack(DownRunner(), Stack("p1", tuple(FILES), ()), {}, "h1")  # type: ignore[arg-type]
    found: dict[str, LiveStack | None] = {"live": live}

    @contextmanager
    def fake_live_host(s):  # type: ignore[no-untyped-def]
        yield host, found["live"]

    monkeypatch.setattr(task_module, "live_host", fake_live_host)
    monkeypatch.setattr(task_module, "read_audit", lambda t: AUDIT)
    s = SimpleNamespace(config=SimpleNamespace(env="staging"))
    start = at(21, 0, day=5)
    events, notes, where = task_module._gather(s, start, END)  # type: ignore[arg-type]
    assert where == "h1"
    assert events == tl.audit_events(AUDIT, start)
    assert len(notes) == 1 and notes[0].startswith("Prometheus did not answer on h1")

    found["live"] = None
    events, notes, _ = task_module._gather(s, start, END)  # type: ignore[arg-type]
    assert events == tl.audit_events(AUDIT, start)
    assert notes == ["'staging' has no live release, so no Prometheus to ask: audit log only"]

    def unreadable(t):  # type: ignore[no-untyped-def]
        raise CommandFailed(("sh", "-c", "cat"), 1, "Permission denied")

    monkeypatch.setattr(task_module, "read_audit", unreadable)
    events, notes, _ = task_module._gather(s, start, END)  # type: ignore[arg-type]
    assert events == []
    assert notes[0] == (
        "the audit log on h1 could not be read: [local] `sh -c cat` exited 1: Permission denied"
    )


def test_the_line_for_a_stopped_prometheus_names_what_is_missing():
    remote = tl.prometheus_queries("staging", END - dt.timedelta(hours=6), END, local=False)
    assert tl.prometheus_down_note("h1", remote, "why") == (
        "Prometheus did not answer on h1, so this timeline has no alert, backup or WAL lag "
        "events: why"
    )
    assert tl.prometheus_down_note("h1", remote[:1], "why") == (
        "Prometheus did not answer on h1, so this timeline has no alert events: why"
    )
