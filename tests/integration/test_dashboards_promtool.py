"""Every query of the Grafana dashboards, parsed by promtool of the stack's own Prometheus image:
each panel's and annotation's expression is one recording rule of a generated rule file, so a
query Prometheus would refuse fails here rather than on a dashboard that Grafana cannot show
on this machine."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from deploysuite.monitoring.dashboards import (
    PanelQuery,
    dashboard_queries,
    load_dashboards,
    promtool_check_dashboards_argv,
    rule_file_of_queries,
)

pytestmark = pytest.mark.integration

RULE_FILE = "dashboards.rules.yml"


def check_folder(tmp_path: Path, queries: Mapping[str, Sequence[PanelQuery]]) -> Path:
    """The rule file in a folder promtool can read: it runs as nobody in the image."""
    folder = tmp_path / "dashboards-check"
    folder.mkdir()
    (folder / RULE_FILE).write_text(rule_file_of_queries(queries), encoding="utf-8")
    os.chmod(folder / RULE_FILE, 0o644)
    os.chmod(folder, 0o755)
    return folder


def promtool(image: str, folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        promtool_check_dashboards_argv(image, folder, RULE_FILE),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_promtool_parses_every_query_of_every_dashboard(base_images, tmp_path: Path):
    queries = dashboard_queries(load_dashboards())
    assert {"overview", "postgresql", "backups"} <= set(queries)
    result = promtool(base_images["prometheus"], check_folder(tmp_path, queries))
    assert result.returncode == 0, result.stdout + result.stderr
    total = sum(len(listed) for listed in queries.values())
    assert f"SUCCESS: {total} rules found" in result.stdout, result.stdout


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param("sum by (service) (rate(http_requests_total[5m])", id="unclosed"),
        pytest.param("rat(http_requests_total[5m])", id="unknown-function"),
        # Grafana would substitute its variables; promtool cannot, so the dashboards use none
        pytest.param("rate(http_requests_total[$__rate_interval])", id="grafana-variable"),
    ],
)
def test_a_query_promtool_refuses_fails_the_check_naming_its_panel(
    base_images, tmp_path: Path, broken: str
):
    queries = {"broken": [("Fine", "up"), ("Requests", broken)]}
    result = promtool(base_images["prometheus"], check_folder(tmp_path, queries))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "dashboard:broken:2" in output, output
    assert "dashboard:broken:1" not in output, output
