"""beaverguard against what a user would pick instead, same model, same exchanges, 32 at once.

    python benchmarks/bench_peers.py --hf /path/hf \\
        --transformers-python /path/venv-with-torch/bin/python \\
        --llmguard-python /path/venv-llmguard/bin/python

Peers (installed from benchmarks/requirements-peers.txt, each in its own venv if
their pins clash; never in beaverguard's runtime dependencies):

* Hugging Face ``transformers`` ``pipeline("text-classification", top_k=None,
  function_to_apply="sigmoid")`` on the torch checkpoint;
* LLM Guard (``llm_guard.scan_output``) with a scanner that keeps our 15 labels,
  on the same int8 ONNX model that beaverguard ships (its ONNX Runtime path).

Each peer runs in a subprocess (``--worker``) with the Python that has it, and is
measured two ways, of which the faster counts: 32 client threads each scoring one
exchange at a time (what a server does), and one call on all exchanges with
``batch_size=32`` (transformers only; LLM Guard scans one output per call).
beaverguard: 32 asyncio clients calling ``check_output``. The passes alternate
beaverguard and the peers. The torch checkpoint comes from ``beaverguard train``.
LLM Guard is also run once per pass with its stock Toxicity scanner's pipeline
settings (torch, every input padded to 512 tokens), for context only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import DEFAULT_MODEL_DIR, load_pairs, median, report, table

LABELS_KEPT = 15
TARGET = 3.0


# -- peers (run in the peer's own Python) -----------------------------------------------------

def _threads(score_one, pairs: list[tuple[str, str]], clients: int) -> float:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda pr: score_one(*pr), pairs))
    return len(pairs) / (time.perf_counter() - t0)


def worker_transformers(hf: Path, pairs: list[tuple[str, str]], clients: int) -> dict:
    import torch
    import transformers
    from transformers import pipeline

    pipe = pipeline("text-classification", model=str(hf), top_k=None, function_to_apply="sigmoid", device=-1)
    kw = {"truncation": True, "max_length": 256}
    one = lambda p, r: pipe({"text": p, "text_pair": r}, **kw)
    assert len(one(*pairs[0])) == LABELS_KEPT
    for p, r in pairs[:8]:
        one(p, r)
    inputs = [{"text": p, "text_pair": r} for p, r in pairs]
    t0 = time.perf_counter()
    pipe(inputs, batch_size=32, **kw)
    batched = len(pairs) / (time.perf_counter() - t0)
    return {"modes": {f"{clients} client threads": _threads(one, pairs, clients),
                      "one call, batch_size=32": batched},
            "versions": f"transformers {transformers.__version__}, torch {torch.__version__} "
                        f"({torch.get_num_threads()} threads)"}


def worker_llmguard(hf: Path, onnx: Path, pairs: list[tuple[str, str]], clients: int) -> dict:
    from importlib import metadata

    from llm_guard import scan_output
    from llm_guard.model import Model
    from llm_guard.transformers_helpers import get_tokenizer_and_model_for_classification, pipeline

    with tempfile.TemporaryDirectory() as tmp:  # an ONNX model dir as optimum reads it
        for name in ("config.json", "tokenizer.json"):
            shutil.copy(hf / name, tmp)
        os.symlink(onnx.resolve(), Path(tmp) / "model.onnx")

        class BeaverTailsQA:
            """Like LLM Guard's Toxicity scanner, but on the prompt-response pair and all 15 labels."""

            def __init__(self, threshold: float = 0.5, use_onnx: bool = True, **pipeline_kwargs) -> None:
                model = Model(path=tmp, onnx_path=tmp if use_onnx else None, kwargs={"local_files_only": True},
                              pipeline_kwargs={"top_k": None, "function_to_apply": "sigmoid", "truncation": True,
                                               "max_length": 256, **pipeline_kwargs})
                if not use_onnx:
                    model.path = str(hf)
                tokenizer, tf_model = get_tokenizer_and_model_for_classification(model=model, use_onnx=use_onnx)
                self._pipeline = pipeline(task="text-classification", model=tf_model, tokenizer=tokenizer,
                                          **model.pipeline_kwargs)
                self._threshold = threshold

            def scan(self, prompt: str, output: str) -> tuple[str, bool, float]:
                results = self._pipeline({"text": prompt, "text_pair": output})
                assert len(results) == LABELS_KEPT
                top = max(r["score"] for r in results)
                return output, top < self._threshold, top

        scanner = BeaverTailsQA()
        one = lambda p, r: scan_output([scanner], p, r)
        for p, r in pairs[:8]:
            one(p, r)
        modes = {f"{clients} client threads": _threads(one, pairs, clients), "1 client": _threads(one, pairs, 1)}
        # For context, not counted as its best: the stock Toxicity scanner's settings (torch, padding to 512).
        stock = BeaverTailsQA(use_onnx=False, padding="max_length", max_length=512)
        stock_one = lambda p, r: scan_output([stock], p, r)
        stock_one(*pairs[0])
        modes[f"stock settings: torch, padding to 512, {clients} client threads"] = _threads(stock_one, pairs, clients)
        return {"modes": modes,
                "versions": f"llm-guard {metadata.version('llm-guard')}, optimum {metadata.version('optimum')}, "
                            f"onnxruntime {metadata.version('onnxruntime')}"}


