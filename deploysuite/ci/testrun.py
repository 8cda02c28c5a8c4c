"""The length of a full test run, from the JUnit XML that `./scripts/test` writes: what the
README says about it is rendered from bench/results/test-run.json, never typed by hand.

    python -m deploysuite.ci.testrun JUNIT_XML WALL_SECONDS   (scripts/test does it)
        -> build/test-results/summary.json
    inv ci.test-run --record   -> copies it to bench/results/test-run.json and rewrites the
                                  README's sentence between its markers
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any

START, END = "<!-- test-run -->", "<!-- /test-run -->"


def summarize(junit_xml: str, wall_seconds: float) -> dict[str, Any]:
    """Counts and pytest's own time over every <testsuite>, with the whole run's wall time."""
    root = ET.fromstring(junit_xml)
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    total: dict[str, Any] = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    seconds = 0.0
    for suite in suites:
        for key in total:
            total[key] += int(suite.get(key, 0))
        seconds += float(suite.get("time", 0))
    total["passed"] = total["tests"] - total["failures"] - total["errors"] - total["skipped"]
    total["pytest_seconds"] = round(seconds)
    total["wall_seconds"] = round(wall_seconds)
    total["date"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    return total


def sentence(run: Mapping[str, Any]) -> str:
    minutes, seconds = divmod(int(run["wall_seconds"]), 60)
    outcome = (f"{run['passed']:,} passed, {run['skipped']} skipped"
               + (f", {run['failures'] + run['errors']} failed" if run["failures"] + run["errors"]
                  else ""))  # fmt: skip
    return (
        f"{START}measured on {run['date']}: {run['tests']:,} tests ({outcome}) in "
        f"{run['pytest_seconds']:,} s of pytest, {minutes} min {seconds} s for the whole "
        f"`./scripts/test` (bench/results/test-run.json){END}"
    )


def with_sentence(readme: str, run: Mapping[str, Any]) -> str:
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(readme):
        raise ValueError(f"the README has no {START} ... {END} markers")
    return pattern.sub(lambda _m: sentence(run), readme, count=1)


def main(argv: list[str]) -> int:
    xml_path, wall = Path(argv[0]), float(argv[1])
    if not xml_path.is_file():
        print(f"no {xml_path}: pytest wrote no report", file=sys.stderr)
        return 1
    out = xml_path.parent / "summary.json"
    out.write_text(json.dumps(summarize(xml_path.read_text(), wall), indent=2) + "\n")
    print(f"test run summary: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
