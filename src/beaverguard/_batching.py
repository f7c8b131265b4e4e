"""Scheduling of scoring: the one place that decides how and when scoring runs.

Callers from any thread or event loop submit exchanges; worker threads take
them from one queue. Four rules, each from a measurement on a 2-core CPU
(``benchmarks/results/latency.md``, ``guard.md``):

* **One single-threaded run per core under load**: N single-threaded sessions
  beat one session of N threads on throughput. **A run that finds every other
  worker idle and nothing waiting uses all their cores** (the scorer's wide
  session), which makes a lone request about 1.5x faster. Both sessions give
  the same scores, bit for bit. The wide session's threads sleep between runs
  (spinning on, they took a core from the single-threaded runs after them), and
  the choice goes by the fastest of the last few runs of each kind (``RECENT``),
  so a few runs the machine stalled cannot swing it.
* **The windows of one long text are spread over the workers**: a worker
  tokenizes the text once and puts its windows back in the queue, where every
  free worker takes them; the text's scores are the maximum over its windows,
  whoever ran them. A text alone with few windows runs them wide instead while
  that measures sooner (5 windows on 2 cores: 3 narrow runs in a row against 5
  wide ones at 1.8x).
* **Under a long queue a worker tokenizes its share of it at once** (up to
  ``ENCODE_JOBS`` texts): less CPU per text than one by one; runs are unchanged.
* **Admission control**: the batcher keeps an estimate of the work ahead
  (tokens, and seconds per token measured on this machine as it runs). A check
  that could not be scored within its timeout is refused at once with
  :class:`ScorerOverloaded`, instead of waiting for its timeout; so what is
  admitted is scored in time. Checks go before bulk work (``score_many``).
* Short exchanges may share a run when the model is batch-invariant; on a CPU
  a run stays under about 128 tokens. A model that is not batch-invariant (the
  default int8 model) runs every window alone, so no request's scores depend on
  another's.

A scorer with ``encode``, ``run_windows`` and ``finish`` (:class:`OnnxScorer`)
is run in those steps; any other :class:`Scorer` gets whole exchanges through
``score``.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field

import numpy as np

from beaverguard._exceptions import ScorerError, ScorerOverloaded
from beaverguard._model import Scorer, default_batch_size
from beaverguard._policy import ExecutionPolicy
from beaverguard._types import Exchange

__all__ = ["Plan", "plan", "Batcher", "Load", "close_all"]

#: Rough characters per token, to size work before it is tokenized.
CHARS_PER_TOKEN = 4
#: The cost of one run of a window of L tokens is taken as L + RUN_TOKENS + L**2 / ATTENTION_TOKENS
#: times a measured number of seconds: a fixed part, and attention growing with the square of the
#: length. Fitted to the default model's runs of 16 to 256 tokens (benchmarks/results/latency.md).
RUN_TOKENS = 17
ATTENTION_TOKENS = 420
#: Share of its timeout that a check may be expected to take and still be admitted. The rest is for a machine
#: that slows down after admission (on a shared 2-core machine, by 30% in the middle of a burst, at 0.8: 18 of
#: 2,000 checks timed out).
HEADROOM = 0.7
#: Weight of the newest measurement in the running estimate of seconds per token (admission control's).
EWMA = 0.1
#: Runs of each kind whose fastest measurement decides whether a lone run goes wide. Another job or the
#: hypervisor only ever slows a run down, so the best of the last few is what the plan can count on: a few
#: stalled wide runs (10x their time, on this VM) leave lone runs wide, eight slow ones in a row do not.
RECENT = 8
#: Most that one measurement counts for, in times the estimate it updates (see _blend).
OUTLIER = 1.5
#: A lone run goes wide while that measures faster; every this many lone runs it is tried again anyway.
WIDE_PROBE = 50
#: Windows this long or longer have their own estimates of how much faster a wide run is (more than short ones).
LONG_WINDOW = 128
#: Most jobs tokenized in one step (when a long queue waits: each worker takes its share, up to this).
ENCODE_JOBS = 8
_CALIBRATION = ("How long should I bake a loaf of sourdough bread, and at what temperature? "
                "I have a cast iron pot and a gas oven that runs a little hot. ") * 3
#: A remote scorer's requests in flight at once, and most exchanges in one request (the server takes 256).
REMOTE_IN_FLIGHT = 8
REMOTE_BATCH = 64
_CHECK, _BULK = 0, 1  # lanes: checks (with a deadline) before bulk work

_live: weakref.WeakSet[Batcher] = weakref.WeakSet()


@dataclass(frozen=True)
class Plan:
    workers: int
    batch_size: int
    threads: int
    max_wait_s: float = 0.0
    #: Most tokens in one run (batch size x its longest member); None: only ``batch_size`` caps it.
    run_tokens: int | None = None
    #: Intra-op threads of a run that has the machine to itself; 0: every run uses ``threads``.
    wide_threads: int = 0


def plan(execution: ExecutionPolicy, on_gpu: bool, cores: int | None = None, batch_invariant: bool = True,
         remote: bool = False) -> Plan:
    """Choose how to run scoring; the policy's execution settings override each choice.

    A model that is not ``batch_invariant`` (int8 with dynamic activation
    quantization computes one scale per run) runs every exchange alone, so a
    request's scores never depend on what other requests were in flight.
    ``threads`` set in the policy fixes the threads of every run (no wide runs).
    A ``remote`` scorer (``RemoteScorer``) waits on the network, not on a core:
    REMOTE_IN_FLIGHT requests at once, and what queues meanwhile goes in the
    next request, up to REMOTE_BATCH exchanges (batching on the wire).
    """
    cores = cores or os.cpu_count() or 1
    batch = default_batch_size(on_gpu, batch_invariant)
    if remote:
        default = Plan(workers=REMOTE_IN_FLIGHT, batch_size=REMOTE_BATCH, threads=0)
    elif on_gpu:
        default = Plan(workers=1, batch_size=batch, threads=0)
    else:
        default = Plan(workers=cores, batch_size=batch, threads=1, run_tokens=128 if batch > 1 else None)
    workers = execution.workers or default.workers
    narrow = on_gpu or remote or execution.threads is not None or min(workers, cores) <= 1
    wide = 0 if narrow else min(workers, cores)
    return Plan(
        workers=workers,
        batch_size=execution.batch_size or default.batch_size,
        threads=execution.threads if execution.threads is not None else default.threads,
        max_wait_s=execution.max_wait_ms / 1000,
        run_tokens=None if execution.batch_size else default.run_tokens,  # a batch size set by hand wins
        wide_threads=wide,
    )


class _Job:
    """One exchange on its way through the batcher: queued, tokenized, its windows run, resolved."""

    __slots__ = ("exchange", "future", "lane", "deadline", "arrived", "tokens", "cost", "rows", "left")

    def __init__(self, exchange: Exchange, lane: int = _CHECK, deadline: float | None = None,
                 guess: tuple[float, float] | None = None) -> None:
        self.exchange, self.lane, self.deadline = exchange, lane, deadline
        self.future: Future = Future()
        self.arrived = time.monotonic()
        if guess is None:  # one window, from its characters
            tokens = (len(exchange.prompt) + len(exchange.response or "")) / CHARS_PER_TOKEN
            guess = tokens, _cost(tokens)
        self.tokens, self.cost = guess  # until it is tokenized, guessed from its length (Batcher._guess)
        self.rows: list = []
        self.left = 0  # windows not yet scored


class _Window:
    """One window of a tokenized job, for any worker to run."""

    __slots__ = ("job", "index", "window", "tokens", "cost")

    def __init__(self, job: _Job, index: int, window: tuple) -> None:
        self.job, self.index, self.window = job, index, window
        self.tokens = len(window[0])
        self.cost = _cost(self.tokens)

    @property
    def future(self) -> Future:
        return self.job.future

    @property
    def lane(self) -> int:
        return self.job.lane


def _cost(tokens: float) -> float:
    """What a run of one window of ``tokens`` costs, in tokens' worth of time (see RUN_TOKENS)."""
    return tokens + RUN_TOKENS + tokens * tokens / ATTENTION_TOKENS


