"""Notifications to a Slack-compatible incoming webhook (NOTIFY_WEBHOOK_URL).

A notification that cannot be sent is a warning, never a failed deploy; the webhook URL is a
secret (it is the credential) and never appears in an error.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Protocol

from deploysuite.core.events import Events
from deploysuite.core.masking import Masker

TIMEOUT_SECONDS = 10


class Settings(Protocol):
    """What a notification reads of the config (the config layer sits above this one)."""

    def get(self, key: str) -> str | None: ...


ICONS = {"deployed": ":white_check_mark:", "unchanged": ":white_check_mark:",
         "rolled back to": ":leftwards_arrow_with_hook:", "rolled back": ":warning:",
         "failed": ":x:"}  # fmt: skip


def deploy_text(
    env: str,
    release: str,
    outcome: str,
    previous: str | None,
    detail: str,
    changed: Sequence[str],
) -> str:
    """One message, readable in a channel: what happened to which environment, and why."""
    icon = ICONS.get(outcome, ":grey_question:")
    if outcome == "deployed":
        text = f"{icon} {env}: release {release} deployed"
    elif outcome == "rolled back to":
        text = f"{icon} {env}: rolled back from {previous} to {release}"
    elif outcome == "rolled back":
        text = f"{icon} {env}: release {release} failed and was rolled back to {previous}"
    else:
        text = f"{icon} {env}: release {release} {outcome}"
    if changed:
        text += f" (changed: {', '.join(changed)})"
    if detail:
        text += f"\n> {detail}"
    return text


def payload(text: str) -> bytes:
    return json.dumps({"text": text}).encode()


def send(config: Settings, events: Events, masker: Masker, text: str) -> bool:
    url = config.get("NOTIFY_WEBHOOK_URL")
    if not url:
        return False
    request = urllib.request.Request(
        url, data=payload(masker(text)), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            ok = 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "code", None) or type(exc).__name__
        events.info(f"warning: the notification webhook failed ({reason}); the deploy is not")
        return False
    if not ok:
        events.info("warning: the notification webhook answered with an error status")
    return ok
