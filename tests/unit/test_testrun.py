"""The README's figure of a full run is rendered from the run's own JUnit report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploysuite.ci.testrun import END, START, sentence, summarize, with_sentence

REPO = Path(__file__).resolve().parents[2]
JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites>
<testsuite name="pytest" errors="0" failures="1" skipped="2" tests="10" time="123.4">
<testcase classname="a" name="b" time="1"/></testsuite></testsuites>"""


def test_the_counts_and_times_come_from_the_report():
    run = summarize(JUNIT, 1861.2)
    assert (run["tests"], run["passed"], run["failures"], run["skipped"]) == (10, 7, 1, 2)
    assert (run["pytest_seconds"], run["wall_seconds"]) == (123, 1861)
    text = sentence(run)
    assert "10 tests (7 passed, 2 skipped, 1 failed) in 123 s of pytest, 31 min 1 s" in text


def test_only_the_marked_sentence_changes():
    run = summarize(JUNIT, 60)
    readme = f"before {START}old figure{END} after"
    assert with_sentence(readme, run) == f"before {sentence(run)} after"
    with pytest.raises(ValueError, match="markers"):
        with_sentence("no markers", run)


def test_the_readme_says_what_the_recorded_run_says():
    recorded = REPO / "bench" / "results" / "test-run.json"
    if not recorded.exists():
        pytest.skip("no full run recorded yet (inv ci.test-run --record)")
    run = json.loads(recorded.read_text())
    assert sentence(run) in (REPO / "README.md").read_text()
