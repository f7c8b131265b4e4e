"""Latency under every load (issue 13): alone, in a crowd, on long text, in a burst.

    python benchmarks/bench_latency.py            # all four parts, about 3 minutes on 2 cores
    python benchmarks/bench_latency.py --quick    # fewer exchanges and passes, about 1 minute

(1) alone: one request at a time, ``await guard.check_output(p, r)`` against the
    best bare single-request plan (a bare ``InferenceSession`` with onnxruntime's
    default threads, and one with 1 thread: the better of the two), both tokenizing
    with the guard's encoder and scoring the same windows.
(2) crowd: 32 and 128 concurrent clients in a closed loop against the best bare
    plan that knows every exchange up front (the plans of ``bench_guard.py``).
(3) long text: one text of about 1k, 4k and 8k tokens, alone, against bare plans
    that score the same windows on all cores.
(4) burst: 2,000 checks submitted at once with ``timeout_s: 2``: each must be
    scored within 2.2 s or refused as overloaded within 50 ms of its arrival, with
    no timeout and one audit record each.

Each ratio comes from one process, with the paths interleaved and their order
rotated every pass; each is the median over the passes of the ratio within a pass.
"""

from __future__ import annotations  # noqa: I001  (_common must come first: it puts src/ on sys.path)

import argparse
import asyncio
import functools
import gc
import json
import logging
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from _common import (DEFAULT_MODEL_DIR, BarePlan, bare_plans, guard_closed_loop, load_pairs, make_guard, median, pct,
                     report, table)

from beaverguard import Exchange, Guard, Policy
from beaverguard._model import OnnxScorer

ALONE_FLOOR = 1.10
CROWD_FLOOR = 0.95
LONG_FLOOR = 1.15
BURST_TIMEOUT_S, BURST_SCORED_S, BURST_REFUSED_S = 2.0, 2.2, 0.050
#: Idle time between two paths. A bare session with onnxruntime's default threads keeps its pool spinning after
#: a run; for the next ~50 ms that took a core from whatever ran next (two single-threaded 256-token runs side by
#: side: 40 ms instead of 20), so the path measured after it paid for it.
SETTLE_S = 0.2
#: Exchanges per block of the alone part (see alone()).
ALONE_BLOCK = 16


def rotated(items: list, rep: int) -> list:
    """``items`` starting at a different one each pass, so that no path always runs first (or last)."""
    k = rep % len(items)
    return items[k:] + items[:k]


def per_pass_ratio(ours: list[float], best: list[float]) -> float:
    """Median over passes of (ours / best) within each pass: steadier than a ratio of medians when the machine is
    shared."""
    return median([a / b for a, b in zip(ours, best)])


def settle() -> None:
    """Let the spinning threads of the path just measured stop before the next one starts (``SETTLE_S``)."""
    time.sleep(SETTLE_S)


def verdict(ok: bool) -> str:
    return "met" if ok else "**NOT MET**"


# -- (1) alone --------------------------------------------------------------------------------

