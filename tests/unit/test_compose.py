"""Parsers over saved `docker compose` output (fixtures from compose v2.40) and the up plan."""

from dataclasses import replace
from pathlib import Path

from deploysuite.engines.stack import parse_config_hashes, parse_ps, plan_up

FIXTURES = Path(__file__).parent / "fixtures"
PS = (FIXTURES / "compose_ps.jsonl").read_text()
HASHES = parse_config_hashes((FIXTURES / "compose_config_hash.txt").read_text())


def test_parse_ps_reads_state_health_ports_and_labels():
    containers = parse_ps(PS)
    by = {c.service: c for c in containers}
    assert sorted(by) == ["postgres", "prometheus", "rabbitmq", "redis"]
    assert by["postgres"].state == "running" and by["postgres"].health == "healthy"
    assert by["postgres"].ok
    assert by["prometheus"].health == "unhealthy" and not by["prometheus"].ok
    assert by["prometheus"].ports == ("127.0.0.1:9090->9090",)
    assert by["redis"].ports == ()
    assert by["redis"].config_hash == HASHES["redis"]
    assert by["redis"].image_id.startswith("sha256:") and len(by["redis"].image_id) == 71


def test_parse_ps_accepts_array_form_and_empty_output():
    lines = PS.strip().splitlines()
    assert parse_ps("[" + ",".join(lines) + "]") == parse_ps(PS)
    assert parse_ps("") == [] and parse_ps("\n") == []


def test_parse_config_hashes():
    assert sorted(HASHES) == ["postgres", "prometheus", "rabbitmq", "redis"]
    assert all(len(h) == 64 for h in HASHES.values())


def current_state():
    containers = parse_ps(PS)
    images = {c.service: f"mysaaschat/{c.service}:bookworm" for c in containers}
    image_ids = {images[c.service]: c.image_id for c in containers}
    healthy = [replace(c, health="healthy") for c in containers]
    return healthy, images, image_ids


def test_plan_unchanged_stack_is_nothing_to_do():
    containers, images, image_ids = current_state()
    plan = plan_up(HASHES, containers, images, image_ids)
    assert plan.nothing_to_do
    assert plan.unchanged == ("postgres", "prometheus", "rabbitmq", "redis")


def test_plan_names_each_reason():
    containers, images, image_ids = current_state()
    wanted = {**HASHES, "redis": "0" * 64, "mailsink": "1" * 64}
    image_ids = {**image_ids, "mysaaschat/postgres:bookworm": "sha256:" + "f" * 64}
    containers = [
        replace(c, state="exited", exit_code=137) if c.service == "rabbitmq" else c
        for c in containers
    ]
    containers = [
        replace(c, health="unhealthy") if c.service == "prometheus" else c for c in containers
    ]
    plan = plan_up(wanted, containers, images, image_ids)
    assert plan.changes == {
        "mailsink": "not created",
        "postgres": "image changed",
        "prometheus": "unhealthy",
        "rabbitmq": "not running",
        "redis": "configuration changed",
    }


def test_plan_reports_orphans():
    containers, images, image_ids = current_state()
    wanted = {k: v for k, v in HASHES.items() if k != "redis"}
    plan = plan_up(wanted, containers, images, image_ids)
    assert plan.changes == {"redis": "orphan: no longer in the compose file"}


def test_plan_ignores_images_it_cannot_resolve():
    # an image the engine does not have yet is the missing-image check's business, not a change
    containers, images, _ = current_state()
    assert plan_up(HASHES, containers, images, {}).nothing_to_do


def test_port_url_scheme_follows_the_container_port():
    from deploysuite.engines.state import port_url

    assert port_url("127.0.0.1:8443->443") == "https://localhost:8443"
    assert port_url("0.0.0.0:8080->80") == "http://127.0.0.1:8080"


def test_migration_summary():
    from deploysuite.engines.compose import migration_summary

    applied = (
        '{"level":"info","message":"migrations complete","database":"auth",'
        '"applied":["0001_a.sql","0002_b.sql"],"schema_version":2}\n'
    )
    assert (
        migration_summary(applied)
        == "migrations complete (schema 2, applied 0001_a.sql, 0002_b.sql)"
    )
    nothing = '{"message":"schema up to date, nothing to apply","schema_version":2}'
    assert migration_summary(nothing) == "schema up to date, nothing to apply (schema 2)"
    assert migration_summary("") == "no output"
    assert migration_summary("plain text") == "plain text"


def test_runs_new_image_only_when_the_image_id_differs():
    from deploysuite.engines.state import StackState, runs_new_image

    containers, images, image_ids = current_state()
    state = StackState(HASHES, tuple(containers), images, image_ids)
    assert not runs_new_image(state, "postgres")
    moved = {**image_ids, images["postgres"]: "sha256:" + "0" * 64}
    assert runs_new_image(StackState(HASHES, tuple(containers), images, moved), "postgres")
    assert runs_new_image(state, "auth")  # no container yet
