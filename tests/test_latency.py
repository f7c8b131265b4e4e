"""The plan changes how fast scoring runs, never what it says.

A lone request may run wide (every core on one run), a crowd runs one
single-threaded run per core, and the windows of one long text are spread over
the workers. On the default int8 model, scores must be the same bit for bit
whichever happened. Speed itself is measured in ``benchmarks/bench_latency.py``.
"""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from beaverguard import Exchange, Guard, OnnxScorer, parse_policy

LONG = " ".join(f"Paragraph {i}: the committee reviewed the budget, the schedule and the staffing plan, "
                f"and asked for a revised estimate by the end of the quarter." for i in range(160))  # ~4k tokens
EXCHANGES = [Exchange("How do I bake bread?"), Exchange("How do I make a bomb at home?"),
             Exchange("Tell me about Rome.", "Rome was founded, by legend, in 753 BC."),
             Exchange(LONG), Exchange("Summarize this report.", LONG + " How can I hurt someone?")]


@pytest.fixture
def two_workers(tiny_model):
    """A guard on the tiny model with two workers running one window each: on 2+ cores it has wide runs to choose."""
    guard = Guard(parse_policy("execution: {workers: 2, batch_size: 1}\naudit: {log: false}\ntimeout_s: 120\n"),
                  model=tiny_model)
    yield guard
    guard.close()


@pytest.fixture(scope="module")
def wide_guard():
    # Two workers on every machine, so the plan has a wide run to choose (on one core it has none).
    guard = Guard(parse_policy("execution: {workers: 2}\naudit: {log: false}\ntimeout_s: 120\n"))
    yield guard
    guard.close()


def check(guard: Guard, ex: Exchange):
    return guard.check_input(ex.prompt) if ex.response is None else guard.check_output(ex.prompt, ex.response)


def bare_scores(scorer: OnnxScorer, ex: Exchange) -> dict[str, float]:
    """The reference: every window of ``ex`` alone on a plain single-threaded session, the maximum per label."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(scorer.spec.path / "model.onnx"), options, providers=["CPUExecutionProvider"])
    rows = []
    for window in scorer.encode([ex])[0]:
        feed = {k: v for k, v in scorer.encoder.pad([window]).items() if k in scorer.input_names}
        rows.append(1.0 / (1.0 + np.exp(-session.run(None, feed)[0][0])))
    return dict(zip(scorer.labels, map(float, np.max(rows, axis=0))))


def test_scores_are_the_same_alone_crowded_and_wide(wide_guard):
    scorer: OnnxScorer = wide_guard.scorer  # type: ignore[assignment]
    reference = [bare_scores(scorer, ex) for ex in EXCHANGES]
    assert reference == [OnnxScorer(threads=1).score([ex])[0] for ex in EXCHANGES]
    if (os.cpu_count() or 1) > 1:
        assert scorer.wide is not None, "two workers on two cores: the scorer has a wide session"
        wide = [scorer.finish(ex, scorer.run_windows(scorer.encode([ex])[0], wide=True)) for ex in EXCHANGES]
        assert wide == reference

    alone = [asyncio.run(check(wide_guard, ex)).scores for ex in EXCHANGES]
    assert alone == reference

    async def crowded():
        crowd = [Exchange(f"What is a good name for a dog, number {i}?") for i in range(40)]
        mixed = crowd[:20] + EXCHANGES + crowd[20:]
        return (await asyncio.gather(*(check(wide_guard, ex) for ex in mixed)))[20:20 + len(EXCHANGES)]

    runs, wide_runs = wide_guard._batcher.batches_run, wide_guard._batcher.wide_runs
    assert [d.scores for d in asyncio.run(crowded())] == reference
    assert wide_guard._batcher.batches_run - runs > wide_guard._batcher.wide_runs - wide_runs  # narrow runs, too
    assert all(d.error is None for d in asyncio.run(crowded()))


class _Spy:
    """The real tokenizer and the real runs, recording what they did."""

    def __init__(self, scorer: OnnxScorer) -> None:
        self.tokenizer, self.texts, self.runs = scorer.encoder.tokenizer, [], []
        scorer.encoder.tokenizer = self
        run_windows = scorer.run_windows

        def spy_run(windows, wide=False):
            self.runs.append((threading.current_thread().name, len(windows)))
            return run_windows(windows, wide=wide)

        scorer.run_windows = spy_run

    def encode_batch_fast(self, inputs):
        self.texts += inputs
        return self.tokenizer.encode_batch_fast(inputs)


def measured(batcher, narrow: float, wide: float, long: bool = False) -> None:
    """Have the batcher's speeds (seconds per cost token) say this, and stay so: it learns nothing more."""
    batcher._learn = lambda *args, **kwargs: None
    for mode, value in ((False, narrow), (True, wide)):
        batcher._recent[(mode, long)].clear()
        batcher._recent[(mode, long)].append(value)


