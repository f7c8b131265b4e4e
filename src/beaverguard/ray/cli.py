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
    except Exception as exc:
        cause = _user_error(exc)
        if cause is None:
            raise
        print(f"beaverguard score: {cause}", file=sys.stderr)
        return 2
    finally:
        if started:
            ray.shutdown()
    if not args.quiet:
        print(f"{result.rows_written} rows written in {result.shards - result.skipped} shards to {result.output} "
              f"({result.skipped} of {result.shards} shards were already written)", file=sys.stderr)
    return 0


def _user_error(exc: BaseException) -> ValueError | None:
    """The ValueError (a bad row, path or output directory) behind ``exc``, also when a worker raised it.

    Ray wraps an error raised on a worker (``RayTaskError(ValueError)``, the original
    in its ``cause``); a user gets that one line, not the stack of wrappers.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if type(exc) is ValueError:
            return exc
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__  # RayTaskError keeps it in .cause
    return None
