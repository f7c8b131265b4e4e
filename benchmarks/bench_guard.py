"""The guard against bare onnxruntime: overhead, throughput under concurrency, memory.

    python benchmarks/bench_guard.py                 # all three parts, CPU
    python benchmarks/bench_guard.py --only throughput --provider cuda --name guard-gpu

(a) overhead: ``await guard.check_output(p, r)`` against ``session.run`` of the
    guard's own session on the same tokenized input, one request at a time.
(b) throughput: N concurrent clients in a closed loop calling ``check_output``,
    against hand-written bare plans on the same exchanges (tokenizing included):
    the guard should not cost much over the best schedule one could write by hand.
(c) memory: peak RSS of a fresh process holding one ``Guard()`` after scoring.
"""

from __future__ import annotations  # noqa: I001  (_common must come first: it puts src/ on sys.path)

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import (DEFAULT_MODEL_DIR, ROOT, bare_plans, guard_closed_loop, load_pairs, make_guard, median, pct,
                     report, table)

from beaverguard import Guard
from beaverguard._model import OnnxScorer, _providers

TARGET_OVERHEAD = 1.10
TARGET_SHARE = 0.90


# -- (a) overhead -----------------------------------------------------------------------------

async def overhead(guard: Guard, pairs: list[tuple[str, str]], repeats: int) -> str:
    scorer: OnnxScorer = guard.scorer  # type: ignore[assignment]
    session, names = scorer.session, scorer.input_names
    feeds = []
    for p, r in pairs:
        (ws,) = scorer.encoder.windows([p], [r], scorer.max_tokens)
        feeds.append({k: v for k, v in scorer.encoder.pad(ws).items() if k in names})
    import onnxruntime as ort

    opts = ort.SessionOptions()  # default threads, but no spinning: idle spinners would count in CPU time
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    default_threads = ort.InferenceSession(str(scorer.spec.path / "model.onnx"), opts, providers=scorer.providers)
    from tokenizers import Tokenizer

    plain_tok = Tokenizer.from_file(str(scorer.spec.path / "tokenizer.json"))  # what a bare user would write
    plain_tok.enable_truncation(scorer.spec.max_length)
    plain_tok.no_padding()
    bare, bare_default, guard_t, tokenize, bare_cpu, guard_cpu, prepare = [], [], [], [], [], [], []
    bare_tok = []
    for p, r in pairs[:8]:  # warm up both paths
        await guard.check_output(p, r)
    for rep in range(repeats):
        for i, ((p, r), feed) in enumerate(zip(pairs, feeds)):
            def run_bare(feed: dict = feed) -> None:
                t, c = time.perf_counter(), time.process_time()
                session.run(None, feed)
                bare.append(time.perf_counter() - t)
                bare_cpu.append(time.process_time() - c)
            if (i + rep) % 2:
                run_bare()
            t, c = time.perf_counter(), time.process_time()
            await guard.check_output(p, r)
            guard_t.append(time.perf_counter() - t)
            guard_cpu.append(time.process_time() - c)
            if not (i + rep) % 2:
                run_bare()
            t = time.perf_counter()
            default_threads.run(None, feed)
            bare_default.append(time.perf_counter() - t)
            t = time.perf_counter()
            enc = plain_tok.encode(p, r)
            session.run(None, {k: np.array([v], dtype=np.int64) for k, v in
                               (("input_ids", enc.ids), ("attention_mask", enc.attention_mask),
                                ("token_type_ids", enc.type_ids)) if k in names})
            bare_tok.append(time.perf_counter() - t)
            t = time.process_time()
            p2, r2 = scorer.prepare(p), scorer.prepare(r)
            prepare.append(time.process_time() - t)
            t = time.process_time()
            (ws,) = scorer.encoder.windows([p2], [r2], scorer.max_tokens)
            scorer.encoder.pad(ws)
            tokenize.append(time.process_time() - t)
    # The same work in sequential blocks: each path runs all exchanges in turn, so neither evicts
    # the other's caches between calls (interleaving does, when the guard's run lands on the other core).
    block_bare, block_guard = [], []
    for _ in range(repeats + 2):
        t = time.perf_counter()
        for feed in feeds:
            session.run(None, feed)
        block_bare.append(time.perf_counter() - t)
        t = time.perf_counter()
        for p, r in pairs:
            await guard.check_output(p, r)
        block_guard.append(time.perf_counter() - t)
    block_ratio = median(block_guard) / median(block_bare)
    b50, g50 = median(bare), median(guard_t)
    per_pair = [g / b for g, b in zip(guard_t, bare)]
    ratio = g50 / b50
    tokens = [int(f["attention_mask"].sum()) for f in feeds]
    cpu_ratio = median(guard_cpu) / median(bare_cpu)
    rows = [
        ["bare `session.run` (the guard's session, same feed)", b50 * 1e3, pct(bare, 99) * 1e3, "1.00",
         median(bare_cpu) * 1e3, "1.00"],
        ["`await guard.check_output(p, r)`", g50 * 1e3, pct(guard_t, 99) * 1e3, f"{ratio:.3f}",
         median(guard_cpu) * 1e3, f"{cpu_ratio:.3f}"],
        ["of which preparing the text (`OnnxScorer.prepare`: cap, normalize)", "-", "-", "-",
         median(prepare) * 1e3, f"{median(prepare) / median(bare_cpu):.3f}"],
        ["of which tokenizing (`Encoder.windows`, `pad`)", "-", "-", "-",
         median(tokenize) * 1e3, f"{median(tokenize) / median(bare_cpu):.3f}"],
        ["bare `tokenizers` encode + `session.run` (what code without a guard does)", median(bare_tok) * 1e3,
         pct(bare_tok, 99) * 1e3, f"{median(bare_tok) / b50:.3f}", "-", "-"],
        ["bare `session.run`, a default-threads session, no spinning (for reference)", median(bare_default) * 1e3,
         pct(bare_default, 99) * 1e3, f"{median(bare_default) / b50:.3f}", "-", "-"],
    ]
    verdict = "meets" if ratio <= TARGET_OVERHEAD else "MISSES"
    block_verdict = "meets" if block_ratio <= TARGET_OVERHEAD else "MISSES"
    tok_ratio = g50 / median(bare_tok)
    tok_verdict = "meets" if tok_ratio <= TARGET_OVERHEAD else "MISSES"
    return (f"## (a) Guard overhead, one request at a time\n\n"
            f"{len(pairs)} exchanges (median {int(np.median(tokens))} tokens, max {max(tokens)}), "
            f"{repeats} passes, guard and bare call interleaved per exchange, alternating which goes first.\n\n"
            + table(["path", "p50 ms", "p99 ms", "p50 / bare p50", "CPU ms (p50)", "CPU / bare CPU"], rows)
            + f"\n\nGuard p50 / bare p50 = **{ratio:.3f}** in wall time (median of per-exchange ratios "
            f"{median(per_pair):.3f}) and **{cpu_ratio:.3f}** in CPU time (all the process's threads); target "
            f"<= {TARGET_OVERHEAD:.2f}: {verdict} in wall time. The guard adds {(g50 - b50) * 1e3:.2f} ms of wall "
            f"time per request; normalizing the text is {median(prepare) * 1e3:.2f} ms of CPU of it and "
            f"tokenizing {median(tokenize) * 1e3:.2f} ms (the bare call is handed tokens). Against bare code that "
            f"tokenizes too, guard p50 / bare p50 = **{tok_ratio:.3f}**: {tok_verdict}. In sequential blocks "
            f"(all exchanges through one path, then the other; {repeats + 2} blocks, medians) guard / bare = "
            f"**{block_ratio:.3f}**: {block_verdict}. This is how an application calls the guard, one request "
            "after another; interleaving guard and bare calls per exchange adds a cost of its own, since the "
            "guard's model run happens on a worker thread, often on the other core, and the two paths evict "
            "each other's caches. Wall time also holds two "
            "thread hand-offs (event loop to a scoring worker and back), each of which waits for a core when the "
            "machine is busy; CPU time does not.\n\n"
            + await machinery(scorer.labels, pairs * 4, repeats))


