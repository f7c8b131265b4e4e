"""A data mix as data: which rows train the model, with what weight and labels, and which are held out.

A mix file (YAML) names every source: a file of ``../shared/data`` (or the
Hugging Face BeaverTails layout), optionally narrowed to one ``source`` value and
to rows whose fields match ``where``. Per source it says

* ``weight``: expected copies of each training row (0.5: half of them, 2: twice);
* ``categories``: ``dataset`` (the row's BeaverTails categories), ``null`` (the
  source trains ``unsafe`` only), or ``{field, map}`` mapping the source's own
  taxonomy onto ours where that mapping is honest (mapped categories train as
  positives; the others stay unknown);
* ``target``: a soft ``unsafe`` target for rows near the line (a plainly safe
  row has 0, a plainly harmful one 1);
* ``as_prompts``: train the prompts of its safe rows as safe prompt-only rows, or
  (``unsafe``) each distinct prompt as a harmful one (a file of risky questions
  whose rows judge their answers);
* ``family``: the family it is calibrated and reported with (``chat``,
  ``lookalike``, ``harmful``, ``qa``, ...).

``holdout`` names sources held out whole: never trained or calibrated on, and
reported apart. Held out means their text too: a row of another source, or a
jailbreak template, that repeats a held-out prompt (most of its 8-word runs) is
dropped, since jailbreak collections share templates. Every other row is split
by normalised prompt (train / calib / test), so no prompt is on two sides. ``augment`` says how many augmented rows
(:mod:`beaverguard.training.augment`) to build from training-side rows.
``calibration`` sets the false-positive budgets per rail and family that
:func:`beaverguard.training.calibrate.calibrate_decision` meets. ``extends: OTHER.yaml`` starts
from another mix file and changes only what it names (an ablation is one line: ``mixes/ablation``);
``more_sources`` adds sources to the parent's.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from beaverguard._categories import resolve
from beaverguard._jsonl import read_records
from beaverguard.training.augment import (
    FRAMES, Template, augment, lookalike_rows, split_templates, wild_templates,
)
from beaverguard.training.contrast import contrast_rows
from beaverguard.training.composed import composed_rows
from beaverguard.training.injections import injection_rows, planted_rows
from beaverguard.training.swearing import swearing_rows
from beaverguard.training.data import Row, _group, from_hf_record, refusal_pairs, split_by_prompt

__all__ = ["Mix", "Source", "MixData", "Repeats", "load_mix", "build", "summary"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CategoryMap(_Strict):
    field: str = Field(description="Row field holding the source's own category.")
    map: dict[str, list[str]] = Field(description="Source category -> our categories (aliases or keys); unlisted: unsafe only.")

    @field_validator("map")
    @classmethod
    def _known(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        try:
            return {k: [resolve(c) for c in v] for k, v in value.items()}
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None


class Source(_Strict):
    file: str
    source: str | None = Field(None, description="Only rows whose 'source' field equals this.")
    where: dict[str, Any] = Field(default_factory=dict, description="Only rows whose fields equal these values.")
    drop: dict[str, list[Any]] = Field(default_factory=dict, description="Leave out rows whose field is one of these.")
    weight: float = Field(1.0, ge=0.0)
    categories: Literal["dataset"] | CategoryMap | None = "dataset"
    target: float | None = Field(None, ge=0.0, le=1.0)
    as_prompts: bool | Literal["unsafe"] = Field(
        False, description="true: the prompts of its safe rows as safe prompt-only rows; 'unsafe': every distinct "
                           "prompt as a harmful prompt-only row (a source of risky questions whose rows judge answers).")
    family: str = "other"
    name: str | None = Field(None, description="Row source label (default: the row's own 'source').")
    injection: Literal["dataset"] | bool | None = Field(
        None, description="Injection label: 'dataset' (the row's own 'injection' field), true/false for every "
                          "row, or null (unknown: the injection output is not trained on it).")


class Holdout(_Strict):
    file: str
    source: str
    family: str = "other"


class Augment(_Strict):
    templates: str | None = Field(None, description="File of in-the-wild jailbreak prompts used as frames.")
    holdout: float = Field(0.25, ge=0.0, lt=1.0, description="Share of templates held out for evaluation.")
    frames: int = 0
    long_context: int = 0
    split_turns: int = 0
    topic_change: int = 0
    lookalikes: float = Field(0.0, ge=0.0, description="Weight of the built-in look-alike questions.")
    refusals: int = Field(0, description="Harmful training prompts paired with refusals (safe QA pairs).")
    contrast: float = Field(0.0, ge=0.0, description="Weight of the contrast pairs (beaverguard.training.contrast).")
    swapped_answers: int = Field(0, ge=0, description="Harmful answers of training QA pairs put under a harmless "
                                                      "training question (unsafe: an answer is judged by what it says).")
    injections: int = Field(0, ge=0, description="Planted injections (and as many benign notes) in tool results "
                                                 "and documents (beaverguard.training.injections).")
    real_injections: int = Field(0, ge=0, description="Real training-side injections planted in documents and chat "
                                                      "text, and as many benign instructions in the same hosts "
                                                      "(beaverguard.training.injections.planted_rows).")
    composed_injections: int = Field(0, ge=0, description="Injections composed from parts (address, turn, goal) and "
                                                          "as many benign notes to people from the same grammar, "
                                                          "in hosts (beaverguard.training.composed).")
    swearing: int = Field(0, ge=0, description="Training prompts with a swear word put in, half harmful and half "
                                               "benign, each keeping its label (beaverguard.training.swearing).")
    filler: list[str] = Field(default_factory=list, description="Families whose prompts make benign long context.")


class RailBudget(_Strict):
    fpr: dict[str, float] = Field(description="Family -> most flagged share of its safe rows.")
    maximize: Literal["recall", "f1"] = "recall"
    over: list[str] = Field(default_factory=list, description="Families the objective is measured over (all: empty).")


class Mix(_Strict):
    version: Literal[1] = 1
    data_dir: str = "."
    seed: int = 13
    calib: float = 0.1
    test: float = 0.1
    holdout: list[Holdout] = Field(default_factory=list)
    sources: list[Source]
    augment: Augment = Field(default_factory=Augment)
    calibration: dict[Literal["input", "output", "injection"], RailBudget] = Field(
        default_factory=dict, description="Budgets of the input and output rails, and of the injection threshold.")


def _raw(path: Path) -> dict:
    """A mix file's mapping; ``extends: OTHER.yaml`` (beside it) starts from that file's, merged key by key
    (mappings such as ``augment`` merge, lists such as ``sources`` are replaced whole; ``more_sources`` adds
    to the parent's ``sources``)."""
    raw = yaml.safe_load(path.read_text()) or {}
    parent = raw.pop("extends", None) if isinstance(raw, dict) else None
    if parent is None:
        return raw
    base = _raw(path.parent / parent)
    if "more_sources" in raw:
        raw["sources"] = [*base.get("sources", []), *raw.pop("more_sources")]

    def merge(base: dict, over: dict) -> dict:
        return {**base, **{k: merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
                           for k, v in over.items()}}
    return merge(base, raw)


def load_mix(path: str | Path) -> Mix:
    """Read and validate a mix file; an invalid one names the file and the key."""
    path = Path(path)
    try:
        return Mix.model_validate(_raw(path))
    except ValidationError as exc:
        lines = [f"{path}: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise ValueError("invalid mix file\n" + "\n".join(lines)) from None


@dataclass
class MixData:
    """What a mix yields: the rows of each side, and the templates kept apart for evaluation."""

    train: list[Row]
    calib: list[Row]
    test: list[Row]
    holdout: list[Row]
    families: dict[str, str]  # row source -> family
    train_templates: list[Template]
    heldout_templates: list[Template]
    heldout_lookalikes: list[Row]
    dropped: dict[str, int]  # rows (per file) and templates left out because they repeat held-out text
    heldout_contrast: list[Row] = field(default_factory=list)  # contrast pairs of held-out templates and objects
    heldout_injections: list[Row] = field(default_factory=list)  # planted injections of held-out parts


def _matches(record: Mapping, src: Source | Holdout) -> bool:
    if src.source is not None and record.get("source") != src.source:
        return False
    if isinstance(src, Source):
        if any(record.get(k) != v for k, v in src.where.items()):
            return False
        if any(record.get(k) in v for k, v in src.drop.items()):
            return False
    return True


def _mapped(record: Mapping, src: Source) -> list[str] | None:
    """The source's own category of a row, mapped onto ours (None: unmapped, or no map)."""
    return src.categories.map.get(str(record.get(src.categories.field))) \
        if isinstance(src.categories, CategoryMap) else None


def _row(record: Mapping, src: Source, where: str) -> Row:
    if src.as_prompts == "unsafe":  # the source's design is the label: its rows may carry none
        mapped = _mapped(record, src)
        return Row(record["prompt"], None, False, tuple(mapped) if mapped else None,
                   f"{src.name or record.get('source', '')}-prompt", partial=bool(mapped), target=src.target,
                   injection=src.injection if isinstance(src.injection, bool) else None)
    if isinstance(record.get("category"), dict):  # the Hugging Face BeaverTails layout
        row = from_hf_record(record, where)
    else:
        injection = record.get("injection") if src.injection == "dataset" else src.injection
        if record.get("is_safe") is None and injection is None:
            raise ValueError(f"{where}: is_safe is null; rows without a label cannot train")
        cats = record.get("categories")
        row = Row(record["prompt"], record.get("response"), _safe(record), None if cats is None else tuple(cats),
                  str(record.get("source", "")), injection=None if injection is None else bool(injection))
    name = src.name or row.source
    if src.categories is None:
        row = replace(row, categories=None)
    elif isinstance(src.categories, CategoryMap) and not row.is_safe:
        mapped = _mapped(record, src)
        row = replace(row, categories=tuple(mapped) if mapped else None, partial=bool(mapped))
    if src.as_prompts:
        row = Row(row.prompt, None, True, (), f"{name}-prompt")
    return replace(row, source=name if not src.as_prompts else row.source, target=src.target)


def _safe(record: Mapping) -> bool | None:
    return None if record.get("is_safe") is None else bool(record["is_safe"])


def _read(data_dir: Path, file: str) -> list[tuple[str, Mapping]]:
    return list(read_records(data_dir / file))


_WORDS = re.compile(r"\w+")


def _shingles(text: str, k: int = 8) -> set[str]:
    words = _WORDS.findall(text.lower())
    return {" ".join(words[i:i + k]) for i in range(max(1, len(words) - k + 1))}


class Repeats:
    """Tells whether a text repeats one of ``prompts``: the same prompt, or most of its 8-word runs."""

    def __init__(self, prompts: list[str], share: float = 0.3) -> None:
        self.exact = {_group(p) for p in prompts}
        self.runs = set().union(*(_shingles(p) for p in prompts)) if prompts else set()
        self.share = share

    def __contains__(self, text: str) -> bool:
        if _group(text) in self.exact:
            return True
        runs = _shingles(text)
        return len(runs) >= 4 and len(runs & self.runs) > self.share * len(runs)


def _copies(weight: float, key: str, seed: int) -> int:
    """Whole copies of a row for a fractional weight, stable per row (no RNG state shared across rows)."""
    whole, frac = int(weight), weight - int(weight)
    u = int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") / 2**64
    return whole + (u < frac)


def build(mix: Mix, data_dir: str | Path | None = None) -> MixData:
    """Read every source, hold out, split by prompt, weight, and augment the training side.

    Deterministic: the same mix and files give the same rows in the same order.
    """
    data_dir = Path(data_dir if data_dir is not None else mix.data_dir)
    cache: dict[str, list[tuple[str, Mapping]]] = {}

    def records(file: str) -> list[tuple[str, Mapping]]:
        if file not in cache:
            cache[file] = _read(data_dir, file)
        return cache[file]

    held = [(h, [r for _, r in records(h.file) if _matches(r, h)]) for h in mix.holdout]
    families: dict[str, str] = {}
    holdout = []
    for h, recs in held:
        if not recs:
            raise ValueError(f"holdout {h.file} source {h.source!r} matches no rows")
        holdout += [Row(r["prompt"], r.get("response"), _safe(r), None, h.source,
                        injection=None if r.get("injection") is None else bool(r["injection"])) for r in recs]
        families[h.source] = h.family
    held_out_keys = {(h.file, h.source) for h in mix.holdout}
    held_text = Repeats([r.prompt for r in holdout])
    dropped = Counter()

    rows: list[tuple[Row, Source]] = []
    for src in mix.sources:
        if (src.file, src.source) in held_out_keys:
            raise ValueError(f"source {src.file} / {src.source} is also held out")
        n, seen = 0, set()
        for where, rec in records(src.file):
            if (src.file, rec.get("source")) in held_out_keys or not _matches(rec, src):
                continue
            if src.as_prompts is True and not rec.get("is_safe"):
                continue
            if src.as_prompts == "unsafe":
                if rec.get("prompt") in seen:
                    continue
                seen.add(rec.get("prompt"))
            if isinstance(rec.get("prompt"), str) and rec["prompt"] in held_text:
                dropped[src.file] += 1
                continue
            row = _row(rec, src, where)
            rows.append((row, src))
            families[row.source] = src.family
            n += 1
        if not n:
            raise ValueError(f"source {src.file} ({src.source or 'all rows'}, where {src.where}) matches no rows")

    sides = split_by_prompt([r for r, _ in rows], seed=mix.seed, calib=mix.calib, test=mix.test)
    side_of = {id(r): name for name, part in sides.items() for r in part}
    train: list[Row] = []
    for row, src in rows:
        if side_of[id(row)] == "train":
            train += [row] * _copies(src.weight, f"{row.source}|{row.prompt}|{row.response}", mix.seed)
    calib = list({(r.prompt, r.response, r.context): r for r in sides["calib"]}.values())
    test = list({(r.prompt, r.response, r.context): r for r in sides["test"]}.values())

    aug = mix.augment
    wild = wild_templates([r for _, r in records(aug.templates)]) if aug.templates else []
    train_t, held_t = split_templates([*(t for fam in FRAMES.values() for t in fam), *wild],
                                      share=aug.holdout, seed=mix.seed)
    shared = [t for t in train_t if t.text.replace("{request}", " ") in held_text]
    train_t = [t for t in train_t if t not in shared]  # templates a held-out jailbreak set is built from
    held_t += shared
    look_train, look_held = lookalike_rows(seed=mix.seed, share=aug.holdout)
    for r in look_train:
        families[r.source] = "lookalike"
        train += [r] * _copies(aug.lookalikes, r.prompt, mix.seed)
    train_prompts = [r for r in train if r.response is None and not r.context and r.target is None
                     and r.is_safe is not None and families.get(r.source) != "injection"]
    unique = list({(r.prompt, r.is_safe): r for r in train_prompts}.values())
    harmful = [r for r in unique if not r.is_safe]
    benign = [r for r in unique if r.is_safe]
    filler_pool = [r.prompt for r in benign if families.get(r.source) in aug.filler and 20 <= len(r.prompt.split()) <= 120]
    extra = augment(harmful, benign, filler_pool or [r.prompt for r in benign], train_t,
                    frames=aug.frames, contexts=aug.long_context, splits=aug.split_turns,
                    topic_changes=aug.topic_change, seed=mix.seed)
    extra += refusal_pairs(train, seed=mix.seed, limit=aug.refusals)
    extra += swapped_answers(train, [r.prompt for r in benign if families.get(r.source) == "chat"],
                             seed=mix.seed, limit=aug.swapped_answers)
    extra += swearing_rows(harmful, benign, aug.swearing, mix.seed, share=aug.holdout)
    # A frame may itself be a jailbreak: what the wrapped row says about injection no longer holds.
    extra = [replace(r, injection=None) for r in extra]
    for r in extra:
        families.setdefault(r.source, "augmented")
    contrast_train, contrast_held = contrast_rows(seed=mix.seed, share=aug.holdout) if aug.contrast else ([], [])
    for r in contrast_train:
        families[r.source] = "contrast"
        extra += [r] * _copies(aug.contrast, f"{r.prompt}|{r.response}", mix.seed)
    planted_train, planted_held = injection_rows(aug.injections, mix.seed, aug.holdout) if aug.injections else ([], [])
    if aug.real_injections:
        inj = {(r.prompt, r.injection) for r in train if families.get(r.source) == "injection" and r.injection is not None}
        planted_train += planted_rows(sorted(p for p, i in inj if i), sorted(p for p, i in inj if not i),
                                      filler_pool, aug.real_injections, mix.seed, aug.holdout)
    if aug.composed_injections:
        composed_train, composed_held = composed_rows(aug.composed_injections, mix.seed, aug.holdout, filler_pool)
        planted_train += composed_train
        planted_held += composed_held
    for r in planted_train:
        families[r.source] = "injection"
    train += extra + planted_train
    random.Random(mix.seed).shuffle(train)
    return MixData(train, calib, test, holdout, families, train_t, held_t, look_held,
                   dict(dropped) | ({"templates": len(shared)} if shared else {}), contrast_held, planted_held)


def swapped_answers(rows: list[Row], questions: list[str], seed: int, limit: int) -> list[Row]:
    """Harmful answers of QA pairs under harmless questions: unsafe, with the answer's own categories.

    A model that judges an answer mostly by its question misses a harmful answer that an
    injection or a poisoned page put under an innocent one (the output rail's ``answer_alone``
    view exists for that); these rows teach the answer to count on its own.
    """
    rng = random.Random(seed)
    harmful = sorted({(r.prompt, r.response): r for r in rows
                      # labelled harm categories, and 30+ words: a short answer is often harmful only by its question
                      if r.response is not None and r.is_safe is False and r.target is None and not r.context
                      and r.categories and len(r.response.split()) >= 30}.values(),
                     key=lambda r: (r.prompt, r.response))
    if not harmful or not questions or not limit:
        return []
    picked = harmful * (limit // len(harmful)) + rng.sample(harmful, limit % len(harmful))  # each under several questions
    return [Row(rng.choice(questions), r.response, False, r.categories, "swapped-answer", partial=r.partial)
            for r in picked]


def summary(data: MixData) -> str:
    """Rows per side and family, for the log and the model card."""
    lines = []
    for side in ("train", "calib", "test", "holdout"):
        part = getattr(data, side)
        count = Counter(data.families.get(r.source, "?") for r in part)
        lines.append(f"{side}: {len(part)} rows (" + ", ".join(f"{k} {v}" for k, v in count.most_common()) + ")")
    lines.append(f"templates: {len(data.train_templates)} for training, {len(data.heldout_templates)} held out")
    lines.append(f"left out as repeats of held-out text: {data.dropped}")
    return "\n".join(lines)
