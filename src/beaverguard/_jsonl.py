"""Read JSON Lines of exchanges, naming ``file:line`` for every bad row.

The CLI's ``score`` and the training data loaders read the same kind of file;
both check it here, so a typo in row 40,000 is reported the same way by both.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

__all__ = ["read_records", "parse_record"]


def read_records(path: str | Path) -> Iterator[tuple[str, dict]]:
    """Yield ``("file:line", record)`` for each non-blank line; ValueError names the bad one.

    Every record is a JSON object with a string ``prompt`` and a ``response``
    that is a string, null or absent.
    """
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            yield where, parse_record(line, where)


def parse_record(line: str | bytes, where: str) -> dict:
    """One row of such a file (not blank), checked as :func:`read_records` checks it; ``where`` names it in errors."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not valid JSON ({exc.msg})") from None
    if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
        raise ValueError(f"{where}: each row needs a string 'prompt'")
    if record.get("response") is not None and not isinstance(record["response"], str):
        raise ValueError(f"{where}: 'response' must be a string or null")
    return record
