from pathlib import Path

import pytest

from deploysuite.config.envfile import parse_env_text, parse_schema
from deploysuite.core.errors import ConfigError

SCHEMA = """\
# === Section ===

# The database password.
# Used by everything.
# secret: generated | required: all | default: none
DB_PASSWORD=

# A port.
# secret: no | required: staging, production | default: 5432
DB_PORT=5432

# An API key from a vendor.
# secret: external | required: - | default: none
VENDOR_KEY=
"""


def test_schema_reads_every_field():
    specs = parse_schema(SCHEMA)
    assert list(specs) == ["DB_PASSWORD", "DB_PORT", "VENDOR_KEY"]
    password = specs["DB_PASSWORD"]
    assert password.description == "The database password. Used by everything."
    assert password.secret == "generated" and password.is_secret
    assert password.required_in == "all" and password.required_for("local")
    assert password.default is None
    assert password.line == 6
    port = specs["DB_PORT"]
    assert port.required_in == frozenset({"staging", "production"})
    assert port.required_for("staging") and not port.required_for("local")
    assert port.default == "5432" and not port.is_secret
    assert specs["VENDOR_KEY"].secret == "external"
    assert specs["VENDOR_KEY"].required_in == frozenset()


def test_schema_without_meta_line_names_file_and_line():
    with pytest.raises(ConfigError, match=r"\.env\.example:2: UNDOCUMENTED has no"):
        parse_schema("# just a comment\nUNDOCUMENTED=1\n")


def test_schema_rejects_duplicates():
    meta = "# secret: no | required: - | default: none\n"
    text = f"{meta}A=\n\n{meta}A=\n"
    with pytest.raises(ConfigError, match="documented twice"):
        parse_schema(text)


def test_env_text_collects_malformed_lines_with_numbers():
    text = "GOOD=1\nthis is not an assignment\n# comment\nNOEQUALS\nlower=1\nQUOTED='a b'\n"
    parsed = parse_env_text(text, Path("x.env"))
    assert [(e.key, e.value, e.line) for e in parsed.entries] == [
        ("GOOD", "1", 1),
        ("QUOTED", "a b", 6),
    ]
    assert [(m.location, m.reason) for m in parsed.malformed] == [
        ("x.env:2", "not KEY=VALUE"),
        ("x.env:4", "no '=' after the key"),
        ("x.env:5", "keys are UPPER_SNAKE_CASE ([A-Z][A-Z0-9_]*)"),
    ]
