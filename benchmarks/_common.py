"""What every benchmark shares: the inputs, the timers, the report, and the bare plans.

Inputs are rows of the BeaverTails 30k test half (QA pairs) drawn with a fixed
seed, so every script and every run scores the same exchanges. Reports go to
``benchmarks/results/<name>.md`` with the machine, the date, the command and
the versions, because a figure without them cannot be compared.

The guard is judged against bare onnxruntime plans written by hand (``BarePlan``):
the benchmarks that compare against them share one definition, so "the best bare
plan" means the same in every result file.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import random
import shlex
import statistics
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "beavertails_30k_test_half.jsonl"
DEFAULT_MODEL_DIR = ROOT / "onnx_models" / "beaverguard-minilm-l6-v3-int8"
SEED = 20261127

NOISE_NOTE = (
    "The machine was shared with other jobs while this ran, so absolute figures are noisy (+-15% "
    "between runs is usual). Compare the ratios, which come from one process, the same inputs and "
    "interleaved repeats; each figure is the median of the repeats.")

sys.path.insert(0, str(ROOT / "src"))  # run from a source checkout without installing
_START_LOAD = os.getloadavg()


def load_pairs(n: int, *, path: Path = DEFAULT_DATA, seed: int = SEED) -> list[tuple[str, str]]:
    """``n`` (prompt, response) pairs drawn with a fixed seed (with replacement past the file's size)."""
    if not path.is_file():
        sys.exit(f"{path} not found: pass --data with a JSON Lines file of prompt/response rows "
                 "(the BeaverTails 30k_test split in the shared layout)")
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                if r.get("response"):
                    rows.append((r["prompt"], r["response"]))
    rng = random.Random(seed)
    return rng.sample(rows, n) if n <= len(rows) else [rng.choice(rows) for _ in range(n)]


def pct(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), nearest rank."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (also readable printed)."""
    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> str:
    """One paragraph about the machine: CPU model, cores, SIMD, memory, load."""
    info = {}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            info[key.strip()] = value.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    flags = set(info.get("Flags", "").split())
    simd = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(next(line.split()[1] for line in f if line.startswith("MemTotal")))
        mem = f", {kb / 1024 / 1024:.1f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    load = " ".join(f"{x:.2f}" for x in _START_LOAD)
    return (f"{info.get('Model name', platform.processor() or 'unknown CPU')}, "
            f"nproc={os.cpu_count()}, {info.get('Hypervisor vendor', 'bare metal')} "
            f"{'VM' if 'Hypervisor vendor' in info else ''}, SIMD: {', '.join(simd) or 'none'}{mem}; "
            f"load average at start: {load}")


def versions(*names: str) -> str:
    found = [f"python {platform.python_version()}"]
    try:
        import beaverguard

        found.append(f"beaverguard {beaverguard.__version__}")
    except ImportError:
        pass
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return ", ".join(found)


def command() -> str:
    exe = sys.executable
    try:
        exe = os.path.relpath(exe, ROOT)
    except ValueError:
        pass
    return " ".join(shlex.quote(a) for a in [exe, os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])


def report(name: str, title: str, body: str, *, packages: Sequence[str] = ()) -> Path:
    """Write ``results/<name>.md`` with the context every figure needs, and print the body."""
    print(body)
    RESULTS.mkdir(parents=True, exist_ok=True)
    head = "\n".join([
        f"# {title}", "",
        f"- date: {_dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- command (from the repository root): `{command()}`",
        f"- machine: {machine()}",
        f"- versions: {versions('onnxruntime', 'tokenizers', 'numpy', *packages)}",
        f"- note: {NOISE_NOTE}", "", ""])
    path = RESULTS / f"{name}.md"
    path.write_text(head + body.rstrip() + "\n", encoding="utf-8")
    print(f"\nwrote {path.relative_to(ROOT)}")
    return path


# -- the guard and the bare plans it is measured against ----------------------------------------
# (below the sys.path line above: beaverguard comes from this checkout's src/)

import asyncio  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from beaverguard import Guard, Policy  # noqa: E402
from beaverguard._model import OnnxScorer  # noqa: E402


def make_guard(model: Path, provider: str, normalize: bool = True, decode: bool = True,
               answer_alone: bool = False) -> Guard:
    """The default policy but for the provider, and a timeout long enough that no check times out.

    On a shared 2-core machine, 128 queued checks can take longer than the default 5 s;
    a timed-out check would be a decision without scoring and flatter the throughput.
    ``answer_alone`` is off unless asked for: the bare plans score each pair once, and
    the default policy's second window per response (``execution.answer_alone``) is
    measured apart, as its own row.
    """
    execution = {"provider": provider, "normalize": normalize, "decode": decode, "answer_alone": answer_alone}
    return Guard(Policy.model_validate({"execution": execution,
                                        "timeout_s": 300}), model=model)



async def guard_closed_loop(guard: Guard, pairs: list[tuple[str, str]], clients: int) -> tuple[float, list[float]]:
    todo = iter(range(len(pairs)))
    latencies: list[float] = []

    async def client() -> None:
        for i in todo:  # one shared iterator: each exchange is taken once
            t = time.perf_counter()
            decision = await guard.check_output(*pairs[i])
            latencies.append(time.perf_counter() - t)
            if decision.error:  # a timed-out check would flatter the throughput
                raise RuntimeError(f"check failed under load: {decision.error}")

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - t0, latencies


class BarePlan:
    """Hand-scheduled scoring: all exchanges known up front, windows sorted by token length."""

    def __init__(self, label: str, scorer: OnnxScorer, runners: int, threads: int, batch: int,
                 config: dict[str, str] | None = None) -> None:
        import onnxruntime as ort

        self.label, self.scorer, self.batch = label, scorer, batch
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        for key, value in (config or {}).items():  # session config entries, e.g. session.force_spinning_stop
            opts.add_session_config_entry(key, value)
        self.sessions = [ort.InferenceSession(str(scorer.spec.path / "model.onnx"), opts,
                                              providers=scorer.providers) for _ in range(runners)]

    def run(self, pairs: list[tuple[str, str]]) -> float:
        enc, names = self.scorer.encoder, self.scorer.input_names
        t0 = time.perf_counter()
        per = enc.windows([p for p, _ in pairs], [r for _, r in pairs], self.scorer.max_tokens)
        windows = [w for ws in per for w in ws]
        order = sorted(range(len(windows)), key=lambda i: len(windows[i][0]))
        batches = [order[s:s + self.batch] for s in range(0, len(order), self.batch)]
        out = np.empty((len(windows), len(self.scorer.labels)), dtype=np.float32)
        take = iter(batches)
        lock = threading.Lock()

        def work(session) -> None:
            while True:
                with lock:
                    sel = next(take, None)
                if sel is None:
                    return
                feed = enc.pad([windows[i] for i in sel])
                logits = session.run(None, {k: v for k, v in feed.items() if k in names})[0]
                out[sel] = 1.0 / (1.0 + np.exp(-logits))

        if len(self.sessions) == 1:
            work(self.sessions[0])
        else:
            threads = [threading.Thread(target=work, args=(s,)) for s in self.sessions]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        return time.perf_counter() - t0


def bare_plans(scorer: OnnxScorer) -> list[BarePlan]:
    if scorer.on_gpu:
        return [BarePlan("bare: one session, sorted batches of 32", scorer, 1, 0, 32),
                BarePlan("bare: one session, sorted batches of 64", scorer, 1, 0, 64)]
    cores = os.cpu_count() or 1
    return [BarePlan("bare: one session (default threads), sorted batches of 32", scorer, 1, 0, 32),
            BarePlan(f"bare: {cores} single-threaded sessions on {cores} threads, sorted batches of 4",
                     scorer, cores, 1, 4),
            BarePlan(f"bare: {cores} single-threaded sessions on {cores} threads, one exchange per run",
                     scorer, cores, 1, 1)]