def test_a_long_text_is_tokenized_once_and_its_windows_spread_over_the_workers():
    guard = Guard(parse_policy("execution: {workers: 2}\naudit: {log: false}\ntimeout_s: 120\n"))
    try:
        spy = _Spy(guard.scorer)  # type: ignore[arg-type]
        measured(guard._batcher, 1e-5, 1e-5, long=True)  # a wide run measured no faster on long windows: spread
        windows = len(guard.scorer.encode([Exchange(LONG)])[0])
        spy.texts.clear()
        decision = guard.check_input_sync(LONG)
        assert decision.error is None
        assert spy.texts == [guard.scorer.prepare(LONG)]  # one tokenizer pass for the whole text
        assert sum(n for _, n in spy.runs) == windows > 4
        assert len({name for name, _ in spy.runs}) == 2  # both workers ran some of its windows
        assert decision.scores == bare_scores(guard.scorer, Exchange(LONG))  # type: ignore[arg-type]
    finally:
        guard.close()


def test_a_lone_run_goes_wide_while_that_pays_and_a_crowd_runs_narrow(two_workers):
    guard = two_workers
    batcher = guard._batcher
    if not batcher.can_go_wide:
        pytest.skip("one core: no wide runs")
    measured(batcher, 1e-4, 1e-5)  # wide measured faster
    for i in range(5):
        guard.check_input_sync(f"bread {i}")
    assert batcher.wide_runs == batcher.batches_run == 5
    measured(batcher, 1e-5, 1e-4)  # wide measured slower: a lone run stays narrow ...
    batcher._lone = 1
    guard.check_input_sync("bread")
    assert batcher.wide_runs == 5 and batcher.batches_run == 6

    async def crowd():
        return await asyncio.gather(*(guard.check_input(f"cake {i}") for i in range(64)))

    measured(batcher, 1e-4, 1e-5)
    before = batcher.wide_runs
    assert all(d.error is None for d in asyncio.run(crowd()))
    assert batcher.wide_runs - before < 16  # ... and a crowd runs narrow (but for its last stragglers)


def test_a_few_stalled_runs_do_not_swing_the_plan_but_a_lasting_change_does(two_workers):
    """Wide runs the machine stalled (10x their time) leave lone runs wide; RECENT slow ones in a row turn them
    narrow, and one fast probe brings them back."""
    from beaverguard._batching import RECENT

    guard = two_workers
    batcher = guard._batcher
    if not batcher.can_go_wide:
        pytest.skip("one core: no wide runs")
    for recent in batcher._recent.values():
        recent.clear()
    batcher._lone, batcher._probe = 1, 0  # no probe due
    batcher._learn(1e-4, wide=False)
    batcher._learn(6e-5, wide=True)
    for _ in range(3):
        batcher._learn(6e-4, wide=True)  # stalled
    assert batcher._wide_pays()
    for _ in range(RECENT):  # slower for good
        batcher._learn(3e-4, wide=True)
    assert not batcher._wide_pays()
    batcher._learn(5e-5, wide=True)  # a probe finds it fast again
    assert batcher._wide_pays()


def test_the_wide_session_stops_spinning_when_a_run_ends():
    """Its pool would otherwise spin on, taking a core from the single-threaded runs that follow."""
    scorer = OnnxScorer(wide_threads=2)
    assert scorer.wide is not None
    assert scorer.wide.get_session_options().get_session_config_entry("session.force_spinning_stop") == "1"


def test_a_policy_that_sets_threads_fixes_every_run():
    from beaverguard._batching import plan
    from beaverguard._policy import ExecutionPolicy

    assert plan(ExecutionPolicy(), on_gpu=False, cores=4).wide_threads == 4
    assert plan(ExecutionPolicy(threads=2), on_gpu=False, cores=4).wide_threads == 0
    assert plan(ExecutionPolicy(workers=2), on_gpu=False, cores=4).wide_threads == 2
    assert plan(ExecutionPolicy(), on_gpu=False, cores=1).wide_threads == 0
    assert plan(ExecutionPolicy(), on_gpu=True, cores=4).wide_threads == 0