@dataclass(eq=False)
class _Step:
    """What one worker does next, with the cores it holds meanwhile."""

    kind: str  # "encode" (tokenize jobs), "run" (windows), "score" (whole jobs, any Scorer)
    items: list
    cores: int = 1
    cost: float = 0.0
    late: list = field(default_factory=list)  # jobs found past saving at dispatch: refused


@dataclass(frozen=True)
class Load:
    """A batcher's load and speed at one moment, as its admission control sees them (estimates).

    What a server needs to refuse work before reading it: ``ahead`` cost tokens of
    checks queued and running, at ``seconds_per_token`` on one core (``fastest``: the
    best recent run), spread over ``workers``, each check within ``timeout_s``.
    """

    seconds_per_token: float
    fastest: float
    workers: int
    timeout_s: float
    ahead: float
    idle: bool


class Batcher:
    """Schedule the scoring of exchanges from concurrent callers on one scorer.

    ``plan.workers`` threads take steps from one queue; each step holds a core
    (a wide run holds all of them). A lone request goes straight to a free
    worker (one hand-off there, one back); under load the queue fills while
    every worker is busy, which is where batches come from. ``timeout_s`` is
    the checks' timeout, which admission control keeps them within.
    """

    def __init__(self, scorer: Scorer, plan: Plan, timeout_s: float | None = None) -> None:
        self.scorer = scorer
        self.plan = plan
        self.timeout_s = timeout_s
        self.stepwise = all(callable(getattr(scorer, m, None)) for m in ("encode", "run_windows", "finish"))
        self.can_go_wide = self.stepwise and plan.wide_threads > 1 and getattr(scorer, "wide", None) is not None
        self._estimate = getattr(scorer, "estimate", None) if callable(getattr(scorer, "estimate", None)) else None
        self._cond = threading.Condition()
        self._waiting: tuple[deque[_Job], deque[_Job]] = (deque(), deque())    # per lane, oldest first
        self._ready: tuple[deque[_Window], deque[_Window]] = (deque(), deque())  # tokenized, not yet run
        self._queued = [0.0, 0.0]  # estimated cost (tokens) of what waits, per lane
        self._running = 0.0        # ... and of the steps in progress
        self._free = plan.workers  # cores not held by a step
        self._workers: list[threading.Thread] = []
        self._spt: float | None = None        # seconds per cost token of a single-threaded run (running estimate)
        # seconds per cost token of recent runs, by (wide, of a window of LONG_WINDOW tokens or more)
        self._recent: dict[tuple[bool, bool], deque[float]] = {
            (wide, long): deque(maxlen=RECENT) for wide in (False, True) for long in (False, True)}
        self._ratio = 1.0                     # tokens as tokenized / tokens estimated from characters
        self._lone = 0                        # lone runs so far (wide or not), for the wide probe
        self._probe = 0                       # wide runs still to go in a probe (the first one is not measured)
        self.batches_run = 0
        self.wide_runs = 0
        self.refused = 0   # refused at once by admission control
        self.late = 0      # refused at dispatch: the estimate had been wrong
        self.closed = False
        self.successor: Batcher | None = None  # set on reload (retire): takes every submit from then on
        self._pending = 0
        self._idle = threading.Condition()
        if self.stepwise:
            self._calibrate()

    def cost(self, exchange: Exchange) -> tuple[float, int]:
        """What scoring ``exchange`` costs in cost tokens, and in how many windows: guessed from its length."""
        _, cost, windows = self._guess(exchange)
        return cost, windows

    def _guess(self, exchange: Exchange) -> tuple[float, float, int]:
        """(tokens, cost, windows) of ``exchange`` before it is tokenized; tokens as estimated from characters."""
        tokens, windows = (self._estimate(exchange, CHARS_PER_TOKEN) if self._estimate else
                           ((len(exchange.prompt) + len(exchange.response or "")) / CHARS_PER_TOKEN, 1))
        windows = max(1, int(windows))
        return tokens, windows * _cost(tokens * self._ratio / windows), windows

    def load(self) -> Load | None:
        """The load now (read without the lock: an estimate); None where there is no estimate to admit by.

        A batcher has none without a timeout, or before its first measured run.
        """
        spt = self._spt
        if self.timeout_s is None or spt is None:
            return None
        idle = self._free == self.plan.workers and not self._waiting[_CHECK] and not self._ready[_CHECK]
        return Load(spt, min([spt, *self._recent[(False, False)]]), self.plan.workers, self.timeout_s,
                    self._queued[_CHECK] + self._running, idle)

    @property
    def pending(self) -> int:
        """Exchanges submitted and not yet scored, failed or cancelled."""
        return self._pending

    # -- callers' side -----------------------------------------------------------------------

    def submit(self, exchanges: Sequence[Exchange], *, bulk: bool = False) -> list[Future]:
        """Queue exchanges; each gets a future that resolves to its scores.

        A check (not ``bulk``) that could not be scored within ``timeout_s`` gets a
        future already failed with :class:`ScorerOverloaded`. Bulk work has no
        deadline and runs when no check waits.
        """
        return [job.future for job in self._queue(exchanges, bulk)[0]]

    def check_here(self, exchange: Exchange) -> Future:
        """Submit one check from a thread that will only wait for it, and score it on that thread if it is alone.

        Where nothing else waits or runs, the calling thread takes the check's steps
        itself, as a worker would (every core held the same way, the same runs), and
        skips the two thread hand-offs of a lone check, about 0.25 ms of ~5. Anything
        else goes to the workers as :meth:`submit` sends it.
        """
        jobs, helped = self._queue([exchange], False, here=True)
        if helped is not None:  # this batcher, or its successor after a reload
            helped._help(jobs[0])
        return jobs[0].future

    def _queue(self, exchanges: Sequence[Exchange], bulk: bool,
               here: bool = False) -> tuple[list[_Job], Batcher | None]:
        """Queue exchanges as jobs; with ``here``, also the batcher whose steps the caller may take (it was idle)."""
        lane = _BULK if bulk else _CHECK
        deadline = None if bulk or self.timeout_s is None else time.monotonic() + self.timeout_s
        refused: list[tuple[Future, BaseException]] = []
        jobs = []
        with self._cond:
            if self.successor is not None:  # a caller that fetched this batcher just before a reload
                return self.successor._queue(exchanges, bulk, here)
            if self.closed:
                failed = [_Job(e, lane) for e in exchanges]
                for job in failed:
                    job.future.set_exception(ScorerError("this batcher is closed (its guard was closed)"))
                return failed, None
            if not self._workers:
                self._start()
            idle = self.stepwise and self._free == self.plan.workers and not self._has_work()
            for exchange in exchanges:
                job = _Job(exchange, lane, deadline, self._guess(exchange)[:2])
                jobs.append(job)
                overloaded = None if bulk else self._admit(job)
                if overloaded is not None:
                    self.refused += 1
                    refused.append((job.future, overloaded))
                    continue
                with self._idle:
                    self._pending += 1
                job.future.add_done_callback(self._settled)
                self._waiting[lane].append(job)
                self._queued[lane] += job.cost
            # A caller stuck in a run cannot time out: only a check that should take well under its timeout
            # is scored on the caller's thread (a huge text goes to the workers, and the caller waits as usual).
            here = here and idle and len(jobs) == 1 and not refused and (
                self.timeout_s is None or self._spt is None or jobs[0].cost * self._spt <= self.timeout_s * HEADROOM)
            if not here:
                self._cond.notify(len(jobs) - len(refused))
        for fut, exc in refused:
            fut.set_exception(exc)
        return jobs, self if here else None

    def _help(self, job: _Job) -> None:
        """Take ``job``'s steps on the calling thread while they come next and a core is free.

        What it leaves (windows a busy worker may take, once the caller stops at
        another job's step) the workers take: giving back a step's cores wakes one
        where work waits.
        """
        while True:
            with self._cond:
                self._drop_cancelled()
                ready, waiting = self._ready[_CHECK], self._waiting[_CHECK]
                ours = ready[0].job is job if ready else bool(waiting) and waiting[0] is job
                step = self._take() if ours and self._free and not job.future.done() else None
                if step is None:
                    if self._has_work():
                        self._cond.notify()
                    return
            try:
                self._dispatch(step)
            finally:
                with self._cond:
                    self._give_back(step)

    def _admit(self, job: _Job) -> ScorerOverloaded | None:
        """Refuse ``job`` when the checks ahead of it and its own cost would take it past its timeout.

        Nothing ahead, nothing refused: a guard that is idle is not overloaded,
        whatever one text costs (its timeout still applies). Bulk work waiting is
        not ahead of a check; a bulk run in progress is.
        """
        load = self.load()
        if load is None or load.idle:
            return None
        spt = load.seconds_per_token
        predicted = load.ahead * spt / load.workers + job.cost * spt
        budget = load.timeout_s * HEADROOM
        if predicted <= budget:
            return None
        return ScorerOverloaded(f"scoring is overloaded: the checks queued ahead would keep this one about "
                                f"{predicted:.2f}s, past its timeout of {self.timeout_s}s",
                                retry_after_s=round(predicted - budget, 3))

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
        """Score and wait, as bulk work (for files and evaluation); an exception frees the places of the rest."""
        futures = self.submit(exchanges, bulk=True)
        try:
            return [f.result() for f in futures]
        finally:
            for f in futures:
                f.cancel()  # no-op for finished ones; frees the place of the rest

    def retire(self, successor: Batcher) -> None:
        """Hand later submits to ``successor``, finish everything submitted before, then close (on reload).

        Nothing is refused: a submit either queued here before the hand-over (and is
        drained), or goes to the successor. Both are decided under the lock, so a
        caller that fetched this batcher just before a reload cannot slip a check in
        between the drain and the close.
        """
        with self._cond:
            self.successor = successor
        self.drain()
        self.close()

    def close(self, timeout: float | None = None) -> None:
        """Refuse what is queued, let what is running finish, then stop.

        Queued exchanges fail with :class:`ScorerError`; so do later submits, and
        texts tokenized but none of whose windows has started (a worker tokenizes
        several at a time under load). The windows of a text already being scored
        still run. Waits up to ``timeout`` for the workers.
        """
        with self._cond:
            self.closed = True
            refused = [job for lane in self._waiting for job in lane]
            for lane in self._waiting:
                lane.clear()
            for lane in self._ready:
                left = Counter(id(u.job) for u in lane)  # all of a job's unscored windows still here: not started
                unstarted = {id(u.job): u.job for u in lane if left[id(u.job)] == u.job.left}
                kept = [u for u in lane if id(u.job) not in unstarted]
                lane.clear()
                lane.extend(kept)
                refused += unstarted.values()
            self._queued[:] = [sum(w.cost for w in lane) for lane in self._ready]
            self._cond.notify_all()
            workers = self._workers
        for job in refused:
            _resolve(job.future, exception=ScorerError("the guard was closed before this check was scored"))
        for worker in workers:
            if worker is not threading.current_thread():
                worker.join(timeout)

    # -- workers' side -----------------------------------------------------------------------

    def _start(self) -> None:
        self._workers = [threading.Thread(target=self._work, name=f"beaverguard-score-{i}", daemon=True)
                         for i in range(self.plan.workers)]
        for worker in self._workers:
            worker.start()
        _live.add(self)

    def _work(self) -> None:
        step = None
        while True:
            with self._cond:
                if step is not None:
                    self._give_back(step)
                step = self._next_step()
            if step is None:
                return
            self._dispatch(step)

    def _give_back(self, step: _Step) -> None:
        """Return a finished step's cores (under the lock), and wake a worker where work waits."""
        self._free += step.cores
        self._running -= step.cost
        if self._free == self.plan.workers and not self._has_work():
            self._queued[:], self._running = [0.0, 0.0], 0.0  # no rounding left over when idle
        if self.closed:
            self._cond.notify_all()  # workers waiting for a core may now have nothing left to do
        elif self._has_work():
            self._cond.notify()

    def _dispatch(self, step: _Step) -> None:
        for job in step.late:
            _resolve(job.future, exception=ScorerOverloaded(
                "scoring is overloaded: this check could no longer be scored within its timeout", 0.0))
        self._execute(step)

    def _has_work(self) -> bool:
        return any(self._ready) or any(self._waiting)

    def _next_step(self) -> _Step | None:
        """Wait for work and a free core, and take a step (under the lock); None once closed and empty."""
        while True:
            self._drop_cancelled()
            if self._free:
                company = self._wait_for_company()
                if company:
                    self._cond.wait(company)
                    continue
                step = self._take()
                if step is not None:
                    return step
            if self.closed and not self._has_work():
                return None
            self._cond.wait()

    def _drop_cancelled(self) -> None:
        """Drop work whose caller gave up (or that failed) from the fronts of the queues."""
        for queue in (*self._ready, *self._waiting):
            while queue and queue[0].future.done():
                item = queue.popleft()
                self._queued[item.lane] -= item.cost

    def _wait_for_company(self) -> float:
        """Seconds the oldest job should still wait for others to share its run (``max_wait_ms``); 0: none."""
        if not self.plan.max_wait_s or self.closed or any(self._ready):
            return 0.0
        queue = self._waiting[_CHECK] or self._waiting[_BULK]
        if not queue or len(queue) >= self.plan.batch_size:
            return 0.0
        return max(0.0, queue[0].arrived + self.plan.max_wait_s - time.monotonic())

    def _take(self) -> _Step | None:
        """The next step: windows already tokenized first (their texts are older), checks before bulk."""
        late = self._drop_late(self._ready[_CHECK])
        if late and not self._has_work():
            self.late += len(late)
            return _Step("run", [], cores=0, late=late)  # nothing to run, but these to refuse
        for lane in (_CHECK, _BULK):
            ready, waiting = self._ready[lane], self._waiting[lane]
            if ready:
                units = _take_from(ready, self.plan.batch_size, self.plan.run_tokens)
                step = _Step("run", units, cost=sum(u.cost for u in units), late=late)
                self.late += len(late)
                if self.can_go_wide and self._free == self.plan.workers and not self._has_work():
                    self._lone += 1
                    if self._wide_pays():  # nothing else to do: this run gets every core
                        step.cores = self.plan.workers
                elif self.can_go_wide and self._free == self.plan.workers and self._lone_text(units, ready):
                    step.cores = self.plan.workers
                break
            if waiting:
                jobs = self._take_jobs(waiting)
                step = _Step("encode" if self.stepwise else "score", jobs, cost=sum(j.cost for j in jobs))
                self.late += len(late)
                if self._spt is not None:  # an estimate was wrong: refuse now what waiting made miss its deadline
                    now, per_core = time.monotonic(), self._spt / self.plan.workers
                    hopeless = [j for j in jobs if j.deadline is not None
                                and now + j.cost * per_core > j.deadline >= j.arrived + j.cost * per_core]
                    if hopeless:
                        step.items = [j for j in jobs if j not in hopeless]
                        step.late = late + hopeless
                        self.late += len(hopeless)
                    else:
                        step.late = late
                break
        else:
            return None
        self._queued[lane] -= step.cost
        step.cost -= sum(j.cost for j in step.late if j not in late)
        self._running += step.cost
        self._free -= step.cores
        return step

    def _drop_late(self, ready: deque[_Window]) -> list[_Job]:
        """Checks at the front of ``ready``, none of whose windows has run, that can no longer finish in time.

        A worker tokenizes several texts at a time under load, so a text's windows may
        wait behind others' after the check at its dispatch; if the machine slowed down
        meanwhile, scoring it now would only end in a timeout (and take the time of the
        checks behind it). It is refused as overloaded instead, before its first run.
        """
        if self._spt is None:
            return []
        now, late = time.monotonic(), []
        while ready and ready[0].job.deadline is not None:
            job = ready[0].job
            left = [u for u in ready if u.job is job]
            # at best its windows run side by side: no sooner than its longest, nor than its share of the cores
            need = max(max(u.cost for u in left), sum(u.cost for u in left) / self.plan.workers) * self._spt
            if len(left) != job.left or not now + need > job.deadline >= job.arrived + need:
                break  # started (let it finish), still in time, or never was (an idle guard admits it: it times out)
            for u in left:
                ready.remove(u)
            self._queued[_CHECK] -= sum(u.cost for u in left)
            late.append(job)
        return late

    def _take_jobs(self, waiting: deque[_Job]) -> list[_Job]:
        """Jobs to tokenize in one step: a share of a long queue, else as a run would take them.

        Tokenizing several texts in one step costs less per text than one by one: at 32
        clients on a 2-core CPU, 0.31 against 0.44 ms of CPU per QA pair (between model
        runs the tokenizer and the normalizer start from cold caches; here they stay warm
        for the next texts, and the lock is taken once). Windows are still run as the
        plan says, so this changes no score; a lone job is still tokenized alone, so it
        waits for no one.
        """
        if not self.stepwise:
            return _take_from(waiting, self.plan.batch_size, self.plan.run_tokens)
        share = min(ENCODE_JOBS, len(waiting) // self.plan.workers)
        if share <= self.plan.batch_size:
            return _take_from(waiting, self.plan.batch_size, self.plan.run_tokens)
        return [waiting.popleft() for _ in range(share)]

    def _lone_text(self, units: list[_Window], ready: deque[_Window]) -> bool:
        """Whether the windows left of a text that has the machine to itself finish sooner run wide, one by one.

        Spread over n workers, k windows take ceil(k / n) narrow runs; run wide, k / s
        where s is how much faster a wide run of such windows measures. For 5 windows
        of 256 tokens on 2 cores (s about 1.8) that is 2.8 against 3; for 19, 10.6
        against 10, so those are spread. Decided again at each window, so a text ends
        spread once its windows left divide evenly. Every ``WIDE_PROBE`` such runs one
        goes wide anyway, so that an estimate taken at a busy moment is measured again.
        """
        if any(self._waiting) or self._ready[_BULK if units[0].lane == _CHECK else _CHECK]:
            return False
        job = units[0].job
        if any(u.job is not job for u in units) or any(u.job is not job for u in ready):
            return False
        long = units[0].tokens >= LONG_WINDOW
        narrow, wide = self._fastest(False, long), self._fastest(True, long)
        self._lone += 1
        if narrow is None or wide is None or self._lone % WIDE_PROBE == 0:
            return True  # no estimate yet, or one that may be stale (a busy moment): measure a wide run
        k = len(units) + len(ready)
        return k * wide / narrow < -(-k // self.plan.workers)

    def _wide_pays(self) -> bool:
        """Whether a wide run measures faster per token than a single-threaded one (or is due a new try).

        A try is three lone runs wide in a row: the first starts cold (its thread pool asleep, its copy of the
        weights out of cache), the next two measure what wide costs; the fastest of the recent runs decides.
        """
        if self._probe:
            self._probe -= 1
            return True
        narrow, wide = self._fastest(False, False), self._fastest(True, False)
        if narrow is None or wide is None or self._lone % WIDE_PROBE == 0:
            self._probe = 2
            return True
        return wide < narrow

    def _fastest(self, wide: bool, long: bool) -> float | None:
        """The best seconds per cost token of the last ``RECENT`` runs of a kind; None before the first."""
        recent = self._recent[(wide, long)]
        return min(recent) if recent else None

    def _execute(self, step: _Step) -> None:
        if not step.items:
            return
        if step.kind == "encode":
            self._encode(step.items)
        elif step.kind == "run":
            self._run(step)
        else:
            self._score(step.items)

    def _encode(self, jobs: list[_Job]) -> None:
        """Tokenize jobs (once) and queue their windows for any free worker."""
        try:
            per_job = self.scorer.encode([job.exchange for job in jobs])
        except BaseException as exc:  # handed to each caller, whose policy decides
            for job in jobs:
                _resolve(job.future, exception=exc)
            return
        with self._cond:
            for job, windows in zip(jobs, per_job):
                units = [_Window(job, i, w) for i, w in enumerate(windows)]
                job.rows, job.left = [None] * len(units), len(units)
                tokens = sum(u.tokens for u in units)
                self._ratio += EWMA * (tokens / max(job.tokens, 1.0) - self._ratio)
                self._ready[job.lane].extend(units)
                self._queued[job.lane] += sum(u.cost for u in units)
            if sum(len(w) for w in per_job) > 1:
                self._cond.notify_all()  # more windows than this worker takes next

    def _run(self, step: _Step) -> None:
        units: list[_Window] = step.items
        wide = step.cores > 1
        start = time.perf_counter()
        try:
            probs = self.scorer.run_windows([u.window for u in units], wide=wide)
        except BaseException as exc:
            for job in {id(u.job): u.job for u in units}.values():
                _resolve(job.future, exception=exc)
            return
        elapsed = time.perf_counter() - start
        done = []
        with self._cond:
            self._learn(elapsed / step.cost, wide, max(u.tokens for u in units))
            self.batches_run += 1
            self.wide_runs += wide
            for unit, row in zip(units, probs):
                job = unit.job
                job.rows[unit.index] = row
                job.left -= 1
                if not job.left:
                    done.append(job)
        for job in done:
            if job.future.done():  # cancelled or failed meanwhile
                continue
            try:
                _resolve(job.future, self.scorer.finish(job.exchange, np.stack(job.rows)))
            except BaseException as exc:
                _resolve(job.future, exception=exc)

    def _score(self, jobs: list[_Job]) -> None:
        """Whole jobs through ``score``: any :class:`Scorer`."""
        live = [job for job in jobs if not job.future.done()]
        if not live:
            return
        start = time.perf_counter()
        try:
            results = self.scorer.score([job.exchange for job in live])
        except BaseException as exc:
            for job in live:
                _resolve(job.future, exception=exc)
            return
        with self._cond:
            self._learn((time.perf_counter() - start) / sum(job.cost for job in live), False)
            self.batches_run += 1
        for job, res in zip(live, results):
            _resolve(job.future, res)

    def _learn(self, seconds_per_token: float, wide: bool, tokens: int = 0, general: bool = True) -> None:
        if tokens >= LONG_WINDOW:
            self._recent[(wide, True)].append(seconds_per_token)
        if not general:
            return
        self._recent[(wide, False)].append(seconds_per_token)
        if not wide:
            self._spt = _blend(self._spt, seconds_per_token, EWMA)

    def _calibrate(self) -> None:
        """Time one window, single-threaded and wide: the first estimates of seconds per token, and a warm-up.

        Admission control needs them before the first request, since a burst
        arrives all at once; the estimates then follow the runs.
        """
        try:
            (windows,) = self.scorer.encode([Exchange(_CALIBRATION)])
            unit = windows[:1]
            cost = _cost(len(unit[0][0]))
            # In blocks, not interleaved: a wide run right after a narrow one finds its thread pool asleep and
            # its own copy of the weights out of cache (measured 1.5x slower than narrow, against 0.65x in a row).
            for wide in (False, True) if self.can_go_wide else (False,):
                times = []
                for _ in range(3):  # the first run of a session is slower, and the machine may be busy: keep the best
                    start = time.perf_counter()
                    self.scorer.run_windows(unit, wide=wide)
                    times.append(time.perf_counter() - start)
                self._learn(min(times) / cost, wide)
            if self.can_go_wide:  # a full window too: how much a wide run gains on long text (its own estimates)
                (windows,) = self.scorer.encode([Exchange(_CALIBRATION * 3)])
                unit, tokens = windows[:1], len(windows[0][0])
                for wide in (False, True) if tokens >= LONG_WINDOW else ():
                    times = []
                    for _ in range(2):  # a session's first run of a shape is slower
                        start = time.perf_counter()
                        self.scorer.run_windows(unit, wide=wide)
                        times.append(time.perf_counter() - start)
                    self._learn(min(times) / _cost(tokens), wide, tokens, general=False)
        except Exception:  # noqa: BLE001 - a scorer that cannot score says so on the first real request
            self._spt = None
            for recent in self._recent.values():
                recent.clear()


def _blend(estimate: float | None, measured: float, weight: float) -> float:
    """A running estimate moved ``weight`` of the way to a measurement, which counts for at most ``OUTLIER`` times it.

    A run that the machine stalled (another process, the hypervisor) once took 10x its time on this VM;
    taken as it came, it would have admission control refuse checks it could score. A lasting slowdown
    still moves the estimate up by half its weight per run.
    """
    if estimate is None:
        return measured
    return estimate + weight * (min(measured, OUTLIER * estimate) - estimate)


def close_all(timeout: float | None = None) -> None:
    """Close every batcher that has started its workers (at interpreter exit)."""
    for batcher in list(_live):
        batcher.close(timeout)


def _resolve(fut: Future, result: object = None, exception: BaseException | None = None) -> None:
    """Set a future's outcome unless its caller cancelled it meanwhile."""
    try:
        if exception is not None:
            fut.set_exception(exception)
        else:
            fut.set_result(result)
    except InvalidStateError:
        pass


def _take_from(queue: deque, size: int, run_tokens: int | None) -> list:
    """Take a batch from the front of ``queue`` (see :func:`_take_batch`); the rest stays in order."""
    if size == 1:
        return [queue.popleft()]
    batch, rest = _take_batch(list(queue), size, run_tokens)
    queue.clear()
    queue.extend(rest)
    return batch


def _take_batch(waiting: list, size: int, run_tokens: int | None = None) -> tuple[list, list]:
    """The oldest item plus up to ``size - 1`` waiting items closest to it in ``tokens`` (less padding).

    With ``run_tokens``, the batch stops growing before its size times its
    longest member would pass that budget.
    """
    if len(waiting) <= size and run_tokens is None:
        return waiting, []
    anchor, rest = waiting[0], waiting[1:]
    target = width = anchor.tokens
    chosen: set[int] = set()
    for i in sorted(range(len(rest)), key=lambda i: abs(rest[i].tokens - target)):
        grown = max(width, rest[i].tokens)
        if len(chosen) + 1 >= size or (run_tokens is not None and (len(chosen) + 2) * grown > run_tokens):
            break
        chosen.add(i)
        width = grown
    return [anchor] + [rest[i] for i in sorted(chosen)], [it for i, it in enumerate(rest) if i not in chosen]
