"""The model alone, three ways: the shipped int8 ONNX, the fp32 ONNX, the torch checkpoint.

    python benchmarks/bench_model.py --fp32 /path/model.fp32.onnx --torch /path/hf
    python benchmarks/bench_model.py --baseline old.onnx --name model_vs_previous

The fp32 ONNX comes from ``beaverguard export --keep-fp32 PATH``; the torch
checkpoint (Hugging Face layout) from ``beaverguard train``. Either may be left
out. ``--baseline`` adds another int8 graph, such as the previous default
(``git show REV:onnx_models/beaverguard-minilm-l6-int8/model.onnx > old.onnx``),
to hold a new model to the old one's speed. All of them get the same token ids (the shipped tokenizer) and their default
thread counts; the measurements are interleaved, model by model, in each pass.
torch is imported here only, and only with ``--torch``.
"""

from __future__ import annotations  # noqa: I001  (_common is this folder's module)

import argparse
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from _common import DEFAULT_MODEL_DIR, SEED, load_pairs, median, pct, report, table

Feed = dict[str, np.ndarray]


def encode(tok: Tokenizer, pairs: list[tuple[str, str]], length: int) -> Feed:
    """BERT pair inputs truncated to ``length`` tokens, padded to the longest of the batch."""
    tok.enable_truncation(max_length=length, strategy="longest_first")
    tok.enable_padding(pad_id=tok.token_to_id("[PAD]") or 0, length=None)  # to the longest of the batch
    encs = tok.encode_batch(pairs)
    return {"input_ids": np.array([e.ids for e in encs], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encs], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encs], dtype=np.int64)}


def onnx_runner(path: Path) -> Callable[[Feed], np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return lambda feed: session.run(None, {k: v for k, v in feed.items() if k in names})[0]


def torch_runner(path: Path) -> tuple[Callable[[Feed], np.ndarray], str]:
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(path), local_files_only=True).eval()

    def run(feed: Feed) -> np.ndarray:
        with torch.inference_mode():
            return model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()

    return run, f"torch {torch.__version__} ({torch.get_num_threads()} threads)"


def _max_diff(a: np.ndarray, b: np.ndarray) -> str:
    """Largest probability difference over the outputs both graphs have (a newer model may add some)."""
    n = min(a.shape[1], b.shape[1])
    return f"{np.abs(a[:, :n] - b[:, :n]).max():.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--int8", type=Path, default=DEFAULT_MODEL_DIR / "model.onnx", help="shipped int8 ONNX")
    ap.add_argument("--fp32", type=Path, help="fp32 ONNX of the same checkpoint (beaverguard export --keep-fp32)")
    ap.add_argument("--torch", type=Path, help="Hugging Face checkpoint directory (beaverguard train)")
    ap.add_argument("--baseline", type=Path, help="another int8 ONNX to compare (e.g. the previous default model)")
    ap.add_argument("--tokenizer", type=Path, default=DEFAULT_MODEL_DIR / "tokenizer.json")
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--latency-inputs", type=int, default=16, help="distinct 128-token exchanges per pass")
    ap.add_argument("--batches", type=int, default=4, help="batches of 32 per pass")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--name", default="model")
    args = ap.parse_args()
    kw = {"path": args.data} if args.data else {}

    tok = Tokenizer.from_file(str(args.tokenizer))  # it may carry the export's fixed padding: set below
    pool = load_pairs(1000, **kw)
    # Exchanges of at least 128 tokens, cut to exactly 128: one "128-token exchange" each.
    tok.no_truncation()
    tok.no_padding()
    long = [p for p, e in zip(pool, tok.encode_batch(pool)) if len(e.ids) >= 128][: args.latency_inputs]
    singles = [encode(tok, [p], 128) for p in long]
    assert all(f["input_ids"].shape == (1, 128) for f in singles)
    # Batches of 32 exchanges as they come (random order), cut at the model's 256-token window.
    rng = random.Random(SEED)
    rng.shuffle(pool)
    batches = [encode(tok, pool[i * 32:(i + 1) * 32], 256) for i in range(args.batches)]

    models: dict[str, Callable[[Feed], np.ndarray]] = {"int8 ONNX (shipped)": onnx_runner(args.int8)}
    notes = [(f"onnxruntime {ort.__version__}, CPUExecutionProvider, default session options (intra-op threads "
              "= cores)")]
    if args.fp32:
        models["fp32 ONNX"] = onnx_runner(args.fp32)
    if args.baseline:
        models[f"baseline int8 ({args.baseline.name})"] = onnx_runner(args.baseline)
    if args.torch:
        models["torch checkpoint"], note = torch_runner(args.torch)
        notes.append(note)

    ref = {name: [run(b) for b in batches] for name, run in models.items()}  # warm-up, and outputs to compare
    lat = {name: [] for name in models}
    tput = {name: [] for name in models}
    order = list(models)
    for rep in range(args.repeats):
        for name in order[rep % len(order):] + order[:rep % len(order)]:
            run = models[name]
            for feed in singles:
                t = time.perf_counter()
                run(feed)
                lat[name].append(time.perf_counter() - t)
            t = time.perf_counter()
            for feed in batches:
                run(feed)
            tput[name].append(32 * len(batches) / (time.perf_counter() - t))
        print(f"pass {rep + 1}/{args.repeats} done")

    base = "int8 ONNX (shipped)"
    sig = {n: 1 / (1 + np.exp(-np.concatenate(r))) for n, r in ref.items()}
    rows = []
    for name in models:
        rows.append([name, median(lat[name]) * 1e3, pct(lat[name], 90) * 1e3,
                     f"{median(lat[name]) / median(lat[base]):.2f}", median(tput[name]),
                     f"{median(tput[name]) / median(tput[base]):.2f}",
                     _max_diff(sig[name], sig[base])])
    tokens = [int(b["attention_mask"].sum(1).max()) for b in batches]
    body = (f"Latency: {len(singles)} distinct exchanges cut to exactly 128 tokens, batch 1, each run once per "
            f"pass. Throughput: {len(batches)} batches of 32 exchanges in arrival order, cut at 256 tokens and "
            f"padded to the longest of each batch (widths {tokens}). {args.repeats} passes, models interleaved, "
            "the order rotated each pass; figures are medians.\n\n"
            + table(["model", "p50 ms (128 tokens)", "p90 ms", "latency vs int8", "exchanges/s (batch 32)",
                     "throughput vs int8", "max abs diff of probabilities vs int8"], rows)
            + "\n\nRuntimes: " + "; ".join(notes) + ".\n")
    report(args.name, "The model alone: int8 ONNX vs fp32 ONNX vs torch", body,
           packages=["torch", "transformers"] if args.torch else [])


if __name__ == "__main__":
    main()