class _InstantScorer:
    """Returns fixed scores at once: what is left to time is the guard's own machinery."""

    def __init__(self, labels: tuple[str, ...]) -> None:
        self.labels = labels
        self._row = {k: 0.01 for k in labels}

    def score(self, exchanges):
        return [dict(self._row) for _ in exchanges]


async def machinery(labels: tuple[str, ...], pairs: list[tuple[str, str]], repeats: int) -> str:
    """Per-request cost of the guard with a scorer that costs nothing (threads, decision, audit record)."""
    guard = Guard(scorer=_InstantScorer(labels))
    rows = []
    try:
        await guard_closed_loop(guard, pairs, 1)
        for clients in (1, 32):
            walls = [(await guard_closed_loop(guard, pairs, clients))[0] for _ in range(repeats)]
            rows.append([f"guard with an instant scorer, {clients} concurrent client{'s' * (clients > 1)}",
                         median(walls) / len(pairs) * 1e6, len(pairs) / median(walls)])
    finally:
        guard.close()
    return (table(["path", "us per request", "requests/s"], [[a, round(b), round(c)] for a, b, c in rows])
            + "\n\nThis is the whole of the guard's own cost per request (hand-off to the scoring threads and "
            "back, decision, audit record), measured without a model so the machine's noise barely touches it.\n")


