"""Batching of concurrent requests: the one place that decides how scoring runs.

Callers from any thread or event loop submit exchanges to one waiting list;
worker threads take them in batches. A worker that frees up takes the oldest
waiting exchange plus the waiting ones closest to it in length (less padding).
Under no load a request is dispatched at once and pays no wait; under load,
batches form by themselves while the workers are busy.

The plan (workers, batch size, threads per run) follows the execution provider
and the core count: on a small CPU, one single-threaded run per core on small
runs is fastest; on a GPU, one run at a time on big batches. "Small" is counted
in tokens, not exchanges: on a CPU, a run of more than about 128 tokens costs
more per exchange than running them one by one (benchmarks/results/guard.md),
so short prompts are batched and typical prompt-response pairs run alone. A
model that is not batch-invariant (the default int8 model) runs every exchange
alone, so no request's scores depend on another's.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from beaverguard._exceptions import ScorerError
from beaverguard._model import Scorer, default_batch_size
from beaverguard._policy import ExecutionPolicy
from beaverguard._types import Exchange

__all__ = ["Plan", "plan", "Batcher"]


#: Rough characters per token, to size batches before they are tokenized.
CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class Plan:
    workers: int
    batch_size: int
    threads: int
    max_wait_s: float = 0.0
    #: Most tokens in one run (batch size x its longest member); None: only ``batch_size`` caps it.
    run_tokens: int | None = None


def plan(execution: ExecutionPolicy, on_gpu: bool, cores: int | None = None, batch_invariant: bool = True) -> Plan:
    """Choose how to run scoring; the policy's execution settings override each choice.

    A model that is not ``batch_invariant`` (int8 with dynamic activation
    quantization computes one scale per run) runs every exchange alone, so a
    request's scores never depend on what other requests were in flight.
    """
    cores = cores or os.cpu_count() or 1
    batch = default_batch_size(on_gpu, batch_invariant)
    if on_gpu:
        default = Plan(workers=1, batch_size=batch, threads=0)
    else:
        default = Plan(workers=cores, batch_size=batch, threads=1, run_tokens=128 if batch > 1 else None)
    return Plan(
        workers=execution.workers or default.workers,
        batch_size=execution.batch_size or default.batch_size,
        threads=execution.threads if execution.threads is not None else default.threads,
        max_wait_s=execution.max_wait_ms / 1000,
        run_tokens=None if execution.batch_size else default.run_tokens,  # a batch size set by hand wins
    )


_Item = tuple[Exchange, Future]


class Batcher:
    """Collect exchanges from concurrent callers into batches for one scorer.

    ``plan.workers`` threads pull from one waiting list: a thread that is free
    takes a batch at once, so a lone request goes straight to a worker (one
    hand-off there, one back), and under load the list fills while every worker
    is busy, which is where batches come from.
    """

    def __init__(self, scorer: Scorer, plan: Plan) -> None:
        self.scorer = scorer
        self.plan = plan
        self._cond = threading.Condition()
        self._waiting: list[_Item] = []
        self._workers: list[threading.Thread] = []
        self.batches_run = 0
        self.closed = False
        self.successor: Batcher | None = None  # set on reload: takes the submits that arrive after close
        self._pending = 0
        self._idle = threading.Condition()

    @property
    def pending(self) -> int:
        """Exchanges submitted and not yet scored, failed or cancelled."""
        return self._pending

    def submit(self, exchanges: Sequence[Exchange]) -> list[Future]:
        """Queue exchanges; each gets a future that resolves to its scores."""
        futures = []
        with self._cond:
            if self.closed:
                if self.successor is not None:  # a caller that fetched this batcher just before a reload
                    return self.successor.submit(exchanges)
                raise ScorerError("this batcher is closed (its guard was closed)")
            if not self._workers:
                self._workers = [threading.Thread(target=self._work, name=f"beaverguard-score-{i}", daemon=True)
                                 for i in range(self.plan.workers)]
                for worker in self._workers:
                    worker.start()
            for exchange in exchanges:
                fut: Future = Future()
                with self._idle:
                    self._pending += 1
                fut.add_done_callback(self._settled)
                self._waiting.append((exchange, fut))
                futures.append(fut)
            self._cond.notify(len(futures))
        return futures

    def _settled(self, _: Future) -> None:
        with self._idle:
            self._pending -= 1
            if not self._pending:
                self._idle.notify_all()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted is resolved; False if ``timeout`` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._pending, timeout)

    def score_sync(self, exchanges: Sequence[Exchange]) -> list[dict[str, float]]:
        """Score and wait (for files and evaluation); an exception frees the places of the rest."""
        futures = self.submit(exchanges)
        try:
            return [f.result() for f in futures]
        finally:
            for f in futures:
                f.cancel()  # no-op for finished ones; frees the place of the rest

    def close(self) -> None:
        """Score what is queued, then stop; later submits raise :class:`ScorerError`."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()
            workers = self._workers
        for worker in workers:
            if worker is not threading.current_thread():
                worker.join()

    def _next_batch(self) -> list[_Item] | None:
        """Wait for work and take a batch; None once closed and empty."""
        with self._cond:
            while True:
                while not self._waiting and not self.closed:
                    self._cond.wait()
                if not self._waiting:
                    return None
                if self.plan.max_wait_s and len(self._waiting) < self.plan.batch_size:
                    deadline = time.monotonic() + self.plan.max_wait_s  # wait a little for company
                    while len(self._waiting) < self.plan.batch_size and not self.closed:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0 or not self._waiting:
                            break
                        self._cond.wait(remaining)
                self._waiting = [it for it in self._waiting if not it[1].cancelled()]
                if self._waiting:
                    batch, self._waiting = _take_batch(self._waiting, self.plan.batch_size, self.plan.run_tokens)
                    return batch

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._run(batch)

    def _run(self, batch: list[_Item]) -> None:
        live = [(ex, f) for ex, f in batch if f.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            results = self.scorer.score([ex for ex, _ in live])
        except BaseException as exc:  # handed to each caller, whose policy decides
            for _, f in live:
                f.set_exception(exc)
            return
        for (_, f), res in zip(live, results):
            f.set_result(res)
        self.batches_run += 1


def _length(item: _Item) -> int:
    ex = item[0]
    return len(ex.prompt) + len(ex.response or "")


def _take_batch(waiting: list[_Item], size: int,
                run_tokens: int | None = None) -> tuple[list[_Item], list[_Item]]:
    """The oldest item plus up to ``size - 1`` waiting items closest to it in length.

    With ``run_tokens``, the batch stops growing before its size times its
    longest member (in estimated tokens) would pass that budget.
    """
    if len(waiting) <= size and run_tokens is None:
        return waiting, []
    anchor, rest = waiting[0], waiting[1:]
    target = width = _length(anchor)
    budget = None if run_tokens is None else run_tokens * CHARS_PER_TOKEN
    chosen: set[int] = set()
    for i in sorted(range(len(rest)), key=lambda i: abs(_length(rest[i]) - target)):
        grown = max(width, _length(rest[i]))
        if len(chosen) + 1 >= size or (budget is not None and (len(chosen) + 2) * grown > budget):
            break
        chosen.add(i)
        width = grown
    return [anchor] + [rest[i] for i in sorted(chosen)], [it for i, it in enumerate(rest) if i not in chosen]
