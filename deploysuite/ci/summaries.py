"""What the pipeline tells people: the deploy summary in Markdown for the job page, the
pipeline's outcome for the chat notification, private keys kept out of both."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any


def _md(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(_md(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(out)


def deploy_summary_markdown(doc: Mapping[str, Any] | None, source: str) -> str:
    """The step summary of a deploy or rollback from its `--json` result: outcome, release,
    changed services, smoke checks. A missing result says so instead of pretending."""
    if not doc:
        return (
            f"### Deploy: no result\n\n`{source}` holds no result: the step ended before it "
            "printed one (a configuration or connection error; see the step's log).\n"
        )
    action = str(doc.get("action") or "deploy")
    env = doc.get("env", "?")
    outcome = doc.get("outcome") or ("planned" if doc.get("dry_run") else "done")
    lines = [f"### {action.capitalize()} of `{env}`: {outcome}", ""]
    facts = [("release", doc.get("release")), ("previous", doc.get("previous"))]
    lines += [f"- {name}: `{value}`" for name, value in facts if value]
    if doc.get("dry_run"):
        lines.append("- dry run: nothing changed")
    changed = doc.get("changed") or {}
    if isinstance(changed, Mapping) and changed:
        lines += ["", markdown_table(
            [{"service": k, "change": v} for k, v in sorted(changed.items())],
            ["service", "change"],
        )]  # fmt: skip
    elif isinstance(changed, list) and changed:
        lines += ["", "changed: " + ", ".join(f"`{c}`" for c in changed)]
    else:
        lines += ["", "nothing changed"]
    smoke = doc.get("smoke") or []
    if smoke:
        failed = sum(1 for s in smoke if s.get("result") != "pass")
        lines += ["", f"smoke checks: {len(smoke) - failed} passed, {failed} failed", ""]
        lines.append(markdown_table(smoke, ["check", "result", "detail", "ms"]))
    return "\n".join(lines) + "\n"


def parse_json_document(text: str) -> dict[str, Any] | None:
    """The JSON object a task printed with --json (a --dry-run prints command lines before it,
    so the document is the first one that starts a line and parses to the end)."""
    text = text.strip()
    starts = [0] + [m.start() + 1 for m in re.finditer(r"\n\{", text)]
    for start in starts:
        try:
            doc = json.loads(text[start:])
        except json.JSONDecodeError:
            continue
        return doc if isinstance(doc, dict) else None
    return None


def job_results(needs: Mapping[str, Any]) -> dict[str, str]:
    """`${{ toJSON(needs) }}` -> job id -> result (success, failure, cancelled, skipped)."""
    return {job: str((v or {}).get("result", "unknown")) for job, v in sorted(needs.items())}


def pipeline_text(workflow: str, ref: str, run_url: str, results: Mapping[str, str]) -> str:
    """One Slack message for a finished pipeline: which jobs failed, and where to look."""
    failed = [job for job, result in results.items() if result == "failure"]
    cancelled = [job for job, result in results.items() if result == "cancelled"]
    if failed:
        text = f":x: {workflow} on {ref}: failed in {', '.join(failed)}"
    elif cancelled:
        text = f":warning: {workflow} on {ref}: cancelled ({', '.join(cancelled)})"
    else:
        text = f":white_check_mark: {workflow} on {ref}: passed"
    return text + (f"\n> {run_url}" if run_url else "")


PRIVATE_KEY_RE = re.compile(r"-----BEGIN ([A-Z ]*)PRIVATE KEY-----\n[A-Za-z0-9+/=\s:,-]+")


def private_key_text(text: str) -> str:
    """A private key from a CI secret, as ssh reads it: the armour intact, a final newline.
    Refuses anything else, so a mis-set secret fails here and not as an SSH error later."""
    body = text.replace("\r\n", "\n").strip()
    if not body.startswith("-----BEGIN ") or not PRIVATE_KEY_RE.match(body + "\n"):
        raise ValueError("the value is not a PEM/OpenSSH private key")
    if not re.search(r"-----END [A-Z ]*PRIVATE KEY-----$", body):
        raise ValueError("the private key has no END line (cut off?)")
    return body + "\n"