def alone(guard: Guard, pairs: list[tuple[str, str]], repeats: int, plain: Guard) -> tuple[str, dict]:
    """``plain``: the same guard with ``normalize`` and ``decode`` off, what the guard's own text work costs.

    The exchanges go in blocks of ``ALONE_BLOCK``: every path scores a block, in an order rotated each time,
    before the next block, so a slow second of this VM falls on all paths alike (whole passes of 64 gave
    ratios 1.09-1.30 from run to run). Each async path runs on a fresh event loop per block: asyncio's, and
    uvloop's where it is installed (the ``server`` extra's uvicorn runs on it).
    """
    scorer: OnnxScorer = guard.scorer  # type: ignore[assignment]
    plans = [BarePlan("bare: one session, onnxruntime's default threads", scorer, 1, 0, 1),
             BarePlan("bare: one session, 1 thread", scorer, 1, 1, 1)]
    # Not a candidate for the floor (which names the two above): what the guard's wide session does, its pool
    # sleeping between runs instead of spinning on, which a loop of back-to-back requests rewards.
    stop = BarePlan("bare: one session, default threads, `session.force_spinning_stop`", scorer, 1, 0, 1,
                    {"session.force_spinning_stop": "1"})

    async def run_guard(g: Guard, block: list[tuple[str, str]]) -> list[float]:
        out = []
        for p, r in block:
            t = time.perf_counter()
            d = await g.check_output(p, r)
            out.append(time.perf_counter() - t)
            assert d.error is None, d.error
        return out

    def run_sync(g: Guard, block: list[tuple[str, str]]) -> list[float]:
        out = []
        for p, r in block:
            t = time.perf_counter()
            assert g.check_output_sync(p, r).error is None
            out.append(time.perf_counter() - t)
        return out

    def run_bare(plan: BarePlan, block: list[tuple[str, str]]) -> list[float]:
        return [plan.run([pair]) for pair in block]

    ours = "`await guard.check_output(p, r)`"
    paths: dict[str, Callable[[list[tuple[str, str]]], list[float]]] = {
        **{p.label: functools.partial(run_bare, p) for p in (*plans, stop)},
        ours: lambda block: asyncio.run(run_guard(guard, block)),
        "`guard.check_output_sync(p, r)`": functools.partial(run_sync, guard),
        "`await guard.check_output(p, r)`, `normalize: false`, `decode: false`":
            lambda block: asyncio.run(run_guard(plain, block)),
    }
    try:
        import uvloop

        paths[f"{ours} on uvloop"] = lambda block: uvloop.run(run_guard(guard, block))
    except ImportError:
        pass

    for measure in paths.values():  # warm up every path
        measure(pairs)
    blocks = [pairs[i:i + ALONE_BLOCK] for i in range(0, len(pairs), ALONE_BLOCK)]
    lat: dict[str, list[float]] = {k: [] for k in paths}
    p50: dict[str, list[float]] = {k: [] for k in paths}  # per block
    mean: dict[str, list[float]] = {k: [] for k in paths}
    wide_before = guard._batcher.wide_runs
    runs_before = guard._batcher.batches_run
    for rep in range(repeats):
        for b, block in enumerate(blocks):
            for path in rotated(list(paths), rep * len(blocks) + b):
                settle()
                ts = paths[path](block)
                lat[path] += ts
                p50[path].append(median(ts))
                mean[path].append(sum(ts) / len(ts))
    wide_share = (guard._batcher.wide_runs - wide_before) / max(1, guard._batcher.batches_run - runs_before)
    best = min((p.label for p in plans), key=lambda k: median(lat[k]))
    ratio_p50 = per_pass_ratio(p50[ours], p50[best])
    ratio_mean = per_pass_ratio(mean[ours], mean[best])
    rows = [[k, median(v) * 1e3, pct(v, 99) * 1e3, sum(v) / len(v) * 1e3,
             f"{per_pass_ratio(p50[k], p50[best]):.3f}", f"{per_pass_ratio(mean[k], mean[best]):.3f}"]
            for k, v in lat.items()]
    tokens = [sum(len(ids) for ids, _ in ws) for ws in scorer.encoder.windows([p for p, _ in pairs],
                                                                              [r for _, r in pairs])]
    ok = ratio_p50 <= ALONE_FLOOR
    text = (f"## (1) One request at a time\n\n{len(pairs)} exchanges (median {int(median(tokens))} tokens, max "
            f"{max(tokens)}), one after another, {repeats} passes in blocks of {ALONE_BLOCK}: every path scores a "
            "block, in an order rotated each block, before the next. The bare plans tokenize with the guard's "
            "encoder (the same windows) and run them on a bare `InferenceSession`; the guard also normalizes the "
            "text and looks for encoded parts (the row with both off shows what that costs), and, but for the "
            f"sync twin, hands each check to a worker thread and back. {wide_share:.0%} of the guard's runs here "
            "were wide (every core on one run).\n\n"
            + table(["path", "p50 ms", "p99 ms", "mean ms", "p50 / best bare p50", "mean / best bare mean"], rows)
            + f"\n\nGuard / best bare plan ({best.removeprefix('bare: ')}) = **{ratio_p50:.3f}** at p50 and "
            f"{ratio_mean:.3f} in the mean (median over blocks of the ratio within a block); floor <= "
            f"{ALONE_FLOOR:.2f} at p50: {verdict(ok)}.\n")
    return text, {"alone": (ratio_p50, ok)}


# -- (2) crowd --------------------------------------------------------------------------------

