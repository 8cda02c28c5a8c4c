import datetime as dt
import json
from dataclasses import asdict

from deploysuite.deploy.lock import LockInfo, ci_run_url, lock_path, new_info, parse_info


def test_lock_path():
    assert lock_path("/srv/mysaaschat/", "staging") == "/srv/mysaaschat/staging/deploy.lock"


def test_ci_run_url_only_when_complete():
    env = {"GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "acme/chat",
           "GITHUB_RUN_ID": "42"}  # fmt: skip
    assert ci_run_url(env) == "https://github.com/acme/chat/actions/runs/42"
    assert ci_run_url({"GITHUB_RUN_ID": "42"}) == ""


def test_info_round_trip_and_description():
    now = dt.datetime(2026, 11, 25, 18, 0, tzinfo=dt.UTC)
    info = new_info("r-20261125-1800", now, {})
    assert parse_info(json.dumps(asdict(info))) == info
    assert len(info.token) == 32 and "@" in info.owner
    text = info.describe(now + dt.timedelta(minutes=4, seconds=5))
    assert text.endswith("(4 min 5 s ago), release r-20261125-1800")
    assert parse_info("not json") is None and parse_info('{"owner": 1}') is None


def test_description_names_the_ci_run():
    info = LockInfo("ci@runner", "2026-11-25T18:00:00+00:00", "", "https://ci/run/1", "t", 1)
    now = dt.datetime(2026, 11, 25, 18, 1, tzinfo=dt.UTC)
    assert info.describe(now) == (
        "held by ci@runner since 2026-11-25T18:00:00+00:00 (1 min 0 s ago), CI run https://ci/run/1"
    )
