"""Every service of the compose file carries the common hardening (anchors merged as compose
merges them), unless it has a written exception below."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
COMMON = (
    "no-new-privileges",
    "cap_drop ALL",
    "read_only",
    "pids limit",
    "memory limit",
    "restart",
    "logging",
)

NOT_RUN_HERE = (
    "profile `unavailable`: no image of it can be obtained on the suite's machines, so a "
    "read-only root and dropped capabilities could not be tried; they are not added blind"
)
EXCEPTIONS: dict[str, dict[str, str]] = {
    name: {"cap_drop ALL": NOT_RUN_HERE, "read_only": NOT_RUN_HERE}
    for name in ("mongodb", "clickhouse", "kong", "jaeger", "grafana")
}


def services() -> dict[str, dict]:
    return yaml.safe_load((REPO / "docker-compose.prod.yml").read_text())["services"]


def missing(service: dict) -> list[str]:
    limits = ((service.get("deploy") or {}).get("resources") or {}).get("limits") or {}
    checks = {
        "memory limit": bool(limits.get("memory")),
        "no-new-privileges": "no-new-privileges:true" in (service.get("security_opt") or []),
        "cap_drop ALL": "ALL" in (service.get("cap_drop") or []),
        "read_only": service.get("read_only") is True,
        "pids limit": int(limits.get("pids") or 0) > 0,
        "restart": service.get("restart") == "unless-stopped",
        "logging": bool((service.get("logging") or {}).get("options", {}).get("max-size")),
    }
    return [name for name in COMMON if not checks[name]]


def test_every_service_is_hardened_or_says_why_not():
    gaps = {
        name: [m for m in missing(service) if m not in EXCEPTIONS.get(name, {})]
        for name, service in services().items()
    }
    assert {name: g for name, g in gaps.items() if g} == {}


def test_every_exception_is_still_needed():
    # an exception for something the service now has is stale: remove it
    for name, reasons in EXCEPTIONS.items():
        assert set(reasons) <= set(missing(services()[name])), name


def test_the_check_fails_on_a_service_without_hardening():
    assert missing({"image": "x"}) == list(COMMON)
