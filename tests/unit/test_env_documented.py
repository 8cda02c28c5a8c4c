"""`.env.example` documents exactly the variables that the suite and the services read."""

import re
from pathlib import Path

from deploysuite.config.layers import load_schema
from deploysuite.config.service_env import STORE_SECRETS

REPO = Path(__file__).resolve().parents[2]
NAME = r"([A-Z][A-Z0-9_]{2,})"
PYTHON_READS = re.compile(
    r"(?:environ\.get|getenv|environ\[|config\.get|config\.require|config\[|env(?:_[a-z]+)?)"
    r"\(?\s*[\"']" + NAME + r"[\"']"
)
COMPOSE_READS = re.compile(r"(?<!\$)\$\{" + NAME)


def suite_python_files() -> list[Path]:
    files = [REPO / "tasks.py", *REPO.glob("deploysuite/**/*.py"), *REPO.glob("tasks/**/*.py")]
    files += [p for p in REPO.glob("services/**/*.py") if "tests" not in p.parts]
    files += list(REPO.glob("bench/**/*.py"))
    return files


def variables_read() -> dict[str, set[str]]:
    """name -> the files that read it."""
    found: dict[str, set[str]] = {}
    for path in suite_python_files():
        for name in PYTHON_READS.findall(path.read_text(encoding="utf-8")):
            found.setdefault(name, set()).add(str(path.relative_to(REPO)))
    for path in REPO.glob("docker-compose*.yml"):
        for name in COMPOSE_READS.findall(path.read_text(encoding="utf-8")):
            found.setdefault(name, set()).add(path.name)
    # the stores' credentials, which the deploy hands them as files (a table, not a call)
    for names in STORE_SECRETS.values():
        for name in names.values():
            found.setdefault(name, set()).add("deploysuite/config/service_env.py")
    return found


def test_scanner_finds_the_reads_it_claims_to():
    # The scanner itself must work, or the two tests below prove nothing.
    sample = 'os.environ.get("A_ONE") config.require("B_TWO") env_int("C_THREE") x = "${D_FOUR:-1}"'
    assert PYTHON_READS.findall(sample) == ["A_ONE", "B_TWO", "C_THREE"]
    assert COMPOSE_READS.findall(sample + " $${NOT_ME}") == ["D_FOUR"]
    read = variables_read()
    assert "SUITE_ROOT" in read and "POSTGRES_IMAGE" in read


def test_every_variable_read_is_documented():
    documented = set(load_schema(REPO))
    missing = {
        name: sorted(files) for name, files in variables_read().items() if name not in documented
    }
    assert not missing, f"read but not documented in .env.example: {missing}"


def test_every_documented_variable_is_read():
    unread = sorted(set(load_schema(REPO)) - set(variables_read()))
    assert not unread, f"documented in .env.example but read nowhere: {unread}"


def test_environment_files_only_set_documented_variables():
    documented = set(load_schema(REPO))
    for path in REPO.glob("environments/*/config.env"):
        keys = {
            line.split("=", 1)[0]
            for line in path.read_text().splitlines()
            if "=" in line and not line.startswith("#")
        }
        assert keys <= documented, f"{path}: {sorted(keys - documented)}"
