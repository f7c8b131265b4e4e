"""The errors beaverguard raises.

    BeaverguardError
    ├── PolicyError     an invalid policy file or object (names file, line and key)
    ├── ModelError      a missing, corrupt or mismatched model directory (says what to do)
    ├── ScorerError     scoring failed or timed out (handled by the policy's on_error)
    │   └── ScorerOverloaded  refused at once: it could not be scored within its timeout (on_overload)
    └── GuardBlocked    the policy blocked a request and asked to raise (carries the decision)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from beaverguard._types import Decision

__all__ = ["BeaverguardError", "PolicyError", "ModelError", "ScorerError", "ScorerOverloaded", "GuardBlocked"]


class BeaverguardError(Exception):
    """Base class of every beaverguard error."""


class PolicyError(BeaverguardError, ValueError):
    """The policy is invalid; the message lists each bad key with its file and line."""


class ModelError(BeaverguardError):
    """The model directory cannot be used; the message says which file and what to do."""


class ScorerError(BeaverguardError):
    """A scorer failed or ran past the policy's timeout."""


class ScorerOverloaded(ScorerError):
    """Admission control refused a check at once: with the work already queued it could not be
    scored within its timeout. ``retry_after_s`` is when the queue should have room for it again.

    A refusal is not a verdict on the text: the policy's ``on_overload`` (else ``on_error``)
    decides, and a server answers 429 with ``Retry-After``.
    """

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def __reduce__(self) -> tuple:  # pickles whole (to a process pool or a Ray worker and back)
        return type(self), (str(self), self.retry_after_s)


class GuardBlocked(BeaverguardError):
    """Raised when the policy blocks and ``raise_on_block`` is set; ``.decision`` says why."""

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        cats = ", ".join(decision.categories) or "unsafe"
        super().__init__(f"{decision.rail} blocked ({cats})")
