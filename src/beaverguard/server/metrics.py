"""Prometheus metrics: decisions by rail, category and action; latencies; queue depth; upstream errors.

Each app has its own registry, so two apps in one process (tests, a process
serving two ports) count apart. Label values are bounded: categories by alias,
endpoints by route (``other`` for any path the server does not serve).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from beaverguard._categories import category
from beaverguard._types import Decision

__all__ = ["Metrics", "HttpMetrics", "CONTENT_TYPE_LATEST"]

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _name(key: str) -> str:
    try:
        return category(key).alias
    except KeyError:  # a plugin's category
        return key


class Metrics:
    """The server's counters, histograms and gauges, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.decisions = Counter("beaverguard_decisions", "Guard decisions; a decision on several categories "
                                 "counts once for each ('none' when no category fired).",
                                 ["policy", "rail", "category", "action"], registry=r)
        self.decision_seconds = Histogram("beaverguard_decision_seconds", "Time a rail took to decide "
                                          "(a streamed response: the whole stream).", ["rail"],
                                          buckets=_SECONDS, registry=r)
        self.requests = Counter("beaverguard_http_requests", "HTTP requests answered, by endpoint and status.",
                                ["endpoint", "status"], registry=r)
        self.request_seconds = Histogram("beaverguard_http_request_seconds", "Time to answer a request, "
                                         "to its last byte.", ["endpoint"], buckets=_SECONDS, registry=r)
        self.upstream_errors = Counter("beaverguard_upstream_errors", "Upstream LLM failures, by kind "
                                       "(unreachable, timeout, status, invalid).", ["kind"], registry=r)
        self.upstream_seconds = Histogram("beaverguard_upstream_seconds", "Time the upstream took to answer "
                                          "(to its headers, for a stream).", buckets=_SECONDS, registry=r)
        self.overloaded = Counter("beaverguard_overloaded", "Requests refused with 429 because scoring was "
                                  "overloaded.", ["endpoint"], registry=r)
        self.unverified = Counter("beaverguard_unverified", "Decisions on text mostly in a language the model "
                                  "does not read, by rail and language.", ["policy", "rail", "language"], registry=r)
        self.shadow = Counter("beaverguard_shadow_decisions", "Decisions of the shadow policy against the enforced "
                              "ones, by rail, category and outcome (agree, or the enforced -> shadow actions).",
                              ["policy", "rail", "category", "outcome"], registry=r)
        self.queue_depth = Gauge("beaverguard_queue_depth", "Exchanges submitted for scoring and not yet "
                                 "scored, over every policy.", registry=r)

    def watch_queue(self, depth: Callable[[], float]) -> None:
        self.queue_depth.set_function(depth)

    def decision(self, policy: str, decision: Decision) -> None:
        for key in decision.categories or ("none",):
            self.decisions.labels(policy, decision.rail, _name(key), decision.action.value).inc()
        self.decision_seconds.labels(decision.rail).observe(decision.latency_ms / 1000)
        if decision.unverified:
            self.unverified.labels(policy, decision.rail, decision.language or "unknown").inc()
        if decision.shadow is not None:
            action = str(decision.shadow["action"])
            outcome = "agree" if action == decision.action.value else f"{decision.action.value}->{action}"
            for key in {*decision.categories, *decision.shadow["categories"]} or ("none",):
                self.shadow.labels(policy, decision.rail, _name(key), outcome).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class HttpMetrics:
    """ASGI middleware: count each request and time it to its last byte, by route."""

    def __init__(self, app: ASGIApp, metrics: Metrics, endpoints: Callable[[], set[str]]) -> None:
        self.app = app
        self.metrics = metrics
        self._endpoints = endpoints
        self._known: set[str] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._known is None:
            self._known = self._endpoints()
        path = scope.get("path", "")
        endpoint = path if path in self._known else "other"
        status = 500
        start = time.perf_counter()

        async def counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counted)
        finally:
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.request_seconds.labels(endpoint).observe(time.perf_counter() - start)