async def crowd(guard: Guard, pairs: list[tuple[str, str]], levels: list[int], repeats: int,
                plain: Guard | None = None, answer_alone: Guard | None = None) -> tuple[str, dict]:
    """``plain``: the same guard with ``normalize`` and ``decode`` off, at 32 clients: what the guard's own
    text work costs (the bare plans do none). ``answer_alone``: with the default policy's second window per
    response on (``execution.answer_alone``), at 32 clients: what that view costs."""
    scorer: OnnxScorer = guard.scorer  # type: ignore[assignment]
    plans = bare_plans(scorer)
    for plan in plans:
        plan.run(pairs[:64])
    await guard_closed_loop(guard, pairs[:64], 8)
    extras = {k: g for k, g in (("plain", plain), ("answer_alone", answer_alone)) if g is not None}
    jobs: list = [*plans, *levels, *extras]
    walls: dict = {k.label if isinstance(k, BarePlan) else k: [] for k in jobs}
    cpu: dict = {k: [] for k in walls}  # process CPU seconds per measurement
    lat: dict = {k: [] for k in walls}
    refused = 0
    for rep in range(repeats):
        for what in rotated(jobs, rep):
            settle()
            c = time.process_time()
            if isinstance(what, BarePlan):
                key, wall = what.label, what.run(pairs)
            else:
                g, clients = (extras[what], 32) if what in extras else (guard, what)
                before = g._batcher.refused + g._batcher.late
                wall, ls = await guard_closed_loop(g, pairs, clients)
                refused += g._batcher.refused + g._batcher.late - before
                key = what
                lat[key] += ls
            cpu[key].append(time.process_time() - c)
            walls[key].append(wall)
    n = len(pairs)
    best = min((p.label for p in plans), key=lambda k: median(walls[k]))
    rows, figures = [], {}
    for key, ws in walls.items():
        share = per_pass_ratio(walls[best], ws)  # best's time / this time = this throughput / best's
        label = {"plain": "guard, 32 concurrent clients, `normalize: false`, `decode: false`",
                 "answer_alone": "guard, 32 concurrent clients, `answer_alone: true` (the default policy)"}.get(
            key, key if isinstance(key, str) else f"guard, {key} concurrent clients")
        if isinstance(key, int):
            figures[f"crowd{key}"] = (share, share >= CROWD_FLOOR)
        timed = bool(lat[key])
        rows.append([label, n / median(ws), pct(lat[key], 50) * 1e3 if timed else "-",
                     pct(lat[key], 99) * 1e3 if timed else "-", median(cpu[key]) / n * 1e3, f"{share:.3f}"])
    # The int8 model is not batch-invariant: a bare plan that shares runs gives scores that depend on the other
    # exchanges of the run, which the guard refuses. The best bare plan that runs each exchange alone, for comparison:
    alone_plans = [p.label for p in plans if p.batch == 1]
    fair = min(alone_plans, key=lambda k: median(walls[k])) if alone_plans else best
    lines = [f"- {c} clients: **{figures[f'crowd{c}'][0]:.3f}** of the best bare plan; floor >= {CROWD_FLOOR:.2f}: "
             f"{verdict(figures[f'crowd{c}'][1])}. Against the best bare plan that runs each exchange alone "
             f"({fair.removeprefix('bare: ')}), as the guard does with this model: "
             f"**{per_pass_ratio(walls[fair], walls[c]):.3f}**" for c in levels]
    text = (f"## (2) Throughput in a crowd\n\n{n} exchanges per measurement, {repeats} passes, order rotated each "
            "pass. Clients call `check_output` in a closed loop (the guard's timeout is long, so no check is "
            "refused or times out: nothing unscored flatters it); the bare plans of `bench_guard.py` know every "
            "exchange up front and sort all windows by length (tokenizing included), and neither normalize nor "
            "decode. CPU ms / exchange is the process's CPU time (every thread) per exchange, which the other "
            f"jobs on a shared machine touch less than wall time. Checks refused: {refused}.\n\n"
            + table(["plan", "exchanges/s", "p50 ms", "p99 ms", "CPU ms / exchange",
                     "throughput / best bare, per pass"], rows)
            + f"\n\nBest bare plan: {best.removeprefix('bare: ')}.\n\n" + "\n".join(lines) + "\n")
    return text, figures


# -- (3) long text ----------------------------------------------------------------------------

def long_texts(scorer: OnnxScorer, pairs: list[tuple[str, str]], sizes: list[int]) -> list[str]:
    """Texts of about ``sizes`` tokens, made of BeaverTails responses (ordinary prose, no encoded parts)."""
    tok = scorer.encoder.tokenizer
    ids = []
    for _, r in pairs:
        ids += tok.encode(r, add_special_tokens=False).ids
        if len(ids) >= max(sizes):
            break
    return [tok.decode(ids[:n]) for n in sizes]


