"""Admission at the door: refuse overload before a body is read, and keep room for answers on their way.

Three limits, each answered in OpenAI's error shape:

* **Requests in flight** (``max_in_flight`` per worker process): one more is
  refused with 429 (``Retry-After: 1``) before its body is read. It bounds the
  work a burst can start, whatever its size.
* **A saturated guard**: where the checks queued for the caller's policy, and
  the output checks reserved for answers on their way (below), already fill
  what can be scored within ``timeout_s``, a request to a scoring endpoint is
  refused with 429 before its body is read or parsed, so a burst is refused in
  milliseconds instead of after every body was parsed and validated. Not under
  ``on_overload: allow`` for chat completions (those pass on unscored, as the
  policy says).
* **A check too large for its timeout**: a text that could not be scored within
  ``timeout_s`` even with the machine to itself is refused with 413
  (``text_too_long``) naming the limit; retrying could never help, so it is not
  a 429.

**Reserving the output rail.** A chat completion reserves the cost of its
answer's check (its prompt and an estimated answer) when its input rail is
admitted, and holds it while the upstream works; every admission counts what
is reserved as work ahead. So the answer the upstream sends back finds room:
a request the upstream answered is always judged, never refused with 429 after
the LLM call was paid for.

The estimates are the guard's own batcher's (``Batcher.cost`` and ``Batcher.load``: its cost model and
its measured seconds per token); with no estimate yet (a remote
scorer, a scorer that is not run step by step) only the in-flight limit
applies here and the batcher's own admission control decides.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Receive, Scope, Send

from beaverguard._batching import HEADROOM, Load, _cost
from beaverguard._types import Exchange
from beaverguard.server.errors import ApiError

if TYPE_CHECKING:
    from beaverguard.server.guards import ServerGuard
    from beaverguard.server.metrics import Metrics

__all__ = ["Door", "Estimate", "estimate", "refusal", "too_large", "SCORING_PATHS"]

#: The endpoints that score, and so are refused at the door when their guard is saturated.
SCORING_PATHS = frozenset({"/v1/chat/completions", "/v1/moderations", "/v1/guard/check", "/v1/guard/score"})
#: What the smallest check costs (a few words), in the batcher's cost tokens: what the door needs room for.
_SMALLEST = _cost(8)


@dataclass(frozen=True)
class Estimate:
    """What scoring one exchange costs, in the batcher's cost tokens, and in how many windows."""

    cost: float
    windows: int


def _load(guard: ServerGuard) -> Load | None:
    """The batcher's load, where its estimates hold: a scorer run step by step (not a remote one)."""
    return guard._batcher.load() if guard._batcher.stepwise else None


def estimate(guard: ServerGuard, exchange: Exchange) -> Estimate:
    """The cost of scoring ``exchange``, as the batcher guesses it before tokenizing."""
    return Estimate(*guard._batcher.cost(exchange))


def refusal(guard: ServerGuard, cost: float, reserve: float = 0.0, *,
            count_reserved: bool = True) -> float | None:
    """Seconds until a check of ``cost`` (holding ``reserve`` more for later) would fit; None: it fits now.

    As the batcher's admission control, with the output checks reserved counted
    as work ahead (not with ``count_reserved=False``: an answer's own check, for which
    the room was kept, does not wait for the others'). An idle guard with
    nothing reserved admits anything.
    """
    load = _load(guard)
    if load is None:
        return None
    reserved = guard.reserved if count_reserved else 0.0
    if not reserved and load.idle:
        return None
    spt = load.seconds_per_token
    predicted = (load.ahead + reserved + reserve) * spt / load.workers + cost * spt
    budget = load.timeout_s * HEADROOM
    return predicted - budget if predicted > budget else None


def too_large(guard: ServerGuard, exchange: Exchange, param: str | None) -> ApiError | None:
    """A 413 for a check that could not be scored within ``timeout_s`` even on an idle guard at its fastest.

    Its windows spread over every worker: it takes at least its cost over the
    workers, and at least one window's. The limit is named in characters too,
    scaled from this text's (the cost of a window does not depend on the text).
    """
    load = _load(guard)
    if load is None:
        return None
    est = estimate(guard, exchange)
    seconds = max(est.cost / est.windows, est.cost / load.workers) * load.fastest
    if seconds <= load.timeout_s:
        return None
    chars = len(exchange.prompt) + len(exchange.response or "") + sum(len(t) for _, t in exchange.context)
    fits = float(f"{chars * load.timeout_s / seconds:.2g}")  # two significant digits: an estimate
    where = f"{param}: " if param else ""
    return ApiError(413, f"{where}this text is too long to be judged within the policy's timeout_s of "
                         f"{load.timeout_s:g} s on this server (about {seconds:.2g} s with the machine to itself; "
                         f"about {fits:,.0f} characters fit). Retrying cannot help: send less text, or raise timeout_s "
                         "(or cap execution.max_tokens) in the policy", code="text_too_long", param=param)


class Door:
    """ASGI middleware: the in-flight limit, and a saturated guard's 429, before the body is read.

    ``guard_for(scope)`` is the guard of the caller's key (None for a missing or
    wrong key: the request goes on to its 401).
    """

    def __init__(self, app: ASGIApp, *, max_in_flight: int, metrics: Metrics,
                 guard_for: Callable[[Scope], ServerGuard | None]) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.metrics = metrics
        self.guard_for = guard_for
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        refused = self._refusal(scope, path) if path in SCORING_PATHS else None
        if refused is not None:
            await refused.response()(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    def _refusal(self, scope: Scope, path: str) -> ApiError | None:
        if self.in_flight >= self.max_in_flight:
            return _busy(1.0, self.metrics, path, f"{self.in_flight} requests are in flight, the server's limit")
        guard = self.guard_for(scope)
        if guard is None:
            return None
        if path == "/v1/chat/completions" and (guard.policy.on_overload or guard.policy.on_error) == "allow":
            return None  # the policy lets an unscored chat pass on: it is not refused
        retry = refusal(guard, _SMALLEST)
        if retry is None:
            return None
        return _busy(retry, self.metrics, path, "the checks queued for this policy fill what can be scored "
                                                f"within its timeout_s of {guard.policy.timeout_s:g} s")


def _busy(retry_after_s: float, metrics: Metrics, endpoint: str, why: str) -> ApiError:
    """A 429 refused at the door (counted), with Retry-After in whole seconds, at least 1."""
    metrics.overloaded.labels(endpoint).inc()
    seconds = max(1, math.ceil(retry_after_s))
    return ApiError(429, f"the guard is overloaded, refused before reading the request ({why}); retry in "
                         f"{seconds} s", code="overloaded", headers={"retry-after": str(seconds)})

