"""Admission control: a check that could not be scored within its timeout is refused at once.

The scorer here is the real tiny model with a fixed pause added to each run,
so that the capacity of two workers is small and known (a burst of a few
hundred checks overloads it) and the machine's own noise is small beside it.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import threading
import time

import pytest

from beaverguard import Action, Exchange, OnnxScorer, ScorerOverloaded
from beaverguard._batching import Batcher, plan
from beaverguard._policy import ExecutionPolicy

MS_PER_TOKEN = 5  # each run of the model takes this much longer per token it holds


class SlowRuns(OnnxScorer):
    """The tiny model, each run slower in proportion to its tokens: a model two workers can overload."""

    def run_windows(self, windows, wide=False):
        time.sleep(MS_PER_TOKEN / 1000 * sum(len(ids) for ids, _ in windows))
        return super().run_windows(windows, wide=wide)


@pytest.fixture
def slow(tiny_model):
    return SlowRuns(tiny_model, batch_size=1)


def slow_guard(make_guard, slow, yaml: str = ""):
    return make_guard("execution: {workers: 2, batch_size: 1}\n" + yaml, scorer=slow)


def records(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]


async def burst(guard, n: int) -> list:
    return await asyncio.gather(*(guard.check_input(f"tell me about bread {i}") for i in range(n)))


async def test_a_burst_is_scored_in_time_or_refused_at_once_and_every_decision_is_audited(make_guard, slow,
                                                                                          tmp_path):
    guard = slow_guard(make_guard, slow, "timeout_s: 2\n")
    decisions = await burst(guard, 200)
    scored = [d for d in decisions if d.error is None]
    refused = [d for d in decisions if d.overloaded]
    assert scored and refused and len(scored) + len(refused) == 200  # no timeout, no other failure
    assert all(d.blocked and d.error_type == "ScorerOverloaded" for d in refused)  # fails closed by default
    assert all(d.retry_after_s is not None and d.retry_after_s >= 0 for d in refused)  # the refusal's estimate
    assert any(d.retry_after_s > 0 for d in refused) and all(d.retry_after_s is None for d in scored)
    assert max(d.latency_ms for d in refused) < min(d.latency_ms for d in scored)  # refused without waiting
    guard.close()
    recs = records(tmp_path)
    assert sorted(r["request_id"] for r in recs) == sorted(d.request_id for d in decisions)
    assert sum(r["error_type"] == "ScorerOverloaded" for r in recs) == len(refused)
    assert all(r["error_type"] is None for r in recs if r["request_id"] in {d.request_id for d in scored})


@pytest.mark.parametrize(("yaml", "action"), [
    ("", Action.BLOCK),                                    # on_overload unset: on_error (block)
    ("on_error: allow\n", Action.ALLOW),                   # on_overload unset: on_error (allow)
    ("on_overload: allow\n", Action.ALLOW),                # fail open on overload only
    ("on_error: allow\non_overload: block\n", Action.BLOCK),
])
async def test_on_overload_decides_a_refused_check_else_on_error(make_guard, slow, tmp_path, yaml, action):
    guard = slow_guard(make_guard, slow, "timeout_s: 0.3\n" + yaml)
    refused = [d for d in await burst(guard, 40) if d.overloaded]
    assert refused and all(d.action is action and not d.categories and d.scores == {} for d in refused)
    guard.close()
    recs = {r["request_id"]: r for r in records(tmp_path)}
    assert all(recs[d.request_id]["action"] == action.value for d in refused)


def test_the_refusal_is_the_future_itself_failed_with_a_retry_after(slow):
    batcher = Batcher(slow, plan(ExecutionPolicy(workers=2, batch_size=1), on_gpu=False, cores=2), timeout_s=0.5)
    try:
        futures = batcher.submit([Exchange(f"bread {i}") for i in range(60)])
        refused = [f for f in futures if f.done() and isinstance(f.exception(), ScorerOverloaded)]
        assert 0 < len(refused) < 60 and batcher.refused == len(refused)
        assert refused == [f for f in futures[-len(refused):]]  # the late arrivals, not the early ones
        exc = refused[0].exception()
        assert exc.retry_after_s > 0 and "timeout of 0.5s" in str(exc)
        again = pickle.loads(pickle.dumps(exc))  # travels to another process whole
        assert type(again) is ScorerOverloaded and again.retry_after_s == exc.retry_after_s
        admitted = [f for f in futures if f not in refused]
        assert all(f.result(timeout=10)["unsafe"] >= 0 for f in admitted)
    finally:
        batcher.close()


async def test_an_idle_guard_admits_whatever_one_text_costs(make_guard, slow):
    guard = slow_guard(make_guard, slow, "timeout_s: 0.1\n")
    d = await guard.check_input("hello nice day " * 100)  # tens of windows, more than 0.1 s of runs
    assert d.error_type == "TimeoutError" and not d.overloaded and "longer than 0.1s" in d.error
    assert d.blocked


async def test_a_streamed_check_refused_under_overload_follows_on_overload(make_guard, slow, tmp_path):
    guard = slow_guard(make_guard, slow, "timeout_s: 0.5\non_overload: allow\n"
                                         "streaming: {chunk_chars: 16, overlap_chars: 0}\n")

    @guard.protect
    async def handler(prompt: str):
        for i in range(8):
            yield f"some bread text {i} "

    # Two crowds, each sending a burst as soon as its last one is decided, keep the queue full for as long
    # as the stream lasts (one burst drains in about 0.2 s, and a slow CI machine takes longer than that).
    streaming = True

    async def keep_busy():
        while streaming:
            await burst(guard, 40)

    crowds = [asyncio.ensure_future(keep_busy()) for _ in range(2)]
    while guard._batcher.pending < 5:  # the crowd's checks are queued
        await asyncio.sleep(0.001)
    chunks = [chunk async for chunk in handler("tell me about bread")]
    streaming = False
    await asyncio.gather(*crowds)
    assert "".join(chunks) == "".join(f"some bread text {i} " for i in range(8))  # passed on, unscored
    guard.close()
    out = [r for r in records(tmp_path) if r["rail"] == "output"]
    assert len(out) == 1 and out[0]["error_type"] == "ScorerOverloaded" and out[0]["action"] == "allow"


def test_bulk_work_is_never_refused_and_checks_go_first(make_guard, slow):
    guard = slow_guard(make_guard, slow, "timeout_s: 1\n")
    bulk: list = []
    worker = threading.Thread(target=lambda: bulk.extend(guard.score_many([Exchange(f"cake {i}") for i in range(60)])))
    worker.start()
    while guard._batcher.pending < 60:
        time.sleep(0.001)
    checks = [guard.check_input_sync(f"bread {i}") for i in range(3)]  # 60 bulk runs ahead take 1.5 s
    assert all(d.error is None for d in checks)
    assert worker.is_alive()  # the bulk work was still going when the checks were done
    worker.join(timeout=30)
    assert len(bulk) == 60 and guard._batcher.refused == 0


@pytest.mark.parametrize("model", ["tiny", "default"])
def test_admission_prices_the_windows_the_encoder_will_make(tiny_model, model):
    """Given the token counts, the estimate is exact (a text just past a window costs two full ones)."""
    scorer = OnnxScorer(tiny_model if model == "tiny" else None)
    enc = scorer.encoder
    words = ("the committee reviewed the budget and asked for a revised estimate by friday " * 200).split()
    for i, (a, b) in enumerate([(n, m) for n in (1, 5, 20, 63, 64, 65, 300) for m in (0, 1, 10, 30, 31, 200, 700)]):
        prompt, response = " ".join(words[:a]), None if i % 7 == 0 else " ".join(words[a:a + b])
        windows = enc.windows([prompt], [response])[0]
        count = lambda t: len(enc.tokenizer.encode(t, add_special_tokens=False).ids)  # noqa: E731
        assert enc.estimate(count(prompt), None if response is None else count(response)) == (
            sum(len(ids) for ids, _ in windows), len(windows)), (a, b)


def test_a_machine_that_slows_after_admission_gets_refusals_before_the_runs_not_timeouts(tiny_model):
    """Admitted at one speed, run at a sixth of it: the texts that can no longer make it are refused unscored."""
    class Slowing(SlowRuns):
        factor = 1

        def run_windows(self, windows, wide=False):
            time.sleep((self.factor - 1) * MS_PER_TOKEN / 1000 * sum(len(ids) for ids, _ in windows))
            return super().run_windows(windows, wide=wide)

    scorer = Slowing(tiny_model, batch_size=1)
    batcher = Batcher(scorer, plan(ExecutionPolicy(workers=2, batch_size=1), on_gpu=False, cores=2), timeout_s=1.0)
    try:
        start = time.monotonic()
        futures = batcher.submit([Exchange(f"tell me about bread {i}") for i in range(200)])
        admitted = [f for f in futures if not f.done()]
        scorer.factor = 6  # the machine is now six times slower than admission measured it
        done_at = {}
        for f in admitted:
            f.add_done_callback(lambda f: done_at.setdefault(f, time.monotonic()))
        for f in admitted:
            f.exception(timeout=30)
        late = [f for f in admitted if isinstance(f.exception(), ScorerOverloaded)]
        assert late and batcher.late == len(late)  # refused at dispatch, unscored
        scored = [f for f in admitted if f.exception() is None]
        assert scored  # the first ones still made it
        assert max(done_at[f] for f in scored) - start < 1.0 + 0.5  # none scored long past its timeout
    finally:
        batcher.close()
