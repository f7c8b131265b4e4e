"""The server's guards: one per policy, each a :class:`Guard` that reports its decisions.

Every decision the core makes, on any rail, streamed or not, failed or not,
goes through ``Guard._conclude``; :class:`ServerGuard` hooks in there once, to
count it (metrics) and to tell a streaming request how its stream ended. A
reload keeps the hook: it swaps the guard's state, not its class.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from beaverguard._guard import Guard, _Unavailable
from beaverguard._policy import Policy
from beaverguard._types import Action, Decision, Exchange, Scores
from beaverguard.server.errors import ApiError
from beaverguard.server.metrics import Metrics

__all__ = ["ServerGuard", "load_guards", "refuse_if_overloaded", "too_busy"]


class ServerGuard(Guard):
    """A guard that counts its decisions and lets a stream learn its own decision."""

    def __init__(self, policy: Policy | Path | None, *, name: str, metrics: Metrics, **kwargs: Any) -> None:
        self.name = name
        self.metrics = metrics
        #: request id -> the output decision of its stream, once made (None until then)
        self.streams: dict[str, Decision | None] = {}
        super().__init__(policy, **kwargs)

    def _conclude(self, *args: Any, **kwargs: Any) -> Decision:
        decision = super()._conclude(*args, **kwargs)
        self.metrics.decision(self.name, decision)
        if decision.request_id in self.streams and "stream" in decision.extra:
            self.streams[decision.request_id] = decision
        return decision

    @property
    def ready(self) -> bool:
        """The model loaded (under ``on_error: allow`` a guard starts without one)."""
        return not isinstance(self.scorer, _Unavailable)

    @property
    def model_name(self) -> str:
        spec = getattr(self.scorer, "spec", None)
        return spec.name if spec is not None else type(self.scorer).__name__

    def model_info(self) -> dict[str, Any]:
        """What ``GET /v1/guard/model`` answers: the model, and where its labels fire under this policy."""
        spec = self.scorer.spec
        return {"name": spec.name, "labels": list(spec.labels), "max_length": spec.max_length,
                "batch_invariant": bool(getattr(self.scorer, "batch_invariant", spec.batch_invariant)),
                "thresholds": {rail: self.thresholds(rail) for rail in ("input", "output")},
                "default_thresholds": {rail: {k: float(v) for k, v in self._defaults[rail].items()}
                                       for rail in ("input", "output")}}

    async def score_raw(self, exchanges: Sequence[Exchange]) -> list[Scores]:
        """The model's scores, no decision, no audit (``POST /v1/guard/score``): the caller's policy decides.

        Same queue and timeout as the rails. Raises what scoring raised, or
        TimeoutError past the policy's ``timeout_s``; what is not scored by
        then is cancelled.
        """
        futures = self._batcher.submit(list(exchanges))
        try:
            return list(await asyncio.wait_for(asyncio.gather(*map(asyncio.wrap_future, futures)),
                                               self.policy.timeout_s))
        finally:
            for future in futures:
                future.cancel()

    def audit_failure(self, prompt: str, error: str, request_id: str, start: float,
                      extra: Mapping[str, object]) -> Decision:
        """Record a failure around the rails (the upstream's) as the core records a scorer's: by ``on_error``.

        The decision's action is what the policy says a failure gets (block or
        allow), and it is audited and counted like any other.
        """
        return self._conclude("output", prompt, None, {}, error, start, request_id, extra)

    @property
    def pending(self) -> int:
        return self._batcher.pending


def load_guards(policies: Mapping[str, Policy | Path | None], *, model: Path | None, metrics: Metrics,
                watch: bool) -> dict[str, ServerGuard]:
    """One guard per named policy; a policy file is watched for changes when ``watch``."""
    guards: dict[str, ServerGuard] = {}
    try:
        for name, policy in policies.items():
            if isinstance(policy, str):
                policy = Path(policy)
            guard = ServerGuard(policy, name=name, metrics=metrics, model=model)
            guards[name] = guard
            if watch and isinstance(policy, Path):
                guard.watch()
    except BaseException:
        for guard in guards.values():
            guard.close()
        raise
    return guards


def refuse_if_overloaded(guard: ServerGuard, decision: Decision, metrics: Metrics, endpoint: str) -> None:
    """429 with Retry-After where admission control refused a check and the policy blocks it (``on_overload``).

    Under ``on_overload: allow`` the decision allows, and the request passes on unscored (audited).
    Retry-After is the refusal's own estimate (``Decision.retry_after_s``: when the work queued ahead
    should leave room for it), else the policy's ``timeout_s``: admission control admits only what it
    expects to score within it, so by then the work ahead has been scored.
    """
    if decision.overloaded and decision.action is Action.BLOCK:
        retry = decision.retry_after_s
        raise too_busy(guard.policy.timeout_s if retry is None else retry, metrics, endpoint)


def too_busy(retry_after_s: float, metrics: Metrics, endpoint: str) -> ApiError:
    """The 429 of a refused check (counted), with Retry-After in whole seconds, rounded up."""
    metrics.overloaded.labels(endpoint).inc()
    seconds = max(1, math.ceil(retry_after_s))
    return ApiError(429, f"the guard is overloaded; retry in {seconds} s", code="overloaded",
                    headers={"retry-after": str(seconds)})