# -- beaverguard (this Python) ----------------------------------------------------------------

def guard_rate(guard, pairs: list[tuple[str, str]], clients: int) -> float:
    import asyncio

    async def run() -> float:
        todo = iter(pairs)

        async def client() -> None:
            for p, r in todo:
                await guard.check_output(p, r)

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        return len(pairs) / (time.perf_counter() - t0)

    return asyncio.run(run())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hf", type=Path, required=True, help="the torch checkpoint (Hugging Face layout)")
    ap.add_argument("--onnx", type=Path, default=DEFAULT_MODEL_DIR / "model.onnx",
                    help="ONNX model for LLM Guard (default: beaverguard's shipped int8)")
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR, help="beaverguard model directory")
    ap.add_argument("--transformers-python", default=sys.executable, help="a Python with torch + transformers")
    ap.add_argument("--llmguard-python", default=None, help="a Python with llm-guard[onnxruntime]; omit to skip")
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("-n", type=int, default=128, help="exchanges per measurement")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--name", default="peers")
    ap.add_argument("--worker", choices=["transformers", "llmguard"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    kw = {"path": args.data} if args.data else {}
    pairs = load_pairs(args.n, **kw)

    if args.worker:  # inside the peer's Python: measure and print one JSON line
        out = (worker_transformers(args.hf, pairs, args.clients) if args.worker == "transformers"
               else worker_llmguard(args.hf, args.onnx, pairs, args.clients))
        print("RESULT " + json.dumps(out))
        return

    from beaverguard import Guard, Policy

    guard = Guard(Policy.model_validate({"timeout_s": 300}), model=args.model)
    guard_rate(guard, pairs[:32], args.clients)  # warm up
    peers = {"transformers pipeline (torch)": args.transformers_python}
    if args.llmguard_python:
        peers["LLM Guard scan_output (ONNX Runtime, same int8 model)"] = args.llmguard_python
    rates: dict[str, list[float]] = {"beaverguard": []}
    modes: dict[str, dict[str, list[float]]] = {p: {} for p in peers}
    versions: dict[str, str] = {}
    for rep in range(args.repeats):
        rates["beaverguard"].append(guard_rate(guard, pairs, args.clients))
        print(f"pass {rep + 1}: beaverguard {rates['beaverguard'][-1]:.1f} ex/s", file=sys.stderr)
        for label, python in peers.items():
            worker = "transformers" if label.startswith("transformers") else "llmguard"
            cmd = [python, __file__, "--worker", worker, "--hf", str(args.hf), "--onnx", str(args.onnx),
                   "-n", str(args.n), "--clients", str(args.clients)] + (["--data", str(args.data)] if args.data else [])
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)  # its stderr explains a failure
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{label} failed:\n{proc.stderr[-3000:]}")
            res = json.loads(line[len("RESULT "):])
            versions[label] = res["versions"]
            for mode, rate in res["modes"].items():
                modes[label].setdefault(mode, []).append(rate)
            print(f"pass {rep + 1}: {label} {res['modes']}", file=sys.stderr)
            rates["beaverguard"].append(guard_rate(guard, pairs, args.clients))  # beaverguard around each peer
    guard.close()

    ours = median(rates["beaverguard"])
    rows = [[f"beaverguard `check_output`, {args.clients} asyncio clients", ours, "-", "1.00"]]
    summary = []
    for label, by_mode in modes.items():
        best_mode = max((m for m in by_mode if not m.startswith("stock")), key=lambda m: median(by_mode[m]))
        for mode, rs in by_mode.items():
            rows.append([label, median(rs), mode + (" (best)" if mode == best_mode else ""),
                         f"{median(rs) / ours:.2f}"])
        ratio = ours / median(by_mode[best_mode])
        summary.append(f"beaverguard / {label.split(' (')[0]} (its best mode) = **{ratio:.1f}x** "
                       f"(target >= {TARGET:.0f}x: {'meets' if ratio >= TARGET else 'MISSES'})")
    body = (f"{args.n} BeaverTails QA exchanges, {args.clients} concurrent clients, {args.repeats} passes; "
            "beaverguard was measured before and after each peer in every pass (median of all). Peers truncate "
            "each exchange to 256 tokens; beaverguard scores long ones whole, in windows, so it does at least "
            "as much model work. LLM Guard's stock scanners also pad every input to `max_length`; the scanner "
            "here does not, which favours LLM Guard.\n\n"
            + table(["scorer", "exchanges/s", "mode", "vs beaverguard"], rows)
            + "\n\n" + "\n".join(f"- {s}" for s in summary)
            + "\n\nPeer versions: " + "; ".join(f"{k}: {v}" for k, v in versions.items()) + ".\n")
    report(args.name, f"beaverguard vs peers at concurrency {args.clients}", body)


if __name__ == "__main__":
    main()
