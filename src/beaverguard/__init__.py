"""beaverguard: a guardrail for chat applications, scored by a BeaverTails moderation model.

    from beaverguard import Guard
    guard = Guard()                                   # default policy, embedded model
    decision = await guard.check_input("How do I pick a lock?")
"""

from beaverguard._categories import CATEGORIES, CATEGORY_KEYS, UNSAFE, Category
from beaverguard._decorator import guarded
from beaverguard._exceptions import (BeaverguardError, GuardBlocked, ModelError, PolicyError, ScorerError,
                                     ScorerOverloaded)
from beaverguard._guard import Guard
from beaverguard._model import DEFAULT_MODEL, ModelSpec, OnnxScorer, Scorer, default_model_dir
from beaverguard._plugins import Plugin
from beaverguard._policy import Policy
from beaverguard._types import Action, Decision, Exchange
from beaverguard._yaml import load_policy, parse_policy

__all__ = [
    "Guard", "guarded", "Decision", "Action", "Exchange", "Policy", "load_policy", "parse_policy",
    "Scorer", "Plugin", "OnnxScorer", "ModelSpec", "default_model_dir", "DEFAULT_MODEL",
    "Category", "CATEGORIES", "CATEGORY_KEYS", "UNSAFE",
    "BeaverguardError", "PolicyError", "ModelError", "ScorerError", "ScorerOverloaded", "GuardBlocked",
]

__version__ = "0.1.0"
