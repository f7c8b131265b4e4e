"""How fast does ``beaverguard train`` run on this CPU, and how much does the memory allocator cost?

A long CPU training run here slowed from ~1.1 to ~1.9 s per step, with tens of thousands of
minor page faults a second and half its CPU time in the kernel. The cause is the allocator:
each step allocates and frees activations of tens of megabytes; glibc's malloc hands blocks that
large back to the kernel (``munmap``) on free, so the next step faults every page in again.
jemalloc told never to return freed memory (``MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1``)
keeps them mapped; its cache then grows (a 3-epoch run ran out of 24 GiB in its second hour), so the
trainer purges it every ``PURGE_EVERY`` steps (``training.train.release_cached_memory``).

This runs the same short training job (``beaverguard train`` on a fixed sample, one epoch, bf16
where supported, both cores) once per allocator setting, interleaved over ``--repeats``, each in
its own process, and reports training rows per second, minor page faults per row, the share of
CPU time spent in the kernel and the peak memory. Needs the ``train`` extra; jemalloc from ``apt-get install libjemalloc2``
(the jemalloc rows are skipped, with a note, where it is not found).

    python benchmarks/bench_train.py [--rows 3200] [--repeats 2] [--data FILE.jsonl]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, median, report, table

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "pku_saferlhf_sample.jsonl"
NO_DECAY = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
TRAIN = "import sys; from beaverguard.cli import main; sys.exit(main())"


def find_jemalloc() -> str | None:
    """The jemalloc shared library, where the system has one."""
    for pattern in ("/usr/lib/*/libjemalloc.so.2", "/usr/lib/libjemalloc.so.2", "/usr/local/lib/libjemalloc.so.2"):
        hits = sorted(glob.glob(pattern))
        if hits:
            return hits[0]
    return None


def settings(jemalloc: str | None) -> dict[str, dict[str, str]]:
    """Allocator settings to compare, as environment variables for the training process."""
    out = {"glibc malloc (default)": {}}
    if jemalloc:
        out["jemalloc, default decay"] = {"LD_PRELOAD": jemalloc}
        out[f"jemalloc, MALLOC_CONF={NO_DECAY}"] = {"LD_PRELOAD": jemalloc, "MALLOC_CONF": NO_DECAY}
    return out


def run_once(env: dict[str, str], args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    """One short training run in a fresh process: rows/s from its report, faults and kernel time from rusage."""
    out = Path(tempfile.mkdtemp(dir=workdir))
    cmd = [sys.executable, "-c", TRAIN, "train", "--data", str(args.data), "--out", str(out),
           "--limit", str(args.rows * 2), "--train-limit", str(args.rows), "--epochs", "1",
           "--threads", str(args.threads), "--refusals", "0", "--save-every", "100000"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:  # the child's own peak (RUSAGE_CHILDREN's is the largest of all children)
        try:
            peak = max(peak, next(int(line.split()[1]) for line in open(f"/proc/{proc.pid}/status")
                                  if line.startswith("VmHWM")))
        except (OSError, StopIteration):
            pass
        time.sleep(0.5)
    if proc.returncode:
        sys.exit(f"training failed ({proc.returncode}): {' '.join(cmd)}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    rep = json.loads((out / "train_report.json").read_text())
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    return {"rows_s": rep["train_examples_per_s"], "faults_row": (after.ru_minflt - before.ru_minflt) / rep["train_rows"],
            "kernel": system / (user + system), "peak_gb": peak / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="labelled JSON Lines rows to train on")
    ap.add_argument("--rows", type=int, default=3200, help="training rows per run (batches of 32)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if not args.data.is_file():
        sys.exit(f"{args.data} not found: pass --data with labelled JSON Lines rows (the shared layout)")
    jemalloc = find_jemalloc()
    runs = settings(jemalloc)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        for repeat in range(args.repeats):
            for name, env in runs.items():
                results[name].append(run_once(env, args, Path(tmp)))
                print(f"repeat {repeat + 1}: {name}: {results[name][-1]}", flush=True)
    base = median([r["rows_s"] for r in results["glibc malloc (default)"]])
    rows = [[name, f"{median([r['rows_s'] for r in rs]):.1f}", f"{median([r['rows_s'] for r in rs]) / base:.2f}x",
             f"{median([r['faults_row'] for r in rs]):,.0f}", f"{median([r['kernel'] for r in rs]):.0%}",
             f"{max(r['peak_gb'] for r in rs):.1f}"]
            for name, rs in results.items()]
    body = table(["allocator", "training rows/s", "vs glibc", "minor page faults per row (whole process)",
                  "CPU time in kernel", "peak memory, GB"], rows)
    body += (f"\n\n{args.rows} rows of `{args.data.name}`, one epoch, batch 32, {args.threads} torch threads, "
             f"bf16 autocast where supported; medians of {args.repeats} interleaved runs, each its own process.\n")
    if not jemalloc:
        body += "\njemalloc was not found (`apt-get install libjemalloc2`): only glibc was measured.\n"
    report("train_speed", "Training speed and the memory allocator", body, packages=("torch",))


if __name__ == "__main__":
    main()
