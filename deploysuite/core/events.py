"""One stream of events: progress lines, commands, the summary table, and --json for machines.

Human progress goes to stderr so that stdout carries only the result (a table, or JSON with
--json), which keeps `inv ... --json | jq` clean.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

from deploysuite.core.masking import Masker


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A plain-text table; every cell is str()-ed, columns padded to the widest cell."""
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    out = [line([c.upper() for c in columns]), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


class Events:
    def __init__(
        self,
        *,
        json_mode: bool = False,
        verbose: bool = False,
        masker: Masker | None = None,
        err: TextIO | None = None,
        out: TextIO | None = None,
    ) -> None:
        self.json_mode = json_mode
        self.verbose = verbose
        self.masker = masker or Masker()
        self._err = err
        self._out = out
        # Every step as it ended: where the time of a run went (--json: `phases`; with
        # --verbose a table after the summary).
        self.phases: list[dict[str, Any]] = []
        self._depth = 0

    @property
    def err(self) -> TextIO:
        return self._err or sys.stderr

    @property
    def out(self) -> TextIO:
        return self._out or sys.stdout

    def _say(self, text: str) -> None:
        print(self.masker(text), file=self.err, flush=True)

    def info(self, text: str) -> None:
        self._say(text)

    def warn(self, text: str) -> None:
        self._say(f"warning: {text}")

    def detail(self, text: str) -> None:
        if self.verbose:
            self._say(f"    {text}")

    def command(self, display: str, *, run: bool) -> None:
        """Commands that change something are always shown; --dry-run shows them instead of
        running them. Read-only queries are shown with --verbose."""
        if not run:
            print(self.masker(display), file=self.out, flush=True)
        elif self.verbose:
            self._say(display)

    def build_progress(self, name: str) -> Callable[[str], None]:
        """A `docker build` output handler: its `Step n/m` lines as progress, the rest with
        --verbose."""

        def on_line(line: str) -> None:
            if line.startswith("Step "):
                self.info(f"  [{name}] {line[:100]}")
            else:
                self.detail(f"[{name}] {line}")

        return on_line

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        started = time.monotonic()
        self._say(f"▸ {title}")
        phase: dict[str, Any] = {"phase": self.masker(title), "depth": self._depth}
        self.phases.append(phase)  # in the order steps began; nested ones after their parent
        self._depth += 1
        try:
            yield
        except BaseException:
            phase.update(seconds=round(time.monotonic() - started, 3), ok=False)
            self._say(f"✗ {title} ({time.monotonic() - started:.1f}s)")
            raise
        finally:
            self._depth -= 1
        phase.update(seconds=round(time.monotonic() - started, 3), ok=True)
        self._say(f"✓ {title} ({time.monotonic() - started:.1f}s)")

    def phase_rows(self) -> list[dict[str, str]]:
        return [
            {"phase": "  " * p["depth"] + p["phase"], "seconds": f"{p.get('seconds', 0):.1f}",
             "result": "ok" if p.get("ok") else "failed"}
            for p in self.phases
        ]  # fmt: skip

    def result(
        self,
        rows: Sequence[Mapping[str, Any]],
        columns: Sequence[str],
        *,
        title: str = "",
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """The closing summary: a table for people, one JSON document with --json."""
        if self.json_mode:
            doc: dict[str, Any] = {"rows": [dict(r) for r in rows]}
            if extra:
                doc.update(extra)
            doc.setdefault("phases", self.phases)
            print(self.masker(json.dumps(doc, indent=2, default=str)), file=self.out)
            return
        if title:
            print(self.masker(title), file=self.out, flush=True)
        if rows:
            print(self.masker(format_table(rows, columns)), file=self.out, flush=True)
        if self.verbose and self.phases:
            table = format_table(self.phase_rows(), ["phase", "seconds", "result"])
            print(self.masker("where the time went:\n" + table), file=self.out, flush=True)
