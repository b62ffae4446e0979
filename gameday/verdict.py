"""A verdict: what a check concluded, with the measured value in words.

Then-steps assert on `verdict.ok` and show `verdict.message`, so every failure says what was
measured, not only that something was wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gameday.secrets import redact


@dataclass(frozen=True)
class Verdict:
    check: str
    ok: bool
    message: str
    measured: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "message", redact(self.message))

    def __bool__(self) -> bool:
        return self.ok


def passed(check: str, message: str, **measured: Any) -> Verdict:
    return Verdict(check, True, message, measured)


def failed(check: str, message: str, **measured: Any) -> Verdict:
    return Verdict(check, False, message, measured)
