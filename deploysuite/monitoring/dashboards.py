"""Grafana's dashboards (grafana/dashboards/*.json) as data: their PromQL, the metrics it reads,
and a rule file that makes promtool parse every expression.

Grafana cannot be started everywhere the suite runs, so the dashboards are proven without it:
each panel's and annotation's expression becomes one recording rule of a generated file that
`promtool check rules` of the stack's own Prometheus image must accept (a typo in a query fails
CI, not the dashboard at 3 a.m.), and the metric names each expression reads are listed so that a
test can hold them against what the services, exporters and rules really expose.

Everything here is pure except `load_dashboards`, which reads the folder.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from deploysuite.core.commands import Argv
from deploysuite.core.errors import ConfigError
from deploysuite.monitoring.rules import promtool_check_rules_argv

DASHBOARDS_DIR = Path(__file__).resolve().parents[2] / "grafana" / "dashboards"
RECORD_PREFIX = "dashboard"

# A panel's or an annotation's title, and its PromQL expression.
PanelQuery = tuple[str, str]

# PromQL's lexer, reduced to what tells a metric name from everything else. Strings go first:
# a label value or regex such as "/health.*|/metrics" holds words that are no metric. Numbers
# include durations (5m, 1h30m) and hex; an identifier never starts with a digit.
_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
    | (?P<comment>\#[^\n]*)
    | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    | (?P<number>\.?[0-9][0-9A-Za-z_.]*)
    | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
    | (?P<punct>.)
    """,
    re.VERBOSE | re.DOTALL,
)
# Keywords followed by a parenthesised list of label names, not an expression.
_LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
# PromQL's keywords are case-insensitive; Inf and NaN are numbers.
_KEYWORDS = _LABEL_LIST_KEYWORDS | {"bool", "offset", "and", "or", "unless", "atan2", "inf", "nan"}
_NAME_MATCHER = re.compile(r"""^__name__\s*=\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)')$""")
_RECORD_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def load_dashboards(folder: Path = DASHBOARDS_DIR) -> dict[str, dict[str, Any]]:
    """Dashboard name (the file's stem) -> its JSON model, for every *.json in folder."""
    dashboards: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.json")):
        try:
            model = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{path}:{exc.lineno}: not JSON ({exc.msg})",
                f"fix the file, then python -m json.tool {path}",
            ) from None
        if not isinstance(model, dict):
            raise ConfigError(f"{path}: a dashboard is a JSON object", f"git checkout -- {path}")
        dashboards[path.stem] = model
    return dashboards


