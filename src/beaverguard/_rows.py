"""What ``beaverguard score`` adds to each row: its scores, ``unsafe`` and ``flagged`` under the policy.

One function, so that the local engine and the Ray engine (``beaverguard.ray``)
cannot drift apart: the same row scored by either gives the same fields and values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from beaverguard._types import Action, Exchange, Rail, Scores

__all__ = ["exchange_of", "scored_fields", "ROUND"]

#: Digits the scores are rounded to in output: what a file needs, and stable across runs and machines.
ROUND = 6


class _Judge(Protocol):
    def judge(self, rail: Rail, scores: Scores) -> tuple[Action, tuple[str, ...]]: ...


def exchange_of(row: Mapping[str, Any]) -> Exchange:
    """The exchange a ``{prompt, response}`` row asks to score (no ``response``: the input rail)."""
    return Exchange(row["prompt"], row.get("response"))


def scored_fields(guard: _Judge, exchange: Exchange, scores: Scores) -> dict[str, Any]:
    """``scores`` (every label but unsafe), ``unsafe`` and ``flagged`` (the policy's action is not allow)."""
    action, _ = guard.judge("input" if exchange.response is None else "output", scores)
    return {"scores": {k: round(v, ROUND) for k, v in scores.items() if k != "unsafe"},
            "unsafe": round(scores["unsafe"], ROUND),
            "flagged": action is not Action.ALLOW}
