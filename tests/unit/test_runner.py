import io
import sys
from pathlib import Path

import pytest

from deploysuite.core.errors import CommandFailed, SuiteError
from deploysuite.core.events import Events
from deploysuite.core.masking import Masker
from deploysuite.core.runner import Command, Pipeline, Runner

PY = sys.executable


def runner(dry_run: bool = False, secrets: tuple[str, ...] = ()) -> tuple[Runner, io.StringIO]:
    out = io.StringIO()
    events = Events(masker=Masker(secrets), out=out, err=io.StringIO())
    return Runner(events, Masker(secrets), dry_run=dry_run), out


def test_dry_run_prints_and_does_not_run_mutating_commands(tmp_path: Path):
    marker = tmp_path / "touched"
    r, out = runner(dry_run=True)
    result = r.run(Command(("touch", str(marker))))
    assert result.dry_run and not marker.exists()
    assert out.getvalue().strip() == f"[local] $ touch {marker}"


def test_dry_run_still_runs_read_only_commands():
    r, out = runner(dry_run=True)
    result = r.run(Command((PY, "-c", "print('read')"), mutates=False))
    assert result.stdout.strip() == "read" and not result.dry_run
    assert out.getvalue() == ""


def test_failure_is_typed_and_masked():
    r, _ = runner(secrets=("hunter2-secret",))
    with pytest.raises(CommandFailed) as info:
        r.run(
            Command(
                (
                    PY,
                    "-c",
                    "import sys; sys.stderr.write('bad hunter2-secret'); sys.exit(3)",
                    "hunter2-secret",
                )
            )
        )
    err = info.value
    assert err.returncode == 3
    assert "hunter2-secret" not in err.one_line() and "hunter2-secret" not in " ".join(err.argv)
    assert "exited 3: bad ******" in err.one_line()


def test_check_false_returns_the_exit_code():
    r, _ = runner()
    assert r.run(Command((PY, "-c", "raise SystemExit(7)")), check=False).returncode == 7


def test_missing_program_is_a_clear_error():
    r, _ = runner()
    with pytest.raises(SuiteError, match="`no-such-program-xyz` is not installed"):
        r.run(Command(("no-such-program-xyz",)))


def test_env_reaches_the_child_and_is_not_displayed():
    r, out = runner(dry_run=True)
    r.run(Command(("env",), env={"TOKEN": "value-xyz"}))
    assert "value-xyz" not in out.getvalue() and "1 variables" in out.getvalue()
    r, _ = runner()
    script = "import os; print(os.environ['TOKEN'])"
    result = r.run(Command((PY, "-c", script), env={"TOKEN": "value-xyz"}))
    assert result.stdout.strip() == "value-xyz"


def test_streaming_delivers_masked_lines():
    r, _ = runner(secrets=("topsecret",))
    lines: list[str] = []
    script = "print('one'); print('two topsecret')"
    result = r.run(Command((PY, "-c", script)), on_line=lines.append)
    assert lines == ["one", "two ******"] and result.ok


def test_pipeline_passes_data_through():
    r, _ = runner()
    result = r.run_pipeline(
        Pipeline(
            (
                Command((PY, "-c", "print('a'*10)")),
                Command((PY, "-c", "import sys; print(len(sys.stdin.read().strip()))")),
            )
        )
    )
    assert result.stdout.strip() == "10"


def test_pipeline_fails_when_an_early_stage_fails():
    # pipefail: the reader exits 0, but the writer died; the pipeline must fail on the writer.
    r, _ = runner()
    with pytest.raises(CommandFailed) as info:
        r.run_pipeline(
            Pipeline(
                (
                    Command((PY, "-c", "import sys; print('partial'); sys.exit(9)")),
                    Command((PY, "-c", "import sys; sys.stdin.read()")),
                )
            )
        )
    assert info.value.returncode == 9


def test_a_command_that_does_not_inherit_gets_no_secret_of_this_process(monkeypatch):
    """Wheels are built with inherit_env=False: a package's own build code never sees the
    deploy's secrets (in CI, the deploy step's environment holds them)."""
    monkeypatch.setenv("POSTGRES_PASSWORD", "pw-in-the-deploy-step")  # pragma: allowlist secret
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    runner = Runner(Events(out=io.StringIO(), err=io.StringIO()))
    code = "import os; print(sorted(os.environ))"
    plain = runner.run(Command((sys.executable, "-c", code))).stdout
    clean = runner.run(Command((sys.executable, "-c", code), env={"EXTRA": "1"},
                               inherit_env=False)).stdout  # fmt: skip
    assert "POSTGRES_PASSWORD" in plain
    assert "POSTGRES_PASSWORD" not in clean
    assert "'PATH'" in clean and "'PIP_INDEX_URL'" in clean and "'EXTRA'" in clean
