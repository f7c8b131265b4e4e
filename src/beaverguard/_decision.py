"""The policy decision: a pure function from scores to an action.

Kept free of I/O so the async guard, its sync twins and the tests all share it.
"""

from __future__ import annotations

from collections.abc import Mapping

from beaverguard._categories import INJECTION, UNSAFE
from beaverguard._policy import RailPolicy, Rule
from beaverguard._types import Action, Channel, Scores

__all__ = ["decide", "threshold"]


def threshold(rule: Rule, key: str, defaults: Mapping[str, float]) -> float:
    """Where ``key`` fires under ``rule``: the policy's threshold, else the model's calibrated default, else 0.5."""
    return rule.threshold if rule.threshold is not None else defaults.get(key, 0.5)


def decide(scores: Scores, rail: RailPolicy, defaults: Mapping[str, float],
           channel: Channel = "user") -> tuple[Action, tuple[str, ...]]:
    """Return the action and the categories that fired.

    A rule fires when its score is at or above its threshold (the policy's, else
    the model's calibrated default, else 0.5). The categories say *what* is wrong:
    when any fired, the strictest of their actions wins. The overall ``unsafe``
    score catches harm no category claims: its rule applies when it fires and no
    category did. So ``politics: {action: log}`` logs political content instead
    of the overall rule blocking it. ``injection`` is not harm: its rule depends on the
    ``channel`` the text came from, and its firing does not stand in for a harm category.
    """
    fired: list[str] = []
    strictest = Action.ALLOW
    unsafe_fired = harm_fired = False
    for key, score in scores.items():
        rule = rail.rule(key, channel)
        if score < threshold(rule, key, defaults):
            continue
        if key == UNSAFE:
            unsafe_fired = True
            continue
        fired.append(key)
        harm_fired = harm_fired or key != INJECTION
        if rule.action.severity > strictest.severity:
            strictest = rule.action
    if not harm_fired and unsafe_fired and rail.unsafe.action.severity > strictest.severity:
        strictest = rail.unsafe.action
    return strictest, tuple(fired)
