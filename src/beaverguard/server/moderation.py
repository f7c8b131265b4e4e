"""``POST /v1/moderations``: OpenAI's moderation schema, answered by the input rail.

Each input is judged as a prompt under the policy of the caller's key (and
audited, one record per input). ``categories`` and ``category_scores`` hold
beaverguard's 14 categories by alias, and OpenAI's category names mapped from
them (:data:`OPENAI_CATEGORIES`), so code written against OpenAI's endpoint
keeps working with only its base URL changed. A category is true when its
score reached its threshold; ``flagged`` is true when the policy acts on the
input at all (any action but allow), as OpenAI's is when any category is.

**The mapping's rule.** An OpenAI category is reported where our categories
give evidence for all of what it names. Most name one thing one category of
ours covers (or several, any of which is evidence: ``illicit`` from
``drugs_weapons``, ``financial_crime`` or ``terrorism``): true when any of them
fired, scored by the highest. ``sexual/minors`` names two things at once,
sexual content and a minor, and we have no category for the pair: it is true
only when both ``child_abuse`` and ``sexual`` (``sexually_explicit,adult_content``)
fired, and scored by the lower of the two (:data:`ALL_OF`). ``child_abuse``
alone (neglect, violence against a child) is not sexual, and ``sexual`` alone
is adult content. OpenAI categories no category of ours says are always false.

**Beyond OpenAI's schema.** Prompt injection is no OpenAI category and gets none: each result's
``beaverguard`` field says whether the injection rule fired and its score (null for a model without
that output), with the input's language and whether the model could read it (``unverified``).

**No verdict is an error.** An input that could not be scored (admission
control refused it, scoring timed out or failed) makes the whole request an
error: 429 ``overloaded`` with Retry-After, or 503 ``no_verdict``, whatever the
policy's ``on_overload`` / ``on_error`` say (those decide what a chat
completion does unscored); never 200 with every category false.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from beaverguard._categories import CATEGORY_KEYS, INJECTION, UNSAFE, category, resolve
from beaverguard._types import Decision
from beaverguard.server.guards import ServerGuard, require_verdicts
from beaverguard.server.metrics import Metrics
from beaverguard.server.openai_schema import ModerationPart, ModerationRequest

__all__ = ["moderate", "OPENAI_CATEGORIES", "ALL_OF"]

#: OpenAI's moderation categories -> the beaverguard categories (aliases) that are evidence for it: any one
#: of them (true when any fired, the highest score), or all of them for those in :data:`ALL_OF`. An empty
#: tuple: no category of ours says it (always false, score 0); the parent category that covers it still
#: does (self-harm for self-harm/intent).
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
    "sexual/minors": ("child_abuse", "sexual"),
    "violence": ("violence",),
    "violence/graphic": (),
}
#: OpenAI categories that need every one of their categories: true only when all fired, scored by the lowest.
ALL_OF = frozenset({"sexual/minors"})


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


async def moderate(guard: ServerGuard, metrics: Metrics, body: ModerationRequest,
                   request_id: str | None = None) -> dict[str, Any]:
    raw = body.input
    listed = isinstance(raw, list) and not isinstance(raw[0], ModerationPart)
    inputs = list(raw) if listed else [raw]
    # every input is sized before any is scored: one too long for the timeout refuses the request (413)
    planned = [guard.plan_check("input", _text_input(i), param=f"input.{n}" if listed else "input")
               for n, i in enumerate(inputs)]
    decisions = await asyncio.gather(*(guard.checked(p, request_id=request_id) for p in planned))
    require_verdicts(guard, decisions, metrics, "/v1/moderations")
    return {"id": f"modr-{request_id or uuid.uuid4().hex}", "model": guard.model_name,
            "results": [result(d) for d in decisions]}


def result(decision: Decision) -> dict[str, Any]:
    """One moderation result from one input-rail decision (its categories: those that reached their thresholds)."""
    scores = {k: v for k, v in decision.scores.items() if k not in (UNSAFE, INJECTION)}
    fired = set(decision.categories)
    names = {key: _alias(key) for key in (*CATEGORY_KEYS, *(k for k in scores if k not in CATEGORY_KEYS))}
    flags = {names[k]: k in fired for k in names}
    values = {names[k]: float(scores.get(k, 0.0)) for k in names}
    for name, members in OPENAI_CATEGORIES.items():
        keys = [resolve(m) for m in members]
        member_scores = [float(scores.get(k, 0.0)) for k in keys]
        if name in ALL_OF:
            flags[name] = bool(keys) and all(k in fired for k in keys)
            values[name] = min(member_scores, default=0.0)
        else:
            flags[name] = any(k in fired for k in keys)
            values[name] = max(member_scores, default=0.0)
    injection = decision.scores.get(INJECTION)
    extra = {"injection": None if injection is None else INJECTION in fired,
             "injection_score": None if injection is None else float(injection),
             "language": decision.language, "unverified": decision.unverified}
    return {"flagged": decision.flagged, "categories": flags, "category_scores": values,
            "category_applied_input_types": {name: ["text"] for name in flags}, "beaverguard": extra}

