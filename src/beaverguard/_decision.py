"""The policy decision: a pure function from scores to an action.

Kept free of I/O so the async guard, its sync twins and the tests all share it.
"""

from __future__ import annotations

from collections.abc import Mapping

from beaverguard._categories import UNSAFE
from beaverguard._policy import RailPolicy
from beaverguard._types import Action, Scores

__all__ = ["decide"]


def decide(scores: Scores, rail: RailPolicy, defaults: Mapping[str, float]) -> tuple[Action, tuple[str, ...]]:
    """Return the strictest action among the rules that fire, and the categories that fired.

    A rule fires when its score is at or above its threshold (the policy's, else
    the model's calibrated default, else 0.5). ``unsafe`` is the overall score:
    it can fire on its own and is not listed among the categories.
    """
    action = Action.ALLOW
    fired = []
    for key, score in scores.items():
        rule = rail.rule(key)
        threshold = rule.threshold if rule.threshold is not None else defaults.get(key, 0.5)
        if score >= threshold:
            if key != UNSAFE:
                fired.append(key)
            if rule.action.severity > action.severity:
                action = rule.action
    return action, tuple(fired)
