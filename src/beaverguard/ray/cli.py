"""``beaverguard score --engine ray``: join or start a Ray cluster, run the resumable job, report."""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["run_score"]


def run_score(args: argparse.Namespace) -> int:
    import ray
    from ray.data import DataContext
    from tqdm import tqdm

    from beaverguard.ray.job import score_files

    if args.output == "-":
        print("beaverguard score --engine ray writes shards: give --output a directory", file=sys.stderr)
        return 2
    started = not ray.is_initialized()
    if started:
        address = args.ray_address or os.environ.get("RAY_ADDRESS")
        # a cluster of our own only when none is named: its dashboard is not wanted on a laptop
        ray.init(address=address, **({} if address else {"include_dashboard": False}), log_to_driver=False)
    DataContext.get_current().enable_progress_bars = not args.quiet
    try:
        with tqdm(desc="shards", unit="shard", disable=args.quiet) as bar:
            scored = [0]

            def progress(shards: int, rows: int) -> None:
                scored[0] += rows
                bar.set_postfix(rows=scored[0], refresh=False)
                bar.update(shards)

            result = score_files(args.input, args.output, policy=args.policy, model=args.model, actors=args.actors,
                                 cpus_per_actor=args.cpus_per_actor, gpus_per_actor=args.gpus_per_actor,
                                 batch_size=args.batch_size, shard_bytes=max(1, int(args.shard_mb * 2**20)),
                                 progress=progress)
    except ValueError as exc:  # bad rows or paths, also when raised on a worker (Ray re-raises them as such)
        print(f"beaverguard score: {str(exc).strip().splitlines()[-1]}", file=sys.stderr)
        return 2
    finally:
        if started:
            ray.shutdown()
    if not args.quiet:
        print(f"{result.rows_written} rows written in {result.shards - result.skipped} shards to {result.output} "
              f"({result.skipped} of {result.shards} shards were already written)", file=sys.stderr)
    return 0