# -- (b) throughput ---------------------------------------------------------------------------

async def throughput(guard: Guard, pairs: list[tuple[str, str]], levels: list[int], repeats: int,
                     plain: Guard | None = None) -> str:
    """``plain``: the same guard with ``normalize: false``, run at 32 clients to show what normalizing costs."""
    scorer: OnnxScorer = guard.scorer  # type: ignore[assignment]
    plans = bare_plans(scorer)
    for plan in plans:  # warm up
        plan.run(pairs[:64])
    await guard_closed_loop(guard, pairs[:64], 8)
    bare_t: dict[str, list[float]] = {p.label: [] for p in plans}
    guard_t: dict[int, list[float]] = {n: [] for n in levels}
    lat: dict[int, list[float]] = {n: [] for n in levels}
    batches: dict[int, list[int]] = {n: [] for n in levels}
    cpu: dict = {k: [] for k in [*bare_t, *levels]}  # process CPU seconds per measurement
    jobs = [("bare", p) for p in plans] + [("guard", n) for n in levels] + ([("plain", 32)] if plain else [])
    plain_t: list[float] = []
    for rep in range(repeats):
        for kind, what in jobs[rep % len(jobs):] + jobs[:rep % len(jobs)]:  # rotate the order each pass
            cpu0 = time.process_time()
            if kind == "plain":
                wall, _ = await guard_closed_loop(plain, pairs, what)
                plain_t.append(wall)
                cpu.setdefault("plain", []).append(time.process_time() - cpu0)
                continue
            if kind == "bare":
                bare_t[what.label].append(what.run(pairs))
                cpu[what.label].append(time.process_time() - cpu0)
            else:
                before = guard._batcher.batches_run
                wall, lats = await guard_closed_loop(guard, pairs, what)
                cpu[what].append(time.process_time() - cpu0)
                guard_t[what].append(wall)
                lat[what] += lats
                batches[what].append(guard._batcher.batches_run - before)
            print(f"  pass {rep + 1}/{repeats}: {kind} {what if kind == 'guard' else what.label}: "
                  f"{len(pairs) / (bare_t[what.label][-1] if kind == 'bare' else guard_t[what][-1]):.1f} ex/s",
                  file=sys.stderr)
    n = len(pairs)
    best_label = min(bare_t, key=lambda k: median(bare_t[k]))
    best = n / median(bare_t[best_label])

    def share(ts: list[float]) -> float:  # median over passes of (this / best bare in the same pass)
        return median([b / t for t, b in zip(ts, bare_t[best_label])])

    def cpu_ms(key: object) -> float:
        return median(cpu[key]) / n * 1e3

    rows = [[label, n / median(ts), "-", "-", "-", cpu_ms(label), f"{n / median(ts) / best:.2f}",
             f"{share(ts):.2f}"] for label, ts in bare_t.items()]
    for c in levels:
        xs = n / median(guard_t[c])
        rows.append([f"guard, {c} concurrent client{'s' * (c > 1)}", xs, pct(lat[c], 50) * 1e3,
                     pct(lat[c], 99) * 1e3, f"{n / median(batches[c]):.1f}", cpu_ms(c), f"{xs / best:.2f}",
                     f"{share(guard_t[c]):.2f}"])
    if plain_t:
        rows.append(["guard, 32 concurrent clients, `normalize: false`", n / median(plain_t), "-", "-", "-",
                     cpu_ms("plain"), f"{n / median(plain_t) / best:.2f}", f"{share(plain_t):.2f}"])
    share32 = share(guard_t[32]) if 32 in guard_t else None
    verdict = "" if share32 is None else (
        f"\n\nAt 32 concurrent clients the guard reaches **{share32:.0%}** of the best bare plan "
        f"({best_label.removeprefix('bare: ')}; median over passes of the ratio within a pass, which is "
        f"steadier than the ratio of medians on a shared machine); target >= {TARGET_SHARE:.0%}: "
        f"{'meets' if share32 >= TARGET_SHARE else 'MISSES'}.")
    p = guard.plan
    return (f"## (b) Throughput under concurrency\n\n"
            f"{n} exchanges per measurement, {repeats} passes, the order of the measurements rotated each pass. "
            f"Guard plan: {p.workers} workers, batches of up to {p.batch_size}, {p.threads} intra-op thread(s) "
            f"per run, provider {scorer.providers[0]}. Bare plans know every exchange up front and sort all "
            "windows by token length; their time includes tokenizing. CPU ms / exchange is the process's CPU "
            "time (all threads) per exchange: less exposed to the other jobs on the machine than wall time, "
            "though onnxruntime's spinning worker threads (default-threads sessions) count in it.\n\n"
            + table(["plan", "exchanges/s", "p50 ms", "p99 ms", "mean batch", "CPU ms / exchange", "vs best bare",
                     "vs best bare, per pass"], rows)
            + verdict + "\n")


