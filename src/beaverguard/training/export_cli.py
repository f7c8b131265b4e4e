"""``beaverguard export``: checkpoint in, model directory (int8 for CPUs, fp32 for GPUs) with calibrated thresholds out.

Three steps, each checked: export and quantize (:func:`export`, which fails when
a graph drifts from its source), score the calibration rows with the int8 model
*as the guard runs it* (:func:`runtime_probs`), then write the thresholds that
:func:`calibrate` picks for the policy's decision into ``beaverguard.json``. With
``--mix``, the calibration rows, their families and the false-positive budgets
come from the data mix; otherwise from ``--calib``. Calibrating on the shipped
graph, not the fp32 one, keeps the thresholds true to what users run.

``beaverguard calibrate`` runs the last two steps alone on a model directory:
new budgets, or your own traffic as the calibration split, without the
checkpoint or torch.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from beaverguard._categories import INJECTION, LABELS
from beaverguard._guard import Guard
from beaverguard._policy import Policy
from beaverguard._types import Exchange
from beaverguard.training.calibrate import Budget, calibrate, calibrate_injection
from beaverguard.training.data import Row, read_jsonl
from beaverguard.training.export import export, export_head

__all__ = ["run_calibrate", "run_export", "runtime_probs", "runtime_scores", "write_thresholds", "SAMPLE_SIZE"]

SAMPLE_SIZE = 1024  # rows for the export checks (a share of drifted rows needs more than a few hundred)


def write_thresholds(model_dir: Path, thresholds: dict[str, dict[str, float]]) -> None:
    """Replace the thresholds in ``model_dir/beaverguard.json`` (its checksums cover the graph and tokenizer only)."""
    path = Path(model_dir) / "beaverguard.json"
    spec = json.loads(path.read_text())
    spec["thresholds"] = thresholds
    path.write_text(json.dumps(spec, indent=2) + "\n")


def runtime_probs(model_dir: Path, rows: Sequence[Row]) -> np.ndarray:
    """(n, 15) probabilities of ``rows`` as a guard on this model scores them (its CPU plan, normalization).

    A model that is not batch-invariant runs each exchange alone in the guard, so
    it must be calibrated on scores of exchanges run alone too.
    """
    return runtime_scores(model_dir, rows)[0]


def runtime_scores(model_dir: Path, rows: Sequence[Row]) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`runtime_probs`, and each row's ``injection`` score from the same pass (None for a model without it)."""
    guard = Guard(Policy.model_validate({"execution": {"provider": "cpu"}}), model=model_dir)
    try:
        exchanges = [Exchange(r.prompt, r.response, r.context) for r in rows]
        scores = guard.score_many(exchanges)
    finally:
        guard.close()
    probs = np.array([[s[k] for k in LABELS] for s in scores], dtype=np.float64).reshape(len(rows), len(LABELS))
    injection = np.array([s[INJECTION] for s in scores], dtype=np.float64) if INJECTION in guard.scorer.labels else None
    return probs, injection


def _calibration(args: argparse.Namespace) -> tuple[list[Row], list[Row], dict, dict | None]:
    """(calibration rows, sample rows, families, budgets): from the mix, or from --calib/--sample files."""
    if args.mix:
        from beaverguard.training.mix import build, load_mix

        mix = load_mix(args.mix)
        data = build(mix, args.data_dir)
        budgets = {key: Budget(b.fpr, b.maximize, tuple(b.over)) for key, b in mix.calibration.items()} or None
        return data.calib, data.test, data.families, budgets
    if args.calib is None:
        raise ValueError("pass --mix FILE (its calibration split) or --calib FILE")
    calib = read_jsonl(args.calib)
    sample = getattr(args, "sample", None)  # export only: rows for its checks
    return calib, read_jsonl(sample) if sample else calib, {}, None


def _calibrate_model(model_dir: Path, calib: list[Row], families: dict, budgets: dict | None,
                     report: dict) -> None:
    """Score ``calib`` with the model as the guard runs it; write the chosen thresholds and what they reached."""
    reached: dict = {}
    probs, injection = runtime_scores(model_dir, calib)  # one pass: harm rows and injection rows overlap (chat)
    harm = np.array([r.is_safe is not None for r in calib], dtype=bool)
    thresholds = calibrate([r for r, h in zip(calib, harm) if h], probs[harm], families=families,
                           budgets={k: v for k, v in (budgets or {}).items() if k != INJECTION} or None,
                           report=reached)
    labelled = np.array([r.injection is not None for r in calib], dtype=bool)
    if injection is not None and labelled.any():
        t, reached[INJECTION] = calibrate_injection([r for r, lab in zip(calib, labelled) if lab],
                                                    injection[labelled], families=families,
                                                    budget=(budgets or {}).get(INJECTION))
        for rail in thresholds:
            thresholds[rail][INJECTION] = t
    write_thresholds(model_dir, thresholds)
    report["calibration_rows"] = len(calib)
    report["calibration"] = reached  # the decision's objective and false-positive rate per family
    report["thresholds"] = thresholds
    (Path(model_dir) / "export_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


def _load_calibration(args: argparse.Namespace, command: str) -> tuple[list[Row], list[Row], dict, dict | None]:
    try:
        calib, sample, families, budgets = _calibration(args)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"beaverguard {command}: {exc}") from None
    if not calib:
        raise SystemExit(f"beaverguard {command}: the calibration split has no rows")
    return calib, sample, families, budgets


def run_export(args: argparse.Namespace) -> int:
    calib, sample, families, budgets = _load_calibration(args, "export")
    sample = random.Random(0).sample(sample, min(SAMPLE_SIZE, len(sample)))  # seeded: the same rows every run
    if args.onto:  # a `train --only` run: its refitted classifier rows into the model it started from
        report = export_head(args.checkpoint, args.onto, args.out, name=args.name)
    else:
        report = export(args.checkpoint, args.out, sample, max_length=args.max_length, name=args.name,
                        keep_fp32=args.keep_fp32, precision=args.precision)
    _calibrate_model(args.out, calib, families, budgets, report)
    return 0


def run_calibrate(args: argparse.Namespace) -> int:
    """Recalibrate an exported model in place; the export's own checks in its report are kept."""
    model_dir = Path(args.model)
    if not (model_dir / "beaverguard.json").is_file():
        raise SystemExit(f"beaverguard calibrate: {model_dir} has no beaverguard.json (is it a model directory?)")
    calib, _, families, budgets = _load_calibration(args, "calibrate")
    report_path = model_dir / "export_report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    _calibrate_model(model_dir, calib, families, budgets, report)
    return 0
