"""beaverguard-otel: OpenTelemetry metrics and a span for every guard decision.

It is an audit sink: each audit record becomes

* ``beaverguard.decisions`` (counter): one per fired category, with attributes
  ``beaverguard.rail``, ``beaverguard.action`` and ``beaverguard.category``; a
  decision with no fired category counts once under ``unsafe`` (the overall
  score fired), ``error`` (scoring failed, with ``beaverguard.error_type``:
  ``ScorerOverloaded`` for a check refused under overload, ``TimeoutError``, ...)
  or ``none`` (allowed);
* ``beaverguard.decision.duration`` (histogram, ms) with rail and action;
* a ``beaverguard.decision`` span covering the decision's latency.

Meter and tracer come from the global providers unless ``meter_provider`` or
``tracer_provider`` are given (as OpenTelemetry instrumentations do). Only what
is audited is measured: set ``audit.include_allowed: false`` and allowed
decisions are not counted.

    plugins: [{name: otel}]
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.trace import Status, StatusCode

__all__ = ["OtelPlugin"]

_SCOPE = "beaverguard"


class OtelPlugin:
    """Turns audit records into OpenTelemetry metrics and spans."""

    def __init__(self, meter_provider: metrics.MeterProvider | None = None,
                 tracer_provider: trace.TracerProvider | None = None) -> None:
        meter = metrics.get_meter(_SCOPE, meter_provider=meter_provider)
        self.decisions = meter.create_counter(
            "beaverguard.decisions", unit="{decision}", description="Guard decisions by rail, category and action.")
        self.duration = meter.create_histogram(
            "beaverguard.decision.duration", unit="ms", description="Time from text in to decision out.")
        self.tracer = trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)

    def sink(self, record: Mapping[str, Any]) -> None:
        """Count, time and trace one audit record."""
        attrs = {"beaverguard.rail": record["rail"], "beaverguard.action": record["action"]}
        counted = {**attrs, "beaverguard.error_type": record["error_type"]} if record.get("error_type") else attrs
        for cat in _categories(record):
            self.decisions.add(1, {**counted, "beaverguard.category": cat})
        self.duration.record(record["latency_ms"], attrs)
        end = time.time_ns()
        span = self.tracer.start_span("beaverguard.decision", start_time=end - int(record["latency_ms"] * 1e6),
                                      attributes={**attrs, "beaverguard.request_id": record["request_id"],
                                                  "beaverguard.categories": list(record["categories"])})
        if record.get("error"):
            span.set_status(Status(StatusCode.ERROR, record["error"]))
        span.end(end_time=end)


def _categories(record: Mapping[str, Any]) -> list[str]:
    if record["categories"]:
        return list(record["categories"])
    if record.get("error"):
        return ["error"]
    return ["none" if record["action"] == "allow" else "unsafe"]