# -- (c) memory -------------------------------------------------------------------------------

_MEMORY_PROBE = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
what, model, pairs = sys.argv[2], sys.argv[3], json.load(open(sys.argv[4]))
if what.startswith("guard"):
    from beaverguard import Guard, Policy
    g = Guard(Policy.model_validate({"execution": json.loads(sys.argv[5])}), model=model)
    for p, r in pairs:
        g.check_output_sync(p, r)
    g.close()
elif what == "bare":
    import numpy as np, onnxruntime as ort
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(model + "/tokenizer.json")
    tok.enable_truncation(max_length=256)
    s = ort.InferenceSession(model + "/model.onnx", providers=["CPUExecutionProvider"])
    for p, r in pairs:
        e = tok.encode(p, r)
        s.run(None, {"input_ids": np.array([e.ids]), "attention_mask": np.array([e.attention_mask]),
                     "token_type_ids": np.array([e.type_ids])})
elif what == "import":
    import beaverguard
# VmHWM, not ru_maxrss: the latter keeps the parent's high-water mark across fork and exec.
print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")))
"""


def memory(model: Path, pairs: list[tuple[str, str]]) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(pairs, f)
    rows = []
    try:
        # The two guards with less say where a default guard's memory goes: the second session of lone runs
        # (`threads` set: none), and the word lists that normalizing and decoding read.
        for what, execution, label in [
                ("import", {}, "`import beaverguard` only"),
                ("bare", {}, "bare onnxruntime session + tokenizers, same model, same exchanges"),
                ("guard", {}, "`Guard()` with the default model, after scoring"),
                ("guard", {"threads": 1}, "the same, `execution: {threads: 1}` (no wide session)"),
                ("guard", {"threads": 1, "normalize": False, "decode": False},
                 "the same, `execution: {threads: 1, normalize: false, decode: false}` (no word lists)")]:
            out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(ROOT / "src"), what, str(model), f.name,
                                  json.dumps(execution)], capture_output=True, text=True, check=True).stdout
            rows.append([label, int(out.split()[-1]) / 1024])
    finally:
        os.unlink(f.name)
    return (f"## (c) Memory\n\nPeak RSS (`VmHWM`) of a fresh Python process, after scoring {len(pairs)} "
            "exchanges one by one (sync API, so only the guard's own threads run).\n\n"
            + table(["process", "peak RSS MB"], [[a, round(b, 1)] for a, b in rows]) + "\n")


# -- main -------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR, help="model directory (default: shipped int8)")
    ap.add_argument("--data", type=Path, default=None, help="JSON Lines of prompt/response rows")
    ap.add_argument("--provider", choices=["cpu", "cuda", "auto"], default="cpu")
    ap.add_argument("--only", default="overhead,throughput,memory", help="comma-separated parts to run")
    ap.add_argument("--concurrency", default="1,8,32,128")
    ap.add_argument("-n", type=int, default=256, help="exchanges per throughput measurement")
    ap.add_argument("--overhead-n", type=int, default=64, help="exchanges in the overhead part")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--name", default="guard", help="results/<name>.md")
    args = ap.parse_args()
    kw = {"path": args.data} if args.data else {}
    parts = set(args.only.split(","))
    if args.provider == "cuda" and "CUDAExecutionProvider" not in _providers("auto"):
        sys.exit("CUDAExecutionProvider is not available (install onnxruntime-gpu)")
    sections = []
    guard = make_guard(args.model, args.provider) if parts & {"overhead", "throughput"} else None
    if "overhead" in parts:
        sections.append(asyncio.run(overhead(guard, load_pairs(args.overhead_n, **kw), args.repeats)))
        print(sections[-1])
    if "throughput" in parts:
        levels = [int(c) for c in args.concurrency.split(",")]
        plain = make_guard(args.model, args.provider, normalize=False) if 32 in levels else None
        sections.append(asyncio.run(throughput(guard, load_pairs(args.n, **kw), levels, args.repeats, plain)))
        if plain is not None:
            plain.close()
        print(sections[-1])
    if "memory" in parts:
        sections.append(memory(args.model, load_pairs(64, **kw)))
    if guard is not None:
        guard.close()
    report(args.name, "Guard overhead, throughput and memory", "\n".join(sections))


if __name__ == "__main__":
    main()
