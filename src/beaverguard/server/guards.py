"""The server's guards: one per policy, each a :class:`Guard` that reports its decisions.

Every decision the core makes, on any rail, streamed or not, failed or not,
goes through ``Guard._conclude``; :class:`ServerGuard` hooks in there once, to
count it (metrics) and to tell a streaming request how its stream ended. A
reload keeps the hook: it swaps the guard's state, not its class.

The server's checks go through :meth:`ServerGuard.checked`, which adds the
server's admission (``admission``: a check too large for ``timeout_s`` is a
413; room is kept for the output checks reserved by chat completions) in front
of the core's rails.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from beaverguard._guard import Guard, _Unavailable
from beaverguard._policy import Policy
from beaverguard._types import Action, Channel, Decision, Exchange, Rail, Scores
from beaverguard.server import admission
from beaverguard.server.errors import ApiError
from beaverguard.server.metrics import Metrics

__all__ = ["ServerGuard", "Planned", "load_guards", "refuse_if_overloaded", "require_verdicts", "too_busy",
           "no_verdict"]

#: An answer's length (characters) assumed when reserving its check, where the request sets no max_tokens.
ANSWER_CHARS = 2000


@dataclass(frozen=True)
class Planned:
    """A check the server is about to make: what the rail will score, and what it costs."""

    rail: Rail
    prompt: Any
    response: Any
    exchange: Exchange
    cost: float


class _Refused(str):
    """A refusal's ``error``, with its ``retry_after_s`` (what the core's own refusals carry to the decision)."""

    retry_after_s: float

    def __new__(cls, message: str, retry_after_s: float) -> _Refused:
        self = super().__new__(cls, message)
        self.retry_after_s = retry_after_s
        return self


class ServerGuard(Guard):
    """A guard that counts its decisions and lets a stream learn its own decision."""

    def __init__(self, policy: Policy | Path | None, *, name: str, metrics: Metrics, **kwargs: Any) -> None:
        self.name = name
        self.metrics = metrics
        #: request id -> the output decision of its stream, once made (None until then)
        self.streams: dict[str, Decision | None] = {}
        #: Cost tokens of the output checks reserved by chat completions whose upstream call is under way.
        self.reserved = 0.0
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

    # -- the server's admission, in front of the rails --------------------------------------------

    def plan_check(self, rail: Rail, prompt: Any, response: Any = None, *, param: str | None = None) -> Planned:
        """What a check will score and cost; 413 (``text_too_long``) where it could never fit ``timeout_s``."""
        exchange = self.exchange(rail, prompt, response)
        if not self.policy.rail(rail).enabled:
            return Planned(rail, prompt, response, exchange, 0.0)
        refused = admission.too_large(self, exchange, param)
        if refused is not None:
            raise refused
        return Planned(rail, prompt, response, exchange, admission.estimate(self, exchange).cost)

    def plan_answer(self, prompt: Any, response: Any) -> Planned:
        """An answer's output check: sized, never refused for its size (the answer is paid for: it is judged)."""
        exchange = self.exchange("output", prompt, response)
        cost = admission.estimate(self, exchange).cost if self.policy.output.enabled else 0.0
        return Planned("output", prompt, response, exchange, cost)

    def plan_exchange(self, exchange: Exchange, *, param: str | None = None) -> float:
        """The cost of a raw exchange to score (``/v1/guard/score``); 413 where it could never fit."""
        refused = admission.too_large(self, exchange, param)
        if refused is not None:
            raise refused
        return admission.estimate(self, exchange).cost

    def reservation(self, messages: Any, payload: Mapping[str, Any]) -> float:
        """The cost to reserve for the output checks of a chat completion's answers (0 with the rail off).

        Each answer is judged with its prompt; its length is guessed from the
        request's ``max_completion_tokens`` / ``max_tokens`` (``ANSWER_CHARS``
        where neither is set). Refused with 413 where the prompt alone makes the
        answer's check too large, before the upstream is called.
        """
        if not self.policy.output.enabled:
            return 0.0
        self.plan_check("output", messages, "", param="messages")
        limit = payload.get("max_completion_tokens") or payload.get("max_tokens")
        chars = ANSWER_CHARS if not isinstance(limit, int) or limit <= 0 else min(4 * limit, 4 * ANSWER_CHARS)
        exchange = self.exchange("output", messages, "")
        answer = Exchange(exchange.prompt, "x" * chars, exchange.context)
        n = payload.get("n") if isinstance(payload.get("n"), int) and payload.get("n") > 0 else 1
        return n * admission.estimate(self, answer).cost

    @contextmanager
    def reserving(self, cost: float) -> Iterator[None]:
        """Hold ``cost`` of output checks reserved (while the upstream answers)."""
        self.reserved += cost
        try:
            yield
        finally:
            self.reserved = max(0.0, self.reserved - cost)

    async def checked(self, planned: Planned, *, request_id: str | None = None, reserve: float = 0.0,
                      channel: Channel = "user") -> Decision:
        """One check through the server's admission, then the core's rail.

        Refused (audited, ``on_overload`` decides) where the checks ahead, what is
        reserved and ``reserve`` (this request's own answer, checked later) would
        keep it past ``timeout_s``.
        """
        retry = admission.refusal(self, planned.cost, reserve) if planned.cost else None
        if retry is not None:
            return self.refuse(planned, retry, request_id)
        if planned.rail == "input":
            return await self.check_input(planned.prompt, request_id=request_id, channel=channel)
        return await self.check_output(planned.prompt, planned.response, request_id=request_id)

    async def checked_answer(self, planned: Planned, *, request_id: str | None = None) -> Decision:
        """The output check of an answer the upstream sent: it waits for room rather than be refused.

        Its room was reserved when the request was admitted; where estimates
        erred, it waits for the queue ahead (polling, up to ``timeout_s`` in
        all) instead of refusing an answer that was paid for. Past that, the
        refusal stands and the policy's ``on_overload`` decides, as for a check
        that timed out: the answer is withheld (or passes on), never a 429.
        """
        deadline = time.monotonic() + self.policy.timeout_s
        while True:
            retry = admission.refusal(self, planned.cost, count_reserved=False) if planned.cost else None
            if retry is None or time.monotonic() >= deadline:
                break
            await asyncio.sleep(min(max(retry, 0.005), 0.1, max(0.0, deadline - time.monotonic())))
        while True:
            decision = await self.check_output(planned.prompt, planned.response, request_id=request_id)
            if not (decision.overloaded and decision.blocked) or time.monotonic() >= deadline:
                return decision  # judged; or refused under on_overload: allow, which lets it pass on unscored
            wait = decision.retry_after_s or 0.05
            await asyncio.sleep(min(max(wait, 0.005), 0.1, max(0.0, deadline - time.monotonic())))

    def refuse(self, planned: Planned, retry_after_s: float, request_id: str | None) -> Decision:
        """A check refused by the server's admission: decided and audited as the core decides its own refusals."""
        error = _Refused(f"ScorerOverloaded: scoring is overloaded: the checks queued ahead and the answers "
                         f"reserved would keep this one past its timeout of {self.policy.timeout_s}s",
                         round(retry_after_s, 3))
        e = planned.exchange
        return self._conclude(planned.rail, e.prompt, e.response, {}, error, time.perf_counter(), request_id)