async def long_text(guard: Guard, pairs: list[tuple[str, str]], sizes: list[int], repeats: int) -> tuple[str, dict]:
    scorer: OnnxScorer = guard.scorer  # type: ignore[assignment]
    cores = os.cpu_count() or 1
    plans = [*bare_plans(scorer), BarePlan("bare: one session (default threads), one window per run", scorer, 1, 0, 1)]
    texts = long_texts(scorer, pairs, sizes)
    rows, figures = [], {}
    for size, text in zip(sizes, texts):
        windows = scorer.encode([Exchange(text)])[0]  # every view of the text, as the guard scores it
        bare_windows = scorer.encoder.windows([text], [None], scorer.max_tokens)[0]  # as the bare plans do
        tokens = sum(len(ids) for ids, _ in windows)
        t: dict = {p.label: [] for p in plans} | {"guard": []}
        for plan in plans:  # warm up
            plan.run([(text, None)])
        await guard.check_input(text)
        for rep in range(repeats):
            for what in rotated(["guard", *plans], rep):
                settle()
                if what == "guard":
                    start = time.perf_counter()
                    d = await guard.check_input(text)
                    t["guard"].append(time.perf_counter() - start)
                    assert d.error is None, d.error
                else:
                    t[what.label].append(what.run([(text, None)]))
        best = min((p.label for p in plans), key=lambda k: median(t[k]))
        ratio = per_pass_ratio(t["guard"], t[best])
        figures[f"long{size}"] = (ratio, ratio <= LONG_FLOOR)
        rows.append([f"~{size // 1000}k" if size >= 1000 else size, tokens, f"{len(windows)} / {len(bare_windows)}",
                     median(t["guard"]) * 1e3,
                     median(t[best]) * 1e3, best.removeprefix("bare: "), f"{ratio:.3f}", verdict(ratio <= LONG_FLOOR)])
    text = (f"## (3) Long text, alone\n\nOne input-rail check of ordinary prose (BeaverTails responses joined) at "
            f"each length, {repeats} passes, order rotated each pass. The bare plans tokenize with the guard's "
            f"encoder and score the same windows on all {cores} cores (the `bench_guard.py` plans, and one "
            "default-threads session running the windows one by one).\n\n"
            + table(["text", "tokens scored", "windows: guard / bare", "guard ms", "best bare ms", "best bare plan",
                     "guard / best bare, per pass",
                     f"floor <= {LONG_FLOOR:.2f}"], rows) + "\n")
    return text, figures


# -- (4) burst --------------------------------------------------------------------------------

