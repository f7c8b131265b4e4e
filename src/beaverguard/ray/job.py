"""A resumable scoring job: input files in, a directory of scored shards out.

The output directory holds ``part-NNNNNN.jsonl`` (or ``.parquet``), one per
input shard, in row order, each followed by ``part-NNNNNN.done`` once it is
written whole, and ``_manifest.json`` (the input and the shard size), and
``_SUCCESS`` at the end. A part is written to a temporary name and moved into
place before its marker, which is written and moved the same way, so a job
killed at any moment leaves each shard either marked and complete, or unmarked,
to be written again (whole, over any remains) by the next run. A re-run scores only the unmarked shards: no row is
lost or written twice.

Rows are scored by the actor pool of :func:`beaverguard.ray.data.score_dataset`
and come back to the driver in order, which writes them: writing is cheap next
to scoring, and the driver is the one place that knows when a shard is whole.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from beaverguard._policy import Policy
from beaverguard.ray.data import score_dataset
from beaverguard.ray.shards import Format, Shard, filesystem, list_inputs, plan_shards, read_shard

__all__ = ["score_files", "JobResult", "MANIFEST", "SUCCESS"]

logger = logging.getLogger("beaverguard.ray")
MANIFEST, SUCCESS = "_manifest.json", "_SUCCESS"
_INTERNAL = ("_shard", "_row")
_MARKER = re.compile(r"part-(\d+)\.done")
_READER_CPUS = 0  # reading waits on storage: it must not wait for a CPU that the actors hold


@dataclass(frozen=True)
class JobResult:
    """What a run did: shards in the input, shards it skipped as already written, rows it wrote."""

    shards: int
    skipped: int
    rows_written: int
    output: str


def score_files(input: str, output: str, *, policy: Policy | str | Path | None = None,
                model: str | Path | None = None, actors: int = 1, cpus_per_actor: float = 1.0,
                gpus_per_actor: float = 0.0, batch_size: int = 64, shard_bytes: int = 8 << 20,
                progress: Callable[[int, int], None] | None = None) -> JobResult:
    """Score ``input`` (a file, a directory, a URI) into the directory ``output``, resuming a killed run.

    JSON Lines in gives JSON Lines out, each line the input row plus ``scores``,
    ``unsafe`` and ``flagged``, as ``beaverguard score`` writes it; Parquet in gives
    Parquet out with those three columns added. ``progress(shards, rows)`` is called
    after each shard is written. Ray must be initialised (``ray.init``) first.
    """
    import ray.data

    fs, files, fmt = list_inputs(input)
    shards = plan_shards(fs, files, fmt, shard_bytes)
    out_fs, out_dir = filesystem(output)
    out_fs.create_dir(out_dir, recursive=True)
    _check_manifest(out_fs, out_dir, {"input": [[f.path, f.size] for f in files], "format": fmt,
                                      "shard_bytes": shard_bytes, "shards": len(shards)})
    done = _done(out_fs, out_dir)
    pending = [s for s in shards if s.index not in done]
    logger.info("beaverguard score --engine ray: %d shards, %d already written", len(shards),
                len(shards) - len(pending))
    written = 0
    if pending:
        specs = ray.data.from_items([s.to_row() for s in pending], override_num_blocks=len(pending))
        # reading waits on storage, not a core: no CPU reserved, or readers would wait behind actors
        # that hold every CPU (and the actors for rows the readers have not read: a deadlock)
        rows = specs.map_batches(_read_shards, fn_args=(input,), batch_size=1, batch_format="pyarrow",
                                 num_cpus=_READER_CPUS)
        rows.context.execution_options.preserve_order = True
        scored = score_dataset(rows, policy=policy, model=model, actors=actors, cpus_per_actor=cpus_per_actor,
                               gpus_per_actor=gpus_per_actor, batch_size=batch_size)
        scored.context.raise_original_map_exception = True  # a bad row's ValueError, not Ray's wrapper of it
        writer = _ShardWriter(out_fs, out_dir, fmt, progress)
        for batch in scored.iter_batches(batch_format="pyarrow", batch_size=None):
            writer.add(batch)
        writer.finish([s.index for s in pending])
        written = writer.rows
    with out_fs.open_output_stream(f"{out_dir}/{SUCCESS}") as f:
        f.write(json.dumps({"shards": len(shards)}).encode())
    return JobResult(len(shards), len(shards) - len(pending), written, output)


def _read_shards(specs: pa.Table, input: str) -> pa.Table:
    """The rows of the shards named in ``specs`` (a Ray Data task)."""
    fs, _ = filesystem(input)
    tables = [read_shard(fs, Shard(**row)) for row in specs.to_pylist()]
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


class _ShardWriter:
    """Collect the scored rows of each shard as they arrive in order; write it whole, then mark it."""

    def __init__(self, fs: pafs.FileSystem, out_dir: str, fmt: Format,
                 progress: Callable[[int, int], None] | None) -> None:
        self.fs, self.dir, self.fmt, self.progress = fs, out_dir, fmt, progress
        self.current: int | None = None
        self.parts: list[pa.Table] = []
        self.written: set[int] = set()
        self.rows = 0

    def add(self, batch: pa.Table) -> None:
        shard = batch.column("_shard").to_numpy()
        start = 0
        for i in range(1, len(shard) + 1):  # split the batch where the shard changes
            if i == len(shard) or shard[i] != shard[start]:
                self._rows(int(shard[start]), batch.slice(start, i - start))
                start = i

    def _rows(self, shard: int, rows: pa.Table) -> None:
        if shard != self.current:
            self._flush()
            self.current = shard
        self.parts.append(rows)

    def _flush(self) -> None:
        if self.current is None:
            return
        self._write(self.current, pa.concat_tables(self.parts) if self.parts else None)
        self.current, self.parts = None, []

    def finish(self, shards: list[int]) -> None:
        """Write the last shard, and an empty part for every shard that had no rows (all blank lines)."""
        self._flush()
        for shard in shards:
            if shard not in self.written:
                self._write(shard, None)

    def _write(self, shard: int, table: pa.Table | None) -> None:
        name = f"{self.dir}/part-{shard:06d}.{self.fmt}"
        n = 0 if table is None else table.num_rows
        with self.fs.open_output_stream(name + ".tmp") as f:
            if self.fmt == "jsonl":
                f.write(_jsonl(table).encode("utf-8") if table is not None else b"")
            else:
                import pyarrow.parquet as pq

                if table is not None:
                    pq.write_table(table.drop_columns([c for c in _INTERNAL if c in table.column_names]), f)
        self.fs.move(name + ".tmp", name)
        marker = f"{self.dir}/part-{shard:06d}.done"
        with self.fs.open_output_stream(marker + ".tmp") as f:  # moved into place too: never an empty marker
            f.write(json.dumps({"rows": n}).encode())
        self.fs.move(marker + ".tmp", marker)
        self.written.add(shard)
        self.rows += n
        if self.progress:
            self.progress(1, n)


_ADDED = ("scores", "unsafe", "flagged", "categories", "language", "unverified")


def _jsonl(table: pa.Table) -> str:
    """The rows as ``beaverguard score`` writes them: the input row's own fields, then the ones it adds."""
    lines = []
    columns = [table.column(name).to_pylist() for name in _ADDED]
    for raw, *values in zip(table.column("_row").to_pylist(), *columns):
        row: dict[str, Any] = json.loads(raw)
        row.update(zip(_ADDED, values))
        lines.append(json.dumps(row, ensure_ascii=False) + "\n")
    return "".join(lines)


def _done(fs: pafs.FileSystem, out_dir: str) -> set[int]:
    """Indices of the shards already written (those with a marker)."""
    names = (Path(f.path).name for f in fs.get_file_info(pafs.FileSelector(out_dir)))
    return {int(m.group(1)) for m in map(_MARKER.fullmatch, names) if m}


def _check_manifest(fs: pafs.FileSystem, out_dir: str, manifest: dict[str, Any]) -> None:
    """Write the manifest, or check that the one there describes the same job (else refuse to mix them)."""
    path = f"{out_dir}/{MANIFEST}"
    if fs.get_file_info(path).type == pafs.FileType.File:
        with fs.open_input_stream(path) as f:
            found = json.loads(f.read())
        if found != manifest:
            raise ValueError(f"{out_dir} holds the output of another job (other input files, sizes or shard "
                             "size); give another --output directory, or empty this one")
        return
    with fs.open_output_stream(path) as f:
        f.write(json.dumps(manifest).encode())
