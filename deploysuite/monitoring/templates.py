"""The jinja2 environment of the monitoring templates (prometheus/rules/*.yml.j2 and
prometheus/alertmanager.yml.j2), and the value formats they share.

Prometheus's annotations and Alertmanager's messages are Go templates written `{{ ... }}`, so the
jinja2 side uses `[[ ... ]]`, `[% ... %]` and `[# ... #]`: both kinds stay readable in one file
and neither has to be escaped. PromQL writes ranges with single brackets (`[5m]`), so `[[` never
occurs in an expression.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import jinja2

from deploysuite.core.errors import ConfigError

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "prometheus"

# A Prometheus / Alertmanager duration: one or more <number><unit> parts, e.g. 90s, 1h30m.
DURATION_RE = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


def template_environment(templates_dir: Path) -> jinja2.Environment:
    """As nginx's: an unknown variable is an error, not an empty string; no HTML escaping."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        variable_start_string="[[",
        variable_end_string="]]",
        block_start_string="[%",
        block_end_string="%]",
        comment_start_string="[#",
        comment_end_string="#]",
    )
    env.filters["number"] = promql_number
    env.filters["yaml_string"] = yaml_string
    return env


def promql_number(value: float) -> str:
    """A threshold as a person would write it in PromQL: 1000, not 1000.0 or 1e+03."""
    if not math.isfinite(value):
        raise ValueError(f"{value} is not a finite number")
    if value == int(value):
        return str(int(value))
    return repr(value)


def yaml_string(value: str) -> str:
    """value as a double-quoted YAML scalar: a JSON string is one, with every character that
    YAML would read as syntax escaped."""
    return json.dumps(value)


def check_duration(value: str, what: str, fix: str) -> str:
    """value when it is a duration Prometheus and Alertmanager parse, and not zero."""
    if not DURATION_RE.match(value) or not any(c in "123456789" for c in value):
        raise ConfigError(f"{what}={value!r} is not a duration such as 30s, 5m or 4h", fix)
    return value
