"""What ``beaverguard score`` adds to each row: its scores, ``unsafe``, and ``flagged`` and ``categories`` under the
policy, and the ``language`` of its text with ``unverified`` (the model does not read it).

One function, so that the local engine and the Ray engine (``beaverguard.ray``)
cannot drift apart: the same row scored by either gives the same fields and values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from beaverguard._types import CHANNELS, Action, Channel, Exchange, Rail, Scores

__all__ = ["exchange_of", "channel_of", "scored_fields", "ROUND"]

#: Digits the scores are rounded to in output: what a file needs, and stable across runs and machines.
ROUND = 6


class _Judge(Protocol):
    policy: Any

    def judge(self, rail: Rail, scores: Scores, channel: Channel = "user") -> tuple[Action, tuple[str, ...]]: ...

    def read(self, rail: Rail, exchange: Exchange) -> Any: ...


def exchange_of(row: Mapping[str, Any]) -> Exchange:
    """The exchange a ``{prompt, response}`` row asks to score (no ``response``: the input rail)."""
    return Exchange(row["prompt"], row.get("response"))


def channel_of(row: Mapping[str, Any], where: str = "row") -> Channel:
    """A row's optional ``channel`` (``user`` when absent); an unknown one is an error naming the row."""
    channel = row.get("channel") or "user"
    if channel not in CHANNELS:
        raise ValueError(f"{where}: unknown channel {channel!r}; use one of {', '.join(CHANNELS)}")
    return channel


def scored_fields(guard: _Judge, exchange: Exchange, scores: Scores, channel: Channel = "user") -> dict[str, Any]:
    """``scores`` (every label but unsafe), ``unsafe``, ``flagged`` (the policy's action is not allow) and
    ``categories`` (what fired), the row decided as its ``channel`` is."""
    rail: Rail = "input" if exchange.response is None else "output"
    action, fired = guard.judge(rail, scores, channel)
    fields = {"scores": {k: round(v, ROUND) for k, v in scores.items() if k != "unsafe"},
              "unsafe": round(scores["unsafe"], ROUND),
              "flagged": action is not Action.ALLOW,
              "categories": list(fired)}
    reading = guard.read(rail, exchange)  # None where the policy turns identification off
    fields["language"] = reading.language if reading else None
    fields["unverified"] = bool(reading and reading.unverified)
    if fields["unverified"] and guard.policy.languages.action(rail) is not Action.ALLOW:
        fields["flagged"] = True
    return fields