def _panels(panels: Sequence[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    # A collapsed row keeps its panels inside itself.
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels") or ())


def panel_queries(dashboard: Mapping[str, Any]) -> list[PanelQuery]:
    """(title, expr) of every panel target and every Prometheus annotation query, in the
    dashboard's order: panels first, then annotations. Targets without an expression (a
    built-in annotation, a panel of another data source) are left out."""
    queries: list[PanelQuery] = []
    for panel in _panels(dashboard.get("panels") or ()):
        for target in panel.get("targets") or ():
            if target.get("expr"):
                queries.append((str(panel.get("title", "")), target["expr"]))
    for annotation in (dashboard.get("annotations") or {}).get("list") or ():
        # Grafana 11 keeps the query in `target`; older models had it at the top level.
        expr = (annotation.get("target") or {}).get("expr") or annotation.get("expr")
        if expr:
            queries.append((str(annotation.get("name", "")), expr))
    return queries


def _significant_tokens(expr: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    for match in _TOKEN.finditer(expr):
        kind = match.lastgroup or "punct"
        if kind not in ("space", "comment"):
            tokens.append((kind, match.group()))
    return tokens


def _closing(tokens: Sequence[tuple[str, str]], start: int, opening: str, closing: str) -> int:
    """Index of the token that closes the bracket at `start` (the last token if unbalanced:
    promtool reports the syntax, this only has to stop)."""
    depth = 0
    for i in range(start, len(tokens)):
        kind, text = tokens[i]
        if kind == "punct" and text == opening:
            depth += 1
        elif kind == "punct" and text == closing:
            depth -= 1
            if depth == 0:
                return i
    return len(tokens) - 1


def _names_in_matchers(tokens: Sequence[tuple[str, str]]) -> set[str]:
    """A metric chosen by `{__name__="x"}` rather than by writing x; a regex names none."""
    names: set[str] = set()
    matcher = ""
    for kind, text in [*tokens, ("punct", ",")]:
        if kind == "punct" and text == ",":
            found = _NAME_MATCHER.match(matcher.strip())
            if found:
                raw = found.group(1) if found.group(1) is not None else found.group(2)
                names.add(re.sub(r"\\(.)", r"\1", raw))
            matcher = ""
        else:
            matcher += text
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers followed by `{` or `[` or
    standing alone. Left out: functions and aggregations (a name followed by `(`, or by `by` or
    `without` as in `sum by (x) (...)`, as Prometheus's own parser tells them), keywords, the
    label lists of by/without/on/ignoring/group_left/group_right, label names and values inside
    braces, ranges and durations, numbers and strings."""
    tokens = _significant_tokens(expr)
    names: set[str] = set()
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1] if i + 1 < len(tokens) else ("", "")
        if kind == "punct" and text == "{":
            end = _closing(tokens, i, "{", "}")
            names |= _names_in_matchers(tokens[i + 1 : end])
            i = end + 1
            continue
        if kind == "punct" and text == "[":
            i = _closing(tokens, i, "[", "]") + 1
            continue
        if kind != "ident":
            i += 1
            continue
        word = text.lower()
        if word in _LABEL_LIST_KEYWORDS and following == ("punct", "("):
            i = _closing(tokens, i + 1, "(", ")") + 1
            continue
        called = following == ("punct", "(")
        aggregated = following[0] == "ident" and following[1].lower() in ("by", "without")
        if word not in _KEYWORDS and not called and not aggregated:
            names.add(text)
        i += 1
    return names


def dashboard_queries(
    dashboards: Mapping[str, Mapping[str, Any]],
) -> dict[str, list[PanelQuery]]:
    """Dashboard name -> its panel and annotation queries."""
    return {name: panel_queries(model) for name, model in sorted(dashboards.items())}


def dashboard_metrics(folder: Path = DASHBOARDS_DIR) -> dict[str, set[str]]:
    """Metric name -> the dashboards that read it: what a running stack must expose for every
    panel to show data."""
    used: dict[str, set[str]] = {}
    for name, queries in dashboard_queries(load_dashboards(folder)).items():
        for _, expr in queries:
            for metric in metric_names(expr):
                used.setdefault(metric, set()).add(name)
    return dict(sorted(used.items()))


def record_name(dashboard: str, number: int) -> str:
    """`dashboard:<file>:<n>` (n from 1): a valid metric name whatever the file is called."""
    return f"{RECORD_PREFIX}:{_RECORD_UNSAFE.sub('_', dashboard)}:{number}"


class _RuleFileDumper(yaml.SafeDumper):
    """Multi-line expressions as literal blocks, so the file reads as the dashboards do."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_RuleFileDumper.add_representer(str, _represent_str)


def rule_file_of_queries(queries: Mapping[str, Sequence[PanelQuery]]) -> str:
    """A Prometheus rule file with one recording rule per query (dashboard name -> its queries),
    one group per dashboard. It is never loaded by a Prometheus: it exists so that
    `promtool check rules` parses each expression, and the `panel` label says whose it is."""
    groups = [
        {
            "name": f"{RECORD_PREFIX}-{name}",
            "rules": [
                {"record": record_name(name, n), "expr": expr, "labels": {"panel": title}}
                for n, (title, expr) in enumerate(listed, start=1)
            ],
        }
        for name, listed in sorted(queries.items())
    ]
    header = "# Generated from grafana/dashboards/*.json for promtool check rules; not loaded.\n"
    return header + yaml.dump(
        {"groups": groups}, Dumper=_RuleFileDumper, sort_keys=False, allow_unicode=True
    )


def promtool_check_dashboards_argv(image: str | None, folder: Path, rule_file: str) -> Argv:
    """`promtool check rules` on the dashboards' rule file (relative to folder): promtool on PATH
    when image is None, else the image's, on the folder mounted read-only without a network."""
    return promtool_check_rules_argv(image, folder, (rule_file,))