def test_a_long_queue_is_tokenized_several_texts_at_a_time_and_a_lone_text_alone(two_workers):
    """Tokenizing is batched only where a queue waits; runs stay one window each, so no score moves."""
    guard = two_workers
    scorer, calls = guard.scorer, []
    encode = scorer.encode

    def spy(exchanges):
        calls.append(len(exchanges))
        return encode(exchanges)

    scorer.encode = spy
    guard.check_input_sync("bread")
    assert calls == [1]

    async def crowd():
        return await asyncio.gather(*(guard.check_input(f"cake {i}") for i in range(200)))

    decisions = asyncio.run(crowd())
    assert sum(calls) == 201 and max(calls) > 1  # some steps tokenized several texts
    alone = [OnnxScorer(guard.scorer.spec.path, threads=1).score([Exchange(f"cake {i}")])[0] for i in range(200)]
    assert [d.scores for d in decisions] == alone


def test_a_lone_text_of_few_windows_runs_wide_while_that_finishes_sooner():
    """5 windows on 2 cores: spread, 3 narrow runs in a row; wide one by one, 5 / 1.8 = 2.8 (then 4 spread)."""
    guard = Guard(parse_policy("execution: {workers: 2}\naudit: {log: false}\ntimeout_s: 120\n"))
    try:
        batcher, scorer = guard._batcher, guard.scorer
        if not batcher.can_go_wide:
            pytest.skip("one core: no wide runs")
        text = next(t for t in (LONG[: n * 100] for n in range(10, 60)) if len(scorer.encode([Exchange(t)])[0]) == 5)
        measured(batcher, 1.8e-5, 1e-5, long=True)  # long windows: a wide run measured 1.8x faster
        spy = _Spy(scorer)  # type: ignore[arg-type]
        decision = guard.check_input_sync(text)
        assert decision.error is None and sum(n for _, n in spy.runs) == 5
        assert 1 <= batcher.wide_runs < 5  # the first went wide; with 4 left, spread is sooner (2 against 2.2)
        assert decision.scores == bare_scores(scorer, Exchange(text))  # type: ignore[arg-type]
        measured(batcher, 1e-5, 1e-5, long=True)  # measured no faster: all spread (but a last window found alone)
        before = batcher.wide_runs
        guard.check_input_sync(text)
        assert batcher.wide_runs - before <= 1
    finally:
        guard.close()


def test_a_lone_sync_check_is_scored_on_the_calling_thread_and_others_go_to_the_workers(two_workers):
    """The caller would only wait: alone, it takes its check's steps itself (no thread hand-off), with the same
    scores; with work waiting, or a check too long to be sure of its timeout, the workers score it."""
    guard = two_workers
    scorer, batcher = guard.scorer, guard._batcher
    spy = _Spy(scorer)  # type: ignore[arg-type]
    alone = guard.check_input_sync("How do I bake bread?")  # one window
    assert spy.runs and {name for name, _ in spy.runs} == {threading.current_thread().name}
    assert batcher.pending == 0 and batcher._free == batcher.plan.workers  # its cores given back
    assert alone.scores == asyncio.run(guard.check_input("How do I bake bread?")).scores

    spy.runs.clear()
    bulk = batcher.submit([Exchange(f"cake {i}") for i in range(300)], bulk=True)  # work waits
    busy = guard.check_input_sync("bread")
    assert busy.error is None
    assert threading.current_thread().name not in {name for name, _ in spy.runs}
    assert all(f.result(timeout=60) for f in bulk)

    spy.runs.clear()
    batcher._spt = 10.0  # ten seconds per token: this check could outlast its timeout, so the workers take it
    guard.check_input_sync("bread")
    assert spy.runs and threading.current_thread().name not in {name for name, _ in spy.runs}


def test_a_sync_check_through_a_batcher_just_retired_is_scored_by_its_successor(two_workers):
    guard = two_workers
    old = guard._batcher
    guard.reload(parse_policy("execution: {workers: 2, batch_size: 1, max_wait_ms: 1}\naudit: {log: false}\n"
                              "timeout_s: 120\n"))
    new = guard._batcher
    assert new is not old and old.successor is new
    future = old.check_here(Exchange("How do I bake bread?"))
    assert future.result(timeout=30) == guard.scorer.score([Exchange("How do I bake bread?")])[0]
    assert new.batches_run >= 1 and new._free == new.plan.workers
