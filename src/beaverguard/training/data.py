"""Moderation data in, training rows out.

Two layouts are read into one :class:`Row`:

* the shared JSON Lines schema (``prompt``, ``response`` or null, ``is_safe``,
  ``categories`` as a list of dataset keys or null);
* the Hugging Face layout of ``PKU-Alignment/BeaverTails`` (``category`` is a
  dict of 14 booleans), for users who can reach the hub.

Targets are 16 numbers (the 14 categories, ``unsafe``, then ``injection``) with a mask: a row
whose source has no category labels trains only the ``unsafe`` output, and a row
whose source taxonomy maps onto some categories (``partial``) trains those as
positives and leaves the others unknown. ``target`` is a soft ``unsafe`` target
for rows near the line (None: 0 or 1 from ``is_safe``). ``context`` holds earlier
conversation turns, oldest first. ``injection`` says whether the text tries to make the model
drop its instructions (None: unknown, not trained); ``is_safe`` is None on rows labelled for
injection only, whose harm outputs are then left unknown.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from beaverguard._categories import CATEGORY_KEYS, INJECTION, LABELS
from beaverguard._jsonl import read_records

__all__ = [
    "Row", "read_jsonl", "from_hf_record", "load_hf_beavertails", "split_by_prompt",
    "refusal_pairs", "targets", "LABELS", "TRAIN_LABELS", "write_jsonl",
]

#: The outputs models are trained with: the 14 categories, ``unsafe``, then ``injection``.
TRAIN_LABELS: tuple[str, ...] = (*LABELS, INJECTION)



@dataclass(frozen=True)
class Row:
    prompt: str
    response: str | None
    is_safe: bool | None  # None: labelled for injection only
    categories: tuple[str, ...] | None  # None: the source does not label categories
    source: str = ""
    context: tuple[tuple[str, str], ...] = ()
    target: float | None = None  # soft unsafe target; None: from is_safe
    partial: bool = False  # categories are known positives; the others are unknown
    injection: bool | None = None  # None: unknown


def _row(record: Mapping, cats: Iterable[str] | None, source: str, where: str) -> Row:
    """A checked row: known categories only, and a safety label."""
    if cats is not None:
        unknown = set(cats) - set(CATEGORY_KEYS)
        if unknown:
            raise ValueError(f"{where}: unknown categories {sorted(unknown)}")
        cats = tuple(cats)
    injection = record.get("injection")
    if record.get("is_safe") is None and injection is None:
        raise ValueError(f"{where}: is_safe and injection are null; rows without a label cannot train")
    return Row(record["prompt"], record.get("response"), None if record.get("is_safe") is None else bool(record["is_safe"]),
               cats, source, injection=None if injection is None else bool(injection))


def _from_shared(record: Mapping, where: str) -> Row:
    row = _row(record, record.get("categories"), record.get("source", ""), where)
    extra = {}
    if record.get("context"):
        extra["context"] = tuple((str(role), str(text)) for role, text in record["context"])
    if record.get("target") is not None:
        extra["target"] = float(record["target"])
    if record.get("partial"):
        extra["partial"] = True
    return replace(row, **extra) if extra else row


def from_hf_record(record: Mapping, where: str = "BeaverTails record") -> Row:
    """One record of the Hugging Face BeaverTails layout (``category`` = dict of booleans)."""
    flags = record["category"]
    missing = set(CATEGORY_KEYS) - set(flags)
    if missing:
        raise ValueError(f"{where}: lacks categories {sorted(missing)}")
    row = _row(record, flags, "beavertails", where)  # checks the flag names and the label
    return replace(row, categories=tuple(k for k in CATEGORY_KEYS if flags[k]))


def read_jsonl(path: str | Path) -> list[Row]:
    """Read a file in either layout; the layout is told apart row by row.

    A bad row raises ``ValueError`` naming ``file:line``, so a typo in row 40,000
    is found without bisecting the file.
    """
    rows = []
    for where, record in read_records(path):
        try:
            if isinstance(record.get("category"), dict):
                rows.append(from_hf_record(record, where))
            else:
                rows.append(_from_shared(record, where))
        except KeyError as exc:
            raise ValueError(f"{where}: missing field {exc}") from None
    return rows


def load_hf_beavertails(split: str = "30k_train") -> list[Row]:  # pragma: no cover - needs the hub
    """Load ``PKU-Alignment/BeaverTails`` from the hub (needs the ``datasets`` package)."""
    from datasets import load_dataset

    return [from_hf_record(r) for r in load_dataset("PKU-Alignment/BeaverTails", split=split)]


def _group(prompt: str) -> str:
    return " ".join(prompt.lower().split())


def split_by_prompt(rows: Iterable[Row], seed: int, calib: float = 0.1, test: float = 0.1) -> dict[str, list[Row]]:
    """Split into ``train``, ``calib`` (threshold calibration) and ``test`` (reported metrics).

    Every row of one prompt lands on the same side: the side is a hash of the
    normalised prompt and the seed, so the split is stable across runs and across
    files that share prompts.
    """
    out: dict[str, list[Row]] = {"train": [], "calib": [], "test": []}
    for row in rows:
        digest = hashlib.sha256(f"{seed}:{_group(row.prompt)}".encode()).digest()
        side = int.from_bytes(digest[:8], "big") / 2**64
        name = "calib" if side < calib else "test" if side < calib + test else "train"
        out[name].append(row)
    return out


_REFUSALS = (
    "I'm sorry, but I can't help with that.",
    "I can't assist with this request. If you're going through something difficult, consider talking to someone you trust.",
    "No. That would be harmful and possibly illegal, so I won't provide instructions.",
    "I won't help with that. Is there something else I can do for you?",
    "That's not something I can support. Hurting people or breaking the law has serious consequences.",
    "Sorry, I cannot provide that information because it could be used to cause harm.",
    "I understand you're curious, but I'm not able to help with this. Let's talk about something else.",
    "It's not appropriate for me to answer that. Please consider the safety and rights of others.",
    "As an AI assistant I have to decline. If someone is in danger, please contact local emergency services.",
    "I'd rather not. That could hurt someone, and I don't want to contribute to that.",
    "This is illegal in most places and I can't give guidance on it. A lawyer can explain your legal options.",
    "I can't do that, but I can share information on staying safe if that would help.",
)


def refusal_pairs(rows: Iterable[Row], seed: int, limit: int) -> list[Row]:
    """Harmful prompts paired with refusals: safe QA pairs, labelled as BeaverTails would.

    BeaverTails judges the exchange, so a harmful question refused is safe. The
    shared data has few such pairs outside Do-Not-Answer; these teach the model
    to read the response and not just the prompt.
    """
    rng = random.Random(seed)
    harmful = [r for r in rows if r.is_safe is False and r.response is None]
    rng.shuffle(harmful)
    return [Row(r.prompt, rng.choice(_REFUSALS), True, (), "synthetic-refusal") for r in harmful[:limit]]


def targets(row: Row) -> tuple[list[float], list[float]]:
    """Return (labels, mask) over :data:`TRAIN_LABELS` for one row.

    A safe row is a negative for every category, except a near-the-line row
    (a soft target above 0), whose categories are left unknown. ``injection`` is
    trained where the row says yes or no, and the harm outputs where it has ``is_safe``.
    """
    harm, harm_mask = _harm_targets(row)
    inj = [0.0 if row.injection is None else float(row.injection)]
    return harm + inj, harm_mask + [0.0 if row.injection is None else 1.0]


def _harm_targets(row: Row) -> tuple[list[float], list[float]]:
    if row.is_safe is None:
        return [0.0] * len(LABELS), [0.0] * len(LABELS)
    unsafe = row.target if row.target is not None else 0.0 if row.is_safe else 1.0
    if row.is_safe and not unsafe:
        return [0.0] * len(CATEGORY_KEYS) + [unsafe], [1.0] * len(LABELS)
    if row.is_safe or row.categories is None or not row.categories:
        return [0.0] * len(CATEGORY_KEYS) + [unsafe], [0.0] * len(CATEGORY_KEYS) + [1.0]
    labels = [1.0 if k in row.categories else 0.0 for k in CATEGORY_KEYS]
    if row.partial:
        return labels + [unsafe], labels + [1.0]
    return labels + [unsafe], [1.0] * len(LABELS)


def iter_files(paths: Iterable[str | Path]) -> Iterator[Row]:
    for p in paths:
        yield from read_jsonl(p)


def write_jsonl(rows: Iterable[Row], path: str | Path) -> None:
    """Write rows in the shared schema (so ``beaverguard eval`` and ``score`` read them)."""
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            record = {"prompt": r.prompt, "response": r.response, "is_safe": r.is_safe,
                      "categories": None if r.categories is None else list(r.categories), "source": r.source}
            if r.context:
                record["context"] = [list(t) for t in r.context]
            if r.target is not None:
                record["target"] = r.target
            if r.partial:
                record["partial"] = True
            if r.injection is not None:
                record["injection"] = r.injection
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
