"""Input validation helpers shared by the services."""

from __future__ import annotations

import re

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(rf"^[^@\s\"<>,;]{{1,64}}@{_LABEL}(?:\.{_LABEL})+$")


def normalize_email(value: object) -> str | None:
    """The address trimmed and lower-cased, or None when it is not a plausible address."""
    if not isinstance(value, str):
        return None
    email = value.strip().lower()
    if len(email) > 254 or not _EMAIL.match(email):
        return None
    return email
