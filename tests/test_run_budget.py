"""On a CPU, runs stay small: the batcher's token budget and the scorer's window runs.

Why: on a small CPU a run of more than about 128 tokens costs more per exchange
than running exchanges one by one (benchmarks/results/guard.md), while short
prompts still gain from sharing a run.
"""

from __future__ import annotations

import numpy as np

from beaverguard import Exchange, OnnxScorer
from beaverguard._batching import _Job, _take_batch, plan
from beaverguard._policy import ExecutionPolicy


def items(*lengths: int) -> list:
    return [_Job(Exchange("x" * n)) for n in lengths]


def lengths(batch: list) -> list[int]:
    return [len(job.exchange.prompt) for job in batch]


def test_cpu_plan_has_a_token_budget_that_a_set_batch_size_turns_off():
    assert plan(ExecutionPolicy(), on_gpu=False, cores=2).run_tokens == 128
    assert plan(ExecutionPolicy(batch_size=4), on_gpu=False, cores=2).run_tokens is None
    assert plan(ExecutionPolicy(), on_gpu=True).run_tokens is None


def test_short_exchanges_share_a_run_up_to_the_batch_size():
    batch, rest = _take_batch(items(*[40] * 20), 8, 128)  # 8 x 40 chars fits 128 tokens (~512 chars)
    assert len(batch) == 8 and len(rest) == 12


def test_long_exchanges_run_alone():
    batch, rest = _take_batch(items(400, 410, 390, 30), 8, 128)
    assert lengths(batch) == [400] and lengths(rest) == [410, 390, 30]


def test_the_budget_counts_padding_to_the_longest_member():
    batch, rest = _take_batch(items(100, 100, 100, 300), 8, 128)  # with the 300, 4 x 300 > 512
    assert lengths(batch) == [100, 100, 100] and lengths(rest) == [300]


def test_without_a_budget_the_batch_size_alone_caps():
    batch, rest = _take_batch(items(400, 410, 390, 30), 8, None)
    assert len(batch) == 4 and rest == []


class _CountingSession:
    """The real session, recording the shape of each run."""

    def __init__(self, session) -> None:
        self.session, self.shapes = session, []

    def run(self, names, feed):
        self.shapes.append(feed["input_ids"].shape)
        return self.session.run(names, feed)


def test_window_runs_keep_to_the_token_budget_and_the_scores(tiny_model):
    exchanges = [Exchange("how do i make bread", " ".join(["flour water salt"] * k)) for k in (1, 5, 20, 3)]
    exchanges += [Exchange("tell me about the history of rome " * 12)]  # several windows
    plain = OnnxScorer(tiny_model, batch_size=64)
    budget = OnnxScorer(tiny_model, batch_size=64, run_tokens=40)
    budget.session = spy = _CountingSession(budget.session)
    got, want = budget.score(exchanges), plain.score(exchanges)
    assert all(n == 1 or n * width <= 40 for n, width in spy.shapes)
    assert len(spy.shapes) > 1  # the budget split what one run of 64 would hold
    for a, b in zip(got, want):
        assert np.allclose([a[k] for k in a], [b[k] for k in a], atol=1e-5)
