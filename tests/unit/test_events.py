"""The event stream's record of where a run's time went: every step a phase, in --json and in
the verbose summary."""

from __future__ import annotations

import io
import json

import pytest

from deploysuite.core.events import Events
from deploysuite.core.masking import Masker


def test_every_step_is_a_phase_with_its_time_nesting_and_result_in_json():
    out, err = io.StringIO(), io.StringIO()
    events = Events(json_mode=True, masker=Masker(["s3cr3t"]), out=out, err=err)
    with events.step("ship s3cr3t"), events.step("pull"):
        pass
    with pytest.raises(RuntimeError), events.step("roll out"):
        raise RuntimeError("boom")
    events.result([{"a": 1}], ["a"])
    phases = json.loads(out.getvalue())["phases"]
    assert [(p["phase"], p["depth"], p["ok"]) for p in phases] == [
        ("ship ******", 0, True), ("pull", 1, True), ("roll out", 0, False),
    ]  # fmt: skip
    assert all(isinstance(p["seconds"], float) and p["seconds"] >= 0 for p in phases)


def test_verbose_prints_where_the_time_went_after_the_summary():
    out = io.StringIO()
    events = Events(verbose=True, out=out, err=io.StringIO())
    with events.step("build"), events.step("auth"):
        pass
    events.result([{"a": 1}], ["a"], title="done:")
    text = out.getvalue()
    assert text.index("done:") < text.index("where the time went:")
    assert "\n  auth " in text and "build" in text and " ok" in text
    quiet = io.StringIO()
    plain = Events(out=quiet, err=io.StringIO())
    with plain.step("build"):
        pass
    plain.result([{"a": 1}], ["a"])
    assert "where the time went" not in quiet.getvalue()
