"""Plain data passed between the stages: exchanges in, scores, decisions out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

__all__ = ["Exchange", "Scores", "Action", "Rail", "Channel", "CHANNELS", "Decision"]

Rail = Literal["input", "output"]
#: Where a judged text reaches the model: the user's own turn, a tool's output, or data the app
#: hands over with the task (an e-mail, a retrieved document, a web page). Injection rules differ by it.
Channel = Literal["user", "tool_result", "document"]
CHANNELS: tuple[Channel, ...] = ("user", "tool_result", "document")

#: Category key (or ``"unsafe"``) -> probability in [0, 1].
Scores = Mapping[str, float]


@dataclass(frozen=True)
class Exchange:
    """What a scorer judges: a prompt alone (input rail) or a prompt with its response (output rail).

    ``context`` holds the conversation's earlier turns, oldest first, as
    ``(role, text)`` pairs; ``prompt`` is the last user turn.
    """

    prompt: str
    response: str | None = None
    context: tuple[tuple[str, str], ...] = ()


class Action(str, Enum):
    """What the guard does when a rule fires, from mildest to strictest."""

    ALLOW = "allow"
    LOG = "log"
    REDACT = "redact"  # pass the text on with what plugins find masked (e.g. beaverguard-pii)
    REWRITE = "rewrite"
    BLOCK = "block"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {Action.ALLOW: 0, Action.LOG: 1, Action.REDACT: 2, Action.REWRITE: 3, Action.BLOCK: 4}


@dataclass(frozen=True)
class Decision:
    """The guard's verdict on one rail of one request.

    ``text`` is what goes on: the prompt (maybe rewritten) on the input rail, the
    response (maybe replaced) on the output rail, or the blocked message.
    """

    rail: Rail
    action: Action
    categories: tuple[str, ...]
    scores: Scores
    text: str
    request_id: str
    latency_ms: float = 0.0
    error: str | None = None
    extra: Mapping[str, object] = field(default_factory=dict)
    #: The class name of the error behind ``error``: ``"ScorerOverloaded"``, ``"ScorerError"``,
    #: ``"TimeoutError"``, ...; None when scoring succeeded.
    error_type: str | None = None
    #: When admission control refused the check: its estimate of the seconds until the queue has
    #: room again (a server's Retry-After); None otherwise.
    retry_after_s: float | None = None
    #: Where the judged text came from (see :data:`Channel`).
    channel: Channel = "user"
    #: The shadow policy's decision on the same scores (``action``, ``categories``, ``policy``), never
    #: enforced; None without a shadow policy or when scoring failed.
    shadow: Mapping[str, object] | None = None
    #: The language most of the judged text is in (ISO 639-1); None when there was too little text.
    language: str | None = None
    #: True when most of the text is in a language the model does not read: the scores do not vouch for it.
    unverified: bool = False

    def summary(self) -> dict[str, object]:
        """The decision as ``beaverguard check`` prints it and ``POST /v1/guard/check`` answers it."""
        return {"rail": self.rail, "channel": self.channel, "action": self.action.value, "flagged": self.flagged,
                "categories": list(self.categories), "text": self.text, "error": self.error,
                "latency_ms": round(self.latency_ms, 1), "scores": {k: round(v, 4) for k, v in self.scores.items()},
                "language": self.language, "unverified": self.unverified}

    @property
    def blocked(self) -> bool:
        return self.action is Action.BLOCK

    @property
    def overloaded(self) -> bool:
        """True when admission control refused the check unscored (the policy's ``on_overload`` decided)."""
        return self.error_type == "ScorerOverloaded"

    @property
    def flagged(self) -> bool:
        """True when any rule fired with an action other than ``allow``."""
        return self.action is not Action.ALLOW
