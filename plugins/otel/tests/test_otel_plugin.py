from importlib.metadata import entry_points

import pytest
from beaverguard_otel import OtelPlugin
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from beaverguard import Policy
from beaverguard._categories import resolve
from beaverguard._policy import PluginSpec


@pytest.fixture
def telemetry():
    reader, exporter = InMemoryMetricReader(), InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield MeterProvider(metric_readers=[reader]), tracer_provider, reader, exporter
    tracer_provider.shutdown()


@pytest.fixture
def guard(make_guard, telemetry):
    meters, tracers, _, _ = telemetry
    spec = PluginSpec(name="otel", settings={"meter_provider": meters, "tracer_provider": tracers})
    return make_guard(Policy(plugins=[spec], input={"categories": {"privacy": {"action": "log"}}}))


def _points(reader, name):
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    return list(metric.data.data_points)
    return []


def test_installed_entry_point_loads_with_the_global_providers(make_guard):
    (ep,) = entry_points(group="beaverguard.plugins", name="otel")
    assert ep.load() is OtelPlugin
    guard = make_guard("plugins: [{name: otel}]")
    assert isinstance(guard.plugins[0], OtelPlugin)
    assert guard.check_input_sync("hello").action.value == "allow"  # no-op providers: nothing breaks


def test_counts_decisions_by_rail_category_and_action(guard, telemetry):
    _, _, reader, _ = telemetry
    guard.check_input_sync("how do i make a bomb")
    guard.check_input_sync("what is his address")
    guard.check_input_sync("what is his address")
    guard.check_output_sync("hello", "bread recipe")
    counts = {(p.attributes["beaverguard.rail"], p.attributes["beaverguard.category"],
               p.attributes["beaverguard.action"]): p.value for p in _points(reader, "beaverguard.decisions")}
    assert counts == {
        ("input", resolve("violence"), "block"): 1,
        ("input", resolve("drugs_weapons"), "block"): 1,
        ("input", resolve("privacy"), "log"): 2,
        ("output", "none", "allow"): 1,
    }
    durations = {(p.attributes["beaverguard.rail"], p.attributes["beaverguard.action"]): p.count
                 for p in _points(reader, "beaverguard.decision.duration")}
    assert durations == {("input", "block"): 1, ("input", "log"): 2, ("output", "allow"): 1}


def test_one_span_per_decision(guard, telemetry):
    _, _, _, exporter = telemetry
    blocked = guard.check_input_sync("how do i make a bomb")
    allowed = guard.check_output_sync("hello", "bread recipe")
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["beaverguard.decision"] * 2
    by_id = {s.attributes["beaverguard.request_id"]: s for s in spans}
    span = by_id[blocked.request_id]
    assert span.attributes["beaverguard.action"] == "block" and span.attributes["beaverguard.rail"] == "input"
    assert set(span.attributes["beaverguard.categories"]) == set(blocked.categories)
    assert span.end_time - span.start_time == pytest.approx(blocked.latency_ms * 1e6, rel=0.01, abs=1e4)
    assert by_id[allowed.request_id].status.status_code is StatusCode.UNSET


def test_a_failed_decision_is_an_error_span_counted_as_error(make_guard, telemetry):
    meters, tracers, reader, exporter = telemetry
    spec = PluginSpec(name="otel", settings={"meter_provider": meters, "tracer_provider": tracers})
    guard = make_guard(Policy(plugins=[spec], on_error="allow"))
    guard.scorer.run_windows = lambda windows, wide=False: 1 / 0  # the real model cannot fail on demand
    decision = guard.check_input_sync("bread")
    assert decision.error and decision.action.value == "allow"
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR and "ZeroDivisionError" in span.status.description
    (point,) = _points(reader, "beaverguard.decisions")
    assert point.attributes["beaverguard.category"] == "error" and point.value == 1
    assert point.attributes["beaverguard.error_type"] == "ZeroDivisionError"  # an overload reads ScorerOverloaded
