"""Secret masking for every line the suite prints, logs or raises."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

MASK = "******"
# Values this short are too common as substrings ("1", "yes") to mask safely; the schema's checks
# refuse secrets that short anyway.
MIN_MASKED_LENGTH = 4


class Masker:
    """Replaces every known secret value with a fixed mask; longest first so no tail leaks."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted(
            {s for s in secrets if len(s) >= MIN_MASKED_LENGTH}, key=len, reverse=True
        )

    def add(self, *secrets: str) -> None:
        self._secrets = sorted(
            set(self._secrets) | {s for s in secrets if len(s) >= MIN_MASKED_LENGTH},
            key=len,
            reverse=True,
        )

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def argv(self, argv: Sequence[str]) -> list[str]:
        return [self(a) for a in argv]
