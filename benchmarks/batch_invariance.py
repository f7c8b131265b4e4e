"""Do a row's scores depend on the other rows of its run? (They must not, for a guard.)

Scores every row of a labelled file twice with the same model: each exchange
alone, and in length-sorted runs of ``--batch`` exchanges (what a batching plan
would do). Prints the largest difference in probability and how many of the
default policy's decisions flip. The shipped int8 model (dynamic activation
quantization: one scale per run) is not batch-invariant, which is why its
``beaverguard.json`` says ``batch_invariant: false`` and the guard runs each
exchange alone.

With ``--fp32`` (the fp32 export the shipped model was quantized from; needs the
``train`` extra) it also builds the int8 graphs that *are* batch-invariant and
compares them with the shipped one: static quantization (activation scales fixed
by calibration on ``--calib`` rows, not per run) and weight-only int8
(``MatMulNBits``, activations quantized per row block). The question it answers:
is there an int8 model as fast and as close to fp32 that could batch?

    python benchmarks/batch_invariance.py --data FILE.jsonl [--batch 8]
    python benchmarks/batch_invariance.py --fp32 model.fp32.onnx   # + the batch-invariant alternatives
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import DEFAULT_DATA, DEFAULT_MODEL_DIR, ROOT, report, table

from beaverguard import Exchange, Guard, OnnxScorer
from beaverguard.training.data import read_jsonl
from beaverguard.training.metrics import average_precision

DEFAULT_CALIB = ROOT.parent / "shared" / "data" / "pku_saferlhf_sample.jsonl"


def invariance(args: argparse.Namespace, rows: list) -> str:
    """The shipped model, alone vs in runs: score differences and flipped decisions."""
    exchanges = [Exchange(r.prompt, r.response) for r in rows]
    alone_scorer = OnnxScorer(args.model, threads=1, batch_size=1)
    batch_scorer = OnnxScorer(args.model, threads=1, batch_size=args.batch)  # runs sorted by length
    labels = alone_scorer.labels
    alone = np.array([[s[k] for k in labels] for e in exchanges for s in alone_scorer.score([e])])
    batched = np.array([[s[k] for k in labels] for s in batch_scorer.score(exchanges)])
    guard = Guard(model=args.model)
    try:
        def actions(probs: np.ndarray) -> list[str]:
            return [guard.judge("input" if e.response is None else "output", dict(zip(labels, p)))[0].value
                    for e, p in zip(exchanges, probs)]
        flips = sum(a != b for a, b in zip(actions(alone), actions(batched)))
    finally:
        guard.close()
    diff = np.abs(alone - batched)
    return (f"{len(rows)} rows of `{args.data.name}`, model `{alone_scorer.spec.name}` "
            f"(`batch_invariant: {str(alone_scorer.batch_invariant).lower()}` in its beaverguard.json), "
            f"each exchange alone vs length-sorted runs of {args.batch}.\n\n"
            + table(["max abs diff", "mean abs diff", "rows whose scores changed", "decisions flipped"],
                    [[f"{diff.max():.4f}", f"{diff.mean():.6f}", int((diff.max(1) > 1e-6).sum()),
                      f"{flips} of {len(rows)}"]]) + "\n")


def build_alternatives(fp32: Path, calib_feeds: list[dict[str, np.ndarray]], out: Path) -> dict[str, Path]:
    """The batch-invariant int8 graphs of ``fp32``: static (QDQ) and weight-only (MatMulNBits)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    class Feeds(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calib_feeds)

        def get_next(self) -> dict | None:
            return next(self.it, None)

    static = out / "static.onnx"
    quantize_static(str(fp32), str(static), Feeds(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["MatMul", "Gemm"], calibrate_method=CalibrationMethod.MinMax)
    nbits = out / "nbits.onnx"
    quantizer = MatMulNBitsQuantizer(onnx.load(str(fp32)), bits=8, block_size=32, is_symmetric=True,
                                     accuracy_level=4)  # 4: int8 compute, activations quantized per block
    quantizer.process()
    quantizer.model.save_model_to_file(str(nbits), use_external_data_format=False)
    return {"int8 static (QDQ, per-channel weights, min-max calibration)": static,
            "int8 weight-only (MatMulNBits, 8 bits, blocks of 32)": nbits}


def alternatives(args: argparse.Namespace, rows: list) -> str:
    """Speed, closeness to fp32, batch invariance and AUPRC of each int8 variant and fp32."""
    import onnxruntime as ort

    scorer = OnnxScorer(args.model, threads=1, batch_size=1)
    windows = [(e.ids, e.type_ids) for e in scorer.encoder.encode([r.prompt for r in rows],
                                                                  [r.response for r in rows])]
    calib = read_jsonl(args.calib)[: args.calib_rows]
    calib_feeds = [scorer.encoder.pad([e]) for e in scorer.encoder.encode([r.prompt for r in calib],
                                                                          [r.response for r in calib])]
    y = np.array([not r.is_safe for r in rows], dtype=int)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1  # the guard's CPU plan: one thread per run

    def measure(path: Path) -> tuple[np.ndarray, np.ndarray, float]:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = {i.name for i in session.get_inputs()}

        def run(batch: list) -> np.ndarray:
            feed = scorer.encoder.pad(batch)
            return session.run(None, {k: v for k, v in feed.items() if k in names})[0]
        run(windows[:1])  # warm up
        start = time.perf_counter()
        alone = np.concatenate([run([w]) for w in windows])
        ms = (time.perf_counter() - start) / len(windows) * 1e3
        order = np.argsort([len(w[0]) for w in windows], kind="stable")
        batched = np.empty_like(alone)
        for s in range(0, len(order), args.batch):
            sel = order[s:s + args.batch]
            batched[sel] = run([windows[i] for i in sel])
        return 1 / (1 + np.exp(-alone)), 1 / (1 + np.exp(-batched)), ms

    with tempfile.TemporaryDirectory() as tmp:
        variants = {"int8 dynamic (shipped)": scorer.spec.path / "model.onnx", "fp32": args.fp32,
                    **build_alternatives(args.fp32, calib_feeds, Path(tmp))}
        results = {name: (*measure(path), path.stat().st_size / 2**20) for name, path in variants.items()}
    ref = results["fp32"][0]
    shipped_ms = results["int8 dynamic (shipped)"][2]
    out = []
    for name, (alone, batched, ms, mb) in results.items():
        diff = np.abs(alone - ref)
        out.append([name, f"{ms:.2f}", f"{ms / shipped_ms:.2f}", f"{mb:.0f}", f"{diff.mean():.4f}",
                    f"{diff.max():.3f}", f"{np.abs(alone - batched).max():.1e}",
                    f"{average_precision(y, alone[:, -1]):.4f}"])
    return (f"\n## Batch-invariant int8 alternatives\n\n"
            f"From `{args.fp32.name}` (the fp32 export of the shipped model). Each exchange of the {len(rows)} rows "
            f"is cut to one window of {scorer.spec.max_length} tokens and run alone on a single-threaded session "
            f"(ms / exchange), then in length-sorted runs of {args.batch} (batch diff). Static calibration: "
            f"the first {len(calib)} rows of `{args.calib.name}` (not the rows measured). AUPRC of the `unsafe` "
            f"output against the rows' labels.\n\n"
            + table(["graph", "ms / exchange", "vs shipped", "MB", "mean abs diff vs fp32", "max abs diff vs fp32",
                     "batch diff (max)", "AUPRC unsafe"], out) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--fp32", type=Path, help="fp32 ONNX export of the model: also compare batch-invariant int8")
    parser.add_argument("--calib", type=Path, default=DEFAULT_CALIB, help="rows that calibrate static quantization")
    parser.add_argument("--calib-rows", type=int, default=300)
    args = parser.parse_args()
    rows = read_jsonl(args.data)
    body = invariance(args, rows)
    if args.fp32:
        body += alternatives(args, rows)
    report("batch_invariance", "Batch invariance of the model", body)


if __name__ == "__main__":
    main()
