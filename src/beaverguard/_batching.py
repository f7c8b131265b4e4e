"""Batching of concurrent requests: the one place that decides how scoring runs.

Callers from any thread or event loop submit exchanges; a dispatcher thread
hands them to worker threads in batches. A worker that frees up takes the
oldest waiting exchange plus the waiting ones closest to it in length (less
padding). Under no load a request is dispatched at once and pays no wait; under
load, batches form by themselves while the workers are busy.

The plan (workers, batch size, threads per run) follows the execution provider
and the core count: on a small CPU, one single-threaded run per core on small
runs is fastest; on a GPU, one run at a time on big batches. "Small" is counted
in tokens, not exchanges: on a CPU, a run of more than about 128 tokens costs
more per exchange than running them one by one (benchmarks/results/guard.md),
so short prompts are batched and typical prompt-response pairs run alone.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from beaverguard._exceptions import ScorerError
from beaverguard._model import Scorer
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


def plan(execution: ExecutionPolicy, on_gpu: bool, cores: int | None = None) -> Plan:
    """Choose how to run scoring; the policy's execution settings override each choice."""
    cores = cores or os.cpu_count() or 1
    if on_gpu:
        default = Plan(workers=1, batch_size=64, threads=0)
    else:
        default = Plan(workers=cores, batch_size=8, threads=1, run_tokens=128)
    return Plan(
        workers=execution.workers or default.workers,
        batch_size=execution.batch_size or default.batch_size,
        threads=execution.threads if execution.threads is not None else default.threads,
        max_wait_s=execution.max_wait_ms / 1000,
        run_tokens=None if execution.batch_size else default.run_tokens,  # a batch size set by hand wins
    )


_Item = tuple[Exchange, Future]


class Batcher:
    """Collect exchanges from concurrent callers into batches for one scorer."""

    def __init__(self, scorer: Scorer, plan: Plan) -> None:
        self.scorer = scorer
        self.plan = plan
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._slots = threading.Semaphore(plan.workers)
        self._pool = ThreadPoolExecutor(plan.workers, thread_name_prefix="beaverguard-score")
        self._lock = threading.Lock()
        self._dispatcher: threading.Thread | None = None
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
        self._ensure_started()
        futures = []
        with self._lock:  # nothing is queued behind close()'s stop marker, where it would wait forever
            if self.closed:
                if self.successor is not None:  # a caller that fetched this batcher just before a reload
                    return self.successor.submit(exchanges)
                raise ScorerError("this batcher is closed (its guard was closed)")
            for exchange in exchanges:
                fut: Future = Future()
                with self._idle:
                    self._pending += 1
                fut.add_done_callback(self._settled)
                self._queue.put((exchange, fut))
                futures.append(fut)
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

    async def score(self, exchanges: Sequence[Exchange]) -> list[dict[str, float]]:
        """Score without blocking the event loop; cancelling the caller frees its place."""
        return list(await asyncio.gather(*(asyncio.wrap_future(f) for f in self.submit(exchanges))))

    def score_sync(self, exchanges: Sequence[Exchange], timeout: float | None = None) -> list[dict[str, float]]:
        futures = self.submit(exchanges)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            return [f.result(None if deadline is None else max(deadline - time.monotonic(), 0)) for f in futures]
        finally:
            for f in futures:
                f.cancel()  # no-op for finished ones; frees the place of the rest

    def close(self) -> None:
        """Score what is queued, then stop; later submits raise :class:`ScorerError`."""
        with self._lock:
            self.closed = True
            if self._dispatcher is not None:
                self._queue.put(None)
                self._dispatcher.join()
                self._dispatcher = None
        self._pool.shutdown(wait=True)

    def _ensure_started(self) -> None:
        if self._dispatcher is None and not self.closed:
            with self._lock:
                if self._dispatcher is None:
                    self._dispatcher = threading.Thread(target=self._dispatch, name="beaverguard-batcher",
                                                        daemon=True)
                    self._dispatcher.start()

    def _dispatch(self) -> None:
        waiting: list[_Item] = []
        while True:
            self._slots.acquire()
            if not waiting:
                item = self._queue.get()
                if item is None:
                    return
                waiting.append(item)
            deadline = time.monotonic() + self.plan.max_wait_s
            while True:  # take what else is queued, waiting up to max_wait for company
                try:
                    remaining = deadline - time.monotonic()
                    item = self._queue.get(timeout=remaining) if remaining > 0 and len(waiting) < self.plan.batch_size \
                        else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # stop after this batch
                    break
                waiting.append(item)
            waiting = [it for it in waiting if not it[1].cancelled()]
            if not waiting:
                self._slots.release()
                continue
            batch, waiting = _take_batch(waiting, self.plan.batch_size, self.plan.run_tokens)
            self._pool.submit(self._run, batch)

    def _run(self, batch: list[_Item]) -> None:
        try:
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
        finally:
            self._slots.release()


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
