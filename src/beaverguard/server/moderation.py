"""``POST /v1/moderations``: OpenAI's moderation schema, answered by the input rail.

Each input is judged as a prompt under the policy of the caller's key (and
audited, one record per input). ``categories`` and ``category_scores`` hold
beaverguard's 14 categories by alias, and OpenAI's category names mapped from
them (:data:`OPENAI_CATEGORIES`), so code written against OpenAI's endpoint
keeps working with only its base URL changed. A category is true when its
score reached its threshold; ``flagged`` is true when the policy acts on the
input at all (any action but allow), as OpenAI's is when any category is.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from beaverguard._categories import CATEGORY_KEYS, UNSAFE, category, resolve
from beaverguard._types import Decision
from beaverguard.server.guards import ServerGuard, refuse_if_overloaded
from beaverguard.server.metrics import Metrics
from beaverguard.server.openai_schema import ModerationPart, ModerationRequest

__all__ = ["moderate", "OPENAI_CATEGORIES"]

#: OpenAI's moderation categories -> the beaverguard categories (aliases) whose highest score stands for
#: it. An empty tuple: no category of ours says it (always false, score 0); the parent category that
#: covers it still does (self-harm for self-harm/intent).
OPENAI_CATEGORIES: dict[str, tuple[str, ...]] = {
    "harassment": ("hate_speech",),
    "harassment/threatening": (),
    "hate": ("hate_speech", "discrimination"),
    "hate/threatening": (),
    "illicit": ("drugs_weapons", "financial_crime", "terrorism"),
    "illicit/violent": ("drugs_weapons", "terrorism"),
    "self-harm": ("self_harm",),
    "self-harm/intent": (),
    "self-harm/instructions": (),
    "sexual": ("sexual",),
    "sexual/minors": ("child_abuse",),
    "violence": ("violence",),
    "violence/graphic": (),
}


def _alias(key: str) -> str:
    try:
        return category(key).alias
    except KeyError:  # a plugin's category
        return key


def _text_input(value: str | list[ModerationPart]) -> Any:
    """What the input rail reads: a string, or a message whose content is the input's parts."""
    if isinstance(value, str):
        return value
    return {"role": "user", "content": [p.model_dump(exclude_unset=True) for p in value]}


async def moderate(guard: ServerGuard, metrics: Metrics, body: ModerationRequest) -> dict[str, Any]:
    raw = body.input
    inputs = [raw] if isinstance(raw, str) else [raw] if isinstance(raw[0], ModerationPart) else list(raw)
    decisions = await asyncio.gather(*(guard.check_input(_text_input(i)) for i in inputs))
    for decision in decisions:
        refuse_if_overloaded(guard, decision, metrics, "/v1/moderations")
    return {"id": f"modr-{uuid.uuid4().hex}", "model": guard.model_name,
            "results": [result(d) for d in decisions]}


def result(decision: Decision) -> dict[str, Any]:
    """One moderation result from one input-rail decision (its categories: those that reached their thresholds)."""
    scores = {k: v for k, v in decision.scores.items() if k != UNSAFE}
    fired = set(decision.categories)
    names = {key: _alias(key) for key in (*CATEGORY_KEYS, *(k for k in scores if k not in CATEGORY_KEYS))}
    flags = {names[k]: k in fired for k in names}
    values = {names[k]: float(scores.get(k, 0.0)) for k in names}
    for name, members in OPENAI_CATEGORIES.items():
        keys = [resolve(m) for m in members]
        flags[name] = any(k in fired for k in keys)
        values[name] = max((float(scores.get(k, 0.0)) for k in keys), default=0.0)
    return {"flagged": decision.flagged, "categories": flags, "category_scores": values,
            "category_applied_input_types": {name: ["text"] for name in flags}}