def load_guards(policies: Mapping[str, Policy | Path | None], *, model: Path | None, metrics: Metrics,
                watch: bool, shadows: Mapping[str, Path] | None = None) -> dict[str, ServerGuard]:
    """One guard per named policy (with its shadow candidate, if named); a policy file is watched when ``watch``."""
    guards: dict[str, ServerGuard] = {}
    try:
        for name, policy in policies.items():
            if isinstance(policy, str):
                policy = Path(policy)
            guard = ServerGuard(policy, name=name, metrics=metrics, model=model, shadow=(shadows or {}).get(name))
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


def require_verdicts(guard: ServerGuard, decisions: Sequence[Decision], metrics: Metrics, endpoint: str) -> None:
    """Where a check reached no verdict, the answer is an error, whatever ``on_error`` / ``on_overload`` say.

    For the moderation and guard endpoints, which report verdicts: a refused
    check is 429 ``overloaded`` (retry after Retry-After), a check that timed
    out or failed is 503 ``no_verdict``. Never 200 with every category false.
    """
    for decision in decisions:
        if decision.overloaded:
            retry = decision.retry_after_s
            raise too_busy(guard.policy.timeout_s if retry is None else retry, metrics, endpoint)
    for decision in decisions:
        if decision.error is not None:
            raise no_verdict(guard, decision.error_type or "error")


def no_verdict(guard: ServerGuard, error_type: str) -> ApiError:
    """The 503 of a check that reached no verdict: scoring timed out or failed (``code: "no_verdict"``)."""
    why = (f"scoring took longer than the policy's timeout_s of {guard.policy.timeout_s:g} s"
           if error_type == "TimeoutError" else f"scoring failed ({error_type})")
    return ApiError(503, f"no verdict: {why}; nothing was judged, so nothing is flagged or cleared",
                    type="scorer_error", code="no_verdict")


def too_busy(retry_after_s: float, metrics: Metrics, endpoint: str) -> ApiError:
    """The 429 of a refused check (counted), with Retry-After in whole seconds, rounded up."""
    metrics.overloaded.labels(endpoint).inc()
    seconds = max(1, math.ceil(retry_after_s))
    return ApiError(429, f"the guard is overloaded; retry in {seconds} s", code="overloaded",
                    headers={"retry-after": str(seconds)})