async def burst(model: Path, pairs: list[tuple[str, str]], repeats: int) -> tuple[str, dict]:
    rows, figures, notes = [], {}, []
    for rep in range(repeats):
        # The last pass's decisions and records are dropped and collected first: held on, they doubled what
        # the collector walks in this pass (a full collection took 60 ms, past a refusal's 50).
        out = records = None
        gc.collect()
        with tempfile.TemporaryDirectory() as tmp:
            audit = Path(tmp) / "audit.jsonl"
            guard = Guard(Policy.model_validate({"execution": {"provider": "cpu"}, "timeout_s": BURST_TIMEOUT_S,
                                                 "audit": {"path": str(audit), "log": False}}), model=model)
            try:
                for p, r in pairs[:16]:  # warm up the sessions (their first runs are slower), as a server would be
                    await guard.check_output(p, r)
                warm = len(pairs[:16])

                async def one(p: str, r: str) -> tuple[object, float]:
                    t = time.perf_counter()
                    d = await guard.check_output(p, r)
                    return d, time.perf_counter() - t

                t0 = time.perf_counter()
                out = await asyncio.gather(*(one(p, r) for p, r in pairs))
                wall = time.perf_counter() - t0
                late = guard._batcher.late
            finally:
                guard.close()
            records = [json.loads(line) for line in audit.read_text().splitlines()]
        kinds = Counter(d.error_type for d, _ in out)
        scored = [s for d, s in out if d.error is None]
        refused = [s for d, s in out if d.overloaded]
        ids = Counter(r["request_id"] for r in records[warm:])
        one_each = len(records) == warm + len(out) and all(ids[d.request_id] == 1 for d, _ in out)
        ok = (len(scored) + len(refused) == len(out) and max(scored, default=0) <= BURST_SCORED_S
              and max(refused, default=0) <= BURST_REFUSED_S and one_each)
        figures[f"burst{rep}"] = (max(scored, default=0), ok)
        rows.append([rep + 1, len(out), len(scored), len(refused), kinds.get("TimeoutError", 0),
                     sum(v for k, v in kinds.items() if k not in (None, "ScorerOverloaded", "TimeoutError")), late,
                     pct(scored, 50) * 1e3 if scored else "-", max(scored, default=0) * 1e3,
                     pct(refused, 50) * 1e3 if refused else "-", max(refused, default=0) * 1e3,
                     len(scored) / wall, "yes" if one_each else "**no**", verdict(ok)])
        if not ok:
            notes.append(f"pass {rep + 1}: error types {dict(kinds)}")
    text = (f"## (4) Burst\n\n{len(pairs)} `check_output` calls started at once (`asyncio.gather`) on a fresh guard "
            f"with `timeout_s: {BURST_TIMEOUT_S:g}` and an audit file, {repeats} passes. Latency is each call's own, "
            f"from its start to its decision. Floor: every check scored within {BURST_SCORED_S:g} s or refused as "
            f"overloaded within {BURST_REFUSED_S * 1e3:.0f} ms, no timeouts, one audit record each.\n\n"
            + table(["pass", "checks", "scored", "refused (overloaded)", "timed out", "other errors",
                     "refused at dispatch", "scored p50 ms", "scored max ms", "refused p50 ms", "refused max ms",
                     "scored / s", "one audit record each", "floor"], rows)
            + ("\n\n" + "\n".join(notes) if notes else "") + "\n")
    return text, figures


# -- main -------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR, help="model directory (default: shipped int8)")
    ap.add_argument("--data", type=Path, default=None, help="JSON Lines of prompt/response rows")
    ap.add_argument("--only", default="alone,crowd,long,burst", help="comma-separated parts to run")
    ap.add_argument("--quick", action="store_true", help="fewer exchanges and passes (a smoke run)")
    ap.add_argument("--repeats", type=int, default=None, help="passes per part (default 5, --quick 2)")
    ap.add_argument("--name", default="latency", help="results/<name>.md")
    args = ap.parse_args()
    # The burst refuses over a thousand checks, each with a warning on the "beaverguard" logger: on stderr,
    # without logging configured. An application would route them; here they would only slow the event loop.
    logging.getLogger("beaverguard").setLevel(logging.ERROR)
    kw = {"path": args.data} if args.data else {}
    parts = set(args.only.split(","))
    repeats = args.repeats or (2 if args.quick else 5)
    sections, figures = [], {}
    guard = make_guard(args.model, "cpu")
    try:
        if "alone" in parts:
            plain = make_guard(args.model, "cpu", normalize=False, decode=False)
            try:
                text, f = alone(guard, load_pairs(32 if args.quick else 64, **kw), repeats, plain)
            finally:
                plain.close()
            sections.append(text), figures.update(f)
            print(text)
        if "crowd" in parts:
            # several times 128 exchanges, so that 128 clients' latencies are a queue's, not one round's
            plain = make_guard(args.model, "cpu", normalize=False, decode=False)
            both = make_guard(args.model, "cpu", answer_alone=True)
            try:
                text, f = asyncio.run(crowd(guard, load_pairs(256 if args.quick else 512, **kw), [32, 128],
                                            repeats, plain, both))
            finally:
                plain.close()
                both.close()
            sections.append(text), figures.update(f)
            print(text)
        if "long" in parts:
            text, f = asyncio.run(long_text(guard, load_pairs(400, **kw), [1024, 4096, 8192], repeats))
            sections.append(text), figures.update(f)
            print(text)
    finally:
        guard.close()
    if "burst" in parts:
        text, f = asyncio.run(burst(args.model, load_pairs(2000, **kw), 1 if args.quick else 2))
        sections.append(text), figures.update(f)
    summary = table(["floor", "figure", "met"], [[k, f"{v:.3f}", "yes" if ok else "**no**"]
                                                for k, (v, ok) in figures.items()])
    report(args.name, "Latency under every load", "## Floors\n\n" + summary + "\n\n" + "\n".join(sections))


if __name__ == "__main__":
    main()
