"""Cut input files into shards that a re-run can name again, and read one shard's rows.

A shard is the unit a resumed job skips: a byte range of a JSON Lines file (a
row belongs to the shard where its line starts) or one row group of a Parquet
file. Both follow from the files alone, with no pass over the data, so a
re-run cuts the same shards and finds which of them are written.

Files are opened through ``pyarrow.fs``: local paths, and any URI it knows
(``s3://``, ``gs://``, ``hdfs://``, ``file://``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import pyarrow as pa
import pyarrow.fs as pafs

from beaverguard._jsonl import parse_record

__all__ = ["Shard", "Format", "filesystem", "list_inputs", "plan_shards", "read_shard"]

Format = Literal["jsonl", "parquet"]
_SUFFIXES: dict[str, Format] = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
                                ".parquet": "parquet", ".pq": "parquet"}
_TAIL = 1 << 16  # bytes read at a time past a shard's end, to finish its last line


@dataclass(frozen=True)
class Shard:
    """Rows of one input file: bytes ``[start, end)`` (JSON Lines) or row group ``start`` (Parquet)."""

    index: int
    path: str
    format: Format
    start: int
    end: int

    def to_row(self) -> dict:
        return asdict(self)


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem of a local path or URI, and the path within it."""
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    import os

    return pafs.LocalFileSystem(), os.path.abspath(uri)


def list_inputs(uri: str) -> tuple[pafs.FileSystem, list[pafs.FileInfo], Format]:
    """The input files, sorted by path (a directory: every JSON Lines or Parquet file under it), and their format."""
    fs, path = filesystem(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise ValueError(f"{uri}: no such file or directory")
    if info.type == pafs.FileType.Directory:
        found = fs.get_file_info(pafs.FileSelector(path, recursive=True))
        files = sorted((f for f in found if f.type == pafs.FileType.File and _format(f.path)), key=lambda f: f.path)
        if not files:
            raise ValueError(f"{uri}: no .jsonl or .parquet files in this directory")
    else:
        files = [info]
    formats = {_format(f.path) or "jsonl" for f in files}  # a single file of another name: JSON Lines
    if len(formats) > 1:
        raise ValueError(f"{uri}: mixes JSON Lines and Parquet files; score them as two jobs")
    return fs, files, formats.pop()


def _format(path: str) -> Format | None:
    for suffix, fmt in _SUFFIXES.items():
        if path.lower().endswith(suffix):
            return fmt
    return None


def plan_shards(fs: pafs.FileSystem, files: list[pafs.FileInfo], fmt: Format, shard_bytes: int) -> list[Shard]:
    """Every shard of the input, in row order."""
    shards: list[Shard] = []
    for f in files:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            with fs.open_input_file(f.path) as handle:
                groups = pq.ParquetFile(handle).num_row_groups
            shards += [Shard(len(shards) + g, f.path, fmt, g, g + 1) for g in range(groups)]
        else:
            for start in range(0, max(f.size, 1), shard_bytes):
                shards.append(Shard(len(shards), f.path, fmt, start, min(start + shard_bytes, f.size)))
    return shards


def read_shard(fs: pafs.FileSystem, shard: Shard) -> pa.Table:
    """The shard's rows with ``_shard`` (its index); JSON Lines rows also keep their text as ``_row``.

    The row's own text travels with it, so the output row is the input row plus
    the scores, byte for byte as the local engine writes it, whatever its other
    fields hold (Arrow would give every row every field, and types to agree).
    """
    if shard.format == "parquet":
        import pyarrow.parquet as pq

        with fs.open_input_file(shard.path) as handle:
            table = pq.ParquetFile(handle).read_row_group(shard.start)
        return table.append_column("_shard", pa.array([shard.index] * table.num_rows, type=pa.int64()))
    rows, prompts, responses, channels = [], [], [], []
    for offset, line in _lines(fs, shard):
        record = parse_record(line, f"{shard.path} (byte {offset})")
        rows.append(line.decode("utf-8"))
        prompts.append(record["prompt"])
        responses.append(record.get("response"))
        channels.append(record.get("channel"))
    return pa.table({"_shard": pa.array([shard.index] * len(rows), type=pa.int64()),
                     "_row": pa.array(rows, type=pa.string()), "prompt": pa.array(prompts, type=pa.string()),
                     "response": pa.array(responses, type=pa.string()),
                     "channel": pa.array(channels, type=pa.string())})


def _lines(fs: pafs.FileSystem, shard: Shard) -> list[tuple[int, bytes]]:
    """(offset, line) of each non-blank line that starts in ``[start, end)``."""
    base = max(shard.start - 1, 0)  # one byte back: is the byte before the range a line end?
    with fs.open_input_file(shard.path) as f:
        f.seek(base)
        buf = f.read(shard.end - base)
        while buf and not buf.endswith(b"\n"):  # finish the last line, which started inside the range
            more = f.read(_TAIL)
            if not more:
                break
            cut = more.find(b"\n")
            buf += more if cut < 0 else more[:cut + 1]
            if cut >= 0:
                break
    first = 0 if shard.start == 0 else buf.find(b"\n") + 1  # the line in progress belongs to the shard before
    if shard.start and first == 0:
        return []
    out, pos = [], first
    for line in buf[first:].split(b"\n"):
        if line.strip():
            out.append((base + pos, line))
        pos += len(line) + 1
    return out
