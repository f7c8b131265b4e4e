"""What Ray costs here: rows/s of the local engine vs Ray Data with 1 and 2 actors, and the remote scorer's overhead.

One run measures, on the same rows and the default model:

1. batch scoring: ``beaverguard score`` (local engine, in this process, every core)
   against ``score --engine ray`` (``beaverguard.ray.score_files``) with 1 and 2
   actors of 1 CPU each, on a local 2-CPU cluster started once (its start-up is
   reported apart). Each figure is wall time from the command's start to its
   output written, model loading included: what a user waits for.
2. the remote scorer: sequential checks through ``Guard(scorer=RemoteScorer(url))``
   against a ``beaverguard serve`` in another process and against a 1-replica Ray
   Serve tier, vs a local guard: the median per check and the difference (the
   overhead of HTTP, JSON and, for Serve, its proxy). Then 256 concurrent checks,
   to show batching on the wire (HTTP requests sent per check).

    python benchmarks/bench_ray.py            # ~5 minutes on 2 cores
    python benchmarks/bench_ray.py --rows 300 --repeats 1   # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, load_pairs, median, report, table

SRC = str(ROOT / "src")


def _write_rows(path: Path, n: int) -> None:
    pairs = load_pairs(n)
    with open(path, "w", encoding="utf-8") as f:
        for i, (p, r) in enumerate(pairs):  # one row in four is a prompt alone (input rail)
            f.write(json.dumps({"prompt": p, "response": None if i % 4 == 3 else r}, ensure_ascii=False) + "\n")


def _local(src: Path, out: Path) -> float:
    from beaverguard.cli import main

    start = time.perf_counter()
    assert main(["score", "--input", str(src), "--output", str(out), "--quiet"]) == 0
    return time.perf_counter() - start


def _ray(src: Path, out: Path, actors: int) -> float:
    from beaverguard.ray import score_files

    start = time.perf_counter()
    score_files(str(src), str(out), actors=actors, shard_bytes=256 << 10)
    return time.perf_counter() - start


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def _latency(guard, prompts: list[str]) -> float:
    """Median milliseconds of one check, sequential."""
    times = []
    for p in prompts:
        start = time.perf_counter()
        d = guard.check_input_sync(p)
        times.append((time.perf_counter() - start) * 1000)
        assert d.error is None, d.error
    return median(times)


def _burst(guard, prompts: list[str]) -> float:
    """Checks per second of ``len(prompts)`` concurrent checks."""
    async def run() -> None:
        await asyncio.gather(*(guard.check_input(p) for p in prompts))

    start = time.perf_counter()
    asyncio.run(run())
    return len(prompts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000, help="rows of the batch job (default 1000)")
    parser.add_argument("--checks", type=int, default=200, help="sequential checks per remote scorer (default 200)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats of the batch figures")
    args = parser.parse_args()

    import ray
    from ray import serve

    from beaverguard import Guard
    from beaverguard.ray.serve import scoring_app
    from beaverguard.remote import RemoteScorer

    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    src = tmp / "rows.jsonl"
    _write_rows(src, args.rows)
    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": SRC}})
    ray_start = time.perf_counter() - start
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False

    runs: dict[str, list[float]] = {"local": [], "ray, 1 actor": [], "ray, 2 actors": []}
    for rep in range(args.repeats):
        runs["local"].append(_local(src, tmp / f"local-{rep}.jsonl"))
        runs["ray, 1 actor"].append(_ray(src, tmp / f"ray1-{rep}", 1))
        runs["ray, 2 actors"].append(_ray(src, tmp / f"ray2-{rep}", 2))
    local_rate = args.rows / median(runs["local"])
    batch_rows = [[name, f"{median(t):.1f}", args.rows / median(t), f"{args.rows / median(t) / local_rate:.2f}x"]
                  for name, t in runs.items()]

    # -- the remote scorer ------------------------------------------------------------------
    pairs = load_pairs(args.checks + 256, seed=7)
    prompts, burst = [p for p, _ in pairs[:args.checks]], [p for p, _ in pairs[args.checks:]]
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "beaverguard.cli", "serve", "--upstream", "http://127.0.0.1:9/v1",
                               "--port", str(port), "--log-level", "warning"],
                              env={**os.environ, "PYTHONPATH": SRC}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    serve_port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": serve_port})
    serve.run(scoring_app(num_replicas=1, num_cpus=1), name="beaverguard", route_prefix="/")
    quiet = {"audit": {"log": False}}
    try:
        plain, tier = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{serve_port}"
        _wait(plain)
        _wait(tier)
        from beaverguard import parse_policy

        policy = parse_policy(json.dumps(quiet))
        local = Guard(policy)
        guards = {"local guard": (local, None)}
        for name, url in (("RemoteScorer -> beaverguard serve", plain),
                          ("RemoteScorer -> Ray Serve (1 replica)", tier)):
            scorer = RemoteScorer(url)
            guards[name] = (Guard(policy, scorer=scorer), scorer)
        for g, _ in guards.values():  # warm-up: sessions, connections
            _latency(g, prompts[:10])
        lat = {name: [] for name in guards}
        for _ in range(2):  # interleaved
            for name, (g, _) in guards.items():
                lat[name].append(_latency(g, prompts))
        rates, requests = {}, {}
        for name, (g, scorer) in guards.items():
            before = scorer.requests if scorer else 0
            rates[name] = _burst(g, burst)
            requests[name] = (scorer.requests - before) if scorer else None
        base = median(lat["local guard"])
        remote_rows = [[name, f"{median(v):.1f}", "-" if name == "local guard" else f"+{median(v) - base:.1f}",
                        f"{rates[name]:.0f}", "-" if requests[name] is None else f"{requests[name]} for 256"]
                       for name, v in lat.items()]
        for g, scorer in guards.values():
            g.close()
            if scorer:
                scorer.close()
    finally:
        server.terminate()
        server.wait(10)
        serve.shutdown()
        ray.shutdown()

    per_core = max(local_rate, args.rows / median(runs["ray, 2 actors"])) / (os.cpu_count() or 1)
    import shutil

    gpu = "no GPU" if shutil.which("nvidia-smi") is None else "a GPU present, unused (every actor here is a CPU actor)"
    body = "\n".join([
        f"This machine: {os.cpu_count()} cores, {gpu}; the cluster, the driver, the server and the client "
        "share them.", "",
        f"{args.rows} rows (BeaverTails test-half QA pairs, one in four a prompt alone), the default int8 model, "
        f"{args.repeats} interleaved repeats (median). Ray: a local cluster of 2 CPUs, started once in "
        f"{ray_start:.1f} s (not in the figures); each actor reserves 1 CPU and loads the model once; "
        "shards of 256 KiB. Wall time includes loading the model and writing the output.", "",
        "## Batch scoring: rows/s", "",
        table(["engine", "wall s", "rows/s", "vs local"], batch_rows), "",
        f"About {per_core:.0f} rows/s per core on this machine, the best of the two engines.", "",
        "## Remote scorer: per check, sequential, and 256 concurrent checks", "",
        f"Median of {args.checks} sequential input-rail checks (2 interleaved rounds), the server on the same "
        "2 cores; then 256 checks at once (asyncio.gather).", "",
        table(["scorer", "ms per check", "overhead ms", "checks/s (256 at once)", "HTTP requests"], remote_rows),
    ])
    report("ray", "beaverguard on Ray: batch rows/s (local vs Ray Data) and the remote scorer's overhead", body,
           packages=("ray", "pyarrow", "httpx"))


if __name__ == "__main__":
    main()
