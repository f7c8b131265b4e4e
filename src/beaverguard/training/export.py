"""Export a fine-tuned checkpoint to ONNX with optimum, quantize it to int8, and check both steps.

The checks fail loudly: the fp32 ONNX graph must match torch, and the int8 graph
must stay close to fp32 on a held-out sample. The result is a model directory in
the layout the runtime loads (``model.onnx``, ``tokenizer.json``, ``beaverguard.json``).

int8 (dynamic quantization) is the CPU model: about twice as fast as fp32 there,
but not batch-invariant. ``precision="fp32"`` skips quantization and gives the
GPU model: batch-invariant, so a GPU plan's big batches are safe.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from beaverguard._encoding import Encoder
from beaverguard._categories import UNSAFE
from beaverguard.training.data import LABELS, TRAIN_LABELS, Row

__all__ = ["export", "export_head", "ExportCheckError", "check_int8", "quantize", "onnx_probs", "save_trainable",
           "TRAINABLE", "EMBEDDINGS"]

#: Where a model directory keeps its trainable weights (``beaverguard train --init`` continues from them).
TRAINABLE = "trainable"
#: The word embeddings of the trainable weights, int8 with a scale per row (the rest is bf16).
EMBEDDINGS = "embeddings.int8.safetensors"

FP32_TOLERANCE = 1e-4   # max |p_onnx - p_torch| over the sample
INT8_MEAN_TOLERANCE = 0.02  # mean |p_int8 - p_fp32|
# Rows whose probability of some label moves by more than INT8_ROW_DRIFT: at most INT8_ROWS_TOLERANCE of them.
# Not the maximum: on the steep part of a sigmoid one row of a healthy graph can move by 0.5 (shipped v3.3:
# 0.57 at most on 1,500 calib rows, 0.9% of rows past 0.2), so a maximum over 256 rows passed or failed by the draw.
INT8_ROW_DRIFT = 0.2
INT8_ROWS_TOLERANCE = 0.02


class ExportCheckError(RuntimeError):
    """An exported graph disagrees with its source beyond tolerance."""


def onnx_probs(path: Path, feeds: Sequence[dict[str, np.ndarray]]) -> np.ndarray:
    """Sigmoid outputs of an ONNX graph for padded batches, in order (only the inputs it declares are fed)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    logits = [session.run(None, {k: v for k, v in f.items() if k in names})[0] for f in feeds]
    return 1 / (1 + np.exp(-np.concatenate(logits)))


def quantize(fp32: Path, int8: Path) -> Path:
    """Dynamic int8 quantization, per channel (weights int8, activations quantized at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(Path(fp32), Path(int8), weight_type=QuantType.QInt8, per_channel=True)
    return Path(int8)


def check_int8(fp32: Path, int8: Path, feeds: Sequence[dict[str, np.ndarray]]) -> dict[str, float]:
    """Compare the int8 graph with the fp32 one on ``feeds``; raise :class:`ExportCheckError` beyond tolerance.

    Needs onnxruntime alone (no torch), so it also checks a quantized graph made elsewhere.
    """
    fp32_probs = onnx_probs(fp32, feeds)
    int8_probs = onnx_probs(int8, feeds)
    diff = np.abs(int8_probs - fp32_probs)
    drifted = float(np.mean(diff.max(axis=1) > INT8_ROW_DRIFT))
    report = {
        "int8_vs_fp32_max_abs": float(diff.max()),
        "int8_vs_fp32_mean_abs": float(diff.mean()),
        "int8_rows_drifted": drifted,
        "int8_vs_fp32_unsafe_agreement_at_0.5": float(
            np.mean((int8_probs[:, _U] >= 0.5) == (fp32_probs[:, _U] >= 0.5))),
    }
    if diff.mean() > INT8_MEAN_TOLERANCE or drifted > INT8_ROWS_TOLERANCE:
        raise ExportCheckError(f"int8 differs from fp32 by mean {diff.mean():.3f}, and {drifted:.1%} of rows move a "
                               f"probability by more than {INT8_ROW_DRIFT} (tolerances {INT8_MEAN_TOLERANCE} / "
                               f"{INT8_ROWS_TOLERANCE:.0%}; max {diff.max():.3f})")
    return report


_U = LABELS.index(UNSAFE)


def save_trainable(checkpoint: Path, out: Path) -> Path:
    """The checkpoint's weights, with its config and tokenizer, under ``out/trainable``: 34 MB for MiniLM-L6.

    Every tensor in bf16 (half of fp32's bytes; bf16 keeps fp32's exponent range, so training
    continues from them as from the fp32 weights), except the word embeddings, half the model:
    int8 with a scale per row (:data:`EMBEDDINGS`), as the shipped int8 graph holds them.
    ``beaverguard train --init`` widens them back (:func:`beaverguard.training.train.init_checkpoint`).
    The optimizer state is not shipped: a continued run starts its schedule anew.
    """
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForSequenceClassification

    dest = Path(out) / TRAINABLE
    shutil.rmtree(dest, ignore_errors=True)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint, dtype=torch.float32)
    words = model.get_input_embeddings().weight.detach().clone()
    model.to(torch.bfloat16).save_pretrained(dest, safe_serialization=True)
    weights = load_file(dest / "model.safetensors")
    key = next(k for k in weights if k.endswith("word_embeddings.weight"))
    scale = words.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127
    save_file({"int8": torch.round(words / scale).to(torch.int8), "scale": scale.float()}, dest / EMBEDDINGS,
              metadata={"key": key})
    del weights[key]
    save_file(weights, dest / "model.safetensors", metadata={"format": "pt"})
    for name in ("tokenizer.json", "conversation.json"):
        if (Path(checkpoint) / name).is_file():
            shutil.copy(Path(checkpoint) / name, dest / name)
    return dest


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export(checkpoint: Path, out: Path, sample: Sequence[Row], *, max_length: int = 256,
           name: str | None = None, batch_size: int = 16, keep_fp32: Path | None = None,
           precision: Literal["int8", "fp32"] = "int8", trainable: bool = True,
           languages: Sequence[str] = ("en",)) -> dict:
    """Export ``checkpoint`` (a Hugging Face directory) to ``out``; return the check report."""
    import torch
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoModelForSequenceClassification

    checkpoint, out = Path(checkpoint), Path(out)
    encoder = Encoder(checkpoint / "tokenizer.json", max_length)
    encs = encoder.encode([r.prompt for r in sample], [r.response for r in sample])
    feeds = [encoder.pad(encs[s:s + batch_size]) for s in range(0, len(encs), batch_size)]
    report: dict = {"sample": len(sample)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        ORTModelForSequenceClassification.from_pretrained(checkpoint, export=True).save_pretrained(tmp / "fp32")
        fp32 = tmp / "fp32" / "model.onnx"
        report["export_s"] = round(time.perf_counter() - start, 1)

        model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
        with torch.no_grad():
            torch_probs = np.concatenate([torch.sigmoid(model(**{k: torch.from_numpy(v) for k, v in f.items()})
                                                        .logits).numpy() for f in feeds])
        fp32_probs = onnx_probs(fp32, feeds)
        report["fp32_vs_torch_max_abs"] = float(np.abs(fp32_probs - torch_probs).max())
        if report["fp32_vs_torch_max_abs"] > FP32_TOLERANCE:
            raise ExportCheckError(f"ONNX fp32 differs from torch by {report['fp32_vs_torch_max_abs']:.2e} "
                                   f"(tolerance {FP32_TOLERANCE:.0e})")

        report["precision"] = precision
        report["fp32_bytes"] = fp32.stat().st_size
        shipped = fp32
        if precision == "int8":
            shipped = quantize(fp32, tmp / "model.int8.onnx")
            # Row by row, as the guard runs a graph that is not batch-invariant: in a padded batch the
            # dynamic activation scale is the batch's, and the check measured an error no user meets.
            report.update(check_int8(fp32, shipped, [encoder.pad([e]) for e in encs]))
            report["int8_bytes"] = shipped.stat().st_size

        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(shipped, out / "model.onnx")
        if keep_fp32:  # for benchmarks; never shipped
            shutil.copy(fp32, keep_fp32)
        shutil.copy(checkpoint / "tokenizer.json", out / "tokenizer.json")
    labels = json.loads((checkpoint / "config.json").read_text())["id2label"]
    labels = [labels[str(i)] for i in range(len(labels))]
    if tuple(labels) not in (LABELS, TRAIN_LABELS):
        raise ExportCheckError(f"checkpoint labels {labels} are neither {list(LABELS)} nor {list(TRAIN_LABELS)}")
    if trainable:
        save_trainable(checkpoint, out)
    spec = {
        "name": name or out.name,
        "labels": labels,
        "max_length": max_length,
        "layout": "bert-pair",
        "activation": "sigmoid",
        "batch_invariant": precision != "int8",  # dynamic int8: one activation scale per run, so rows run alone
        "languages": list(languages),
        **({"conversation": json.loads((checkpoint / "conversation.json").read_text())}
           if (checkpoint / "conversation.json").is_file() else {}),
        "thresholds": {"input": {k: 0.5 for k in labels}, "output": {k: 0.5 for k in labels}},
        **({"trainable": TRAINABLE} if trainable else {}),
        "sha256": {"model.onnx": _sha256(out / "model.onnx"), "tokenizer.json": _sha256(out / "tokenizer.json")},
    }
    (out / "beaverguard.json").write_text(json.dumps(spec, indent=2) + "\n")
    return report


def export_head(checkpoint: Path, onto: Path, out: Path, *, name: str | None = None) -> dict:
    """A copy of the model directory ``onto`` with the classifier rows ``checkpoint`` refitted (``train --only``).

    Why not :func:`export`: it would quantize the whole encoder anew from the bf16 trainable weights and
    move every score a little (refitted rows exported whole with v3.5's encoder flagged 1.5 points more of
    OKTest at equal CatQA recall than the same rows written into v3.5's graph). Here the graph is
    ``onto``'s, and only the refitted outputs' columns of its int8 classifier (per-column scales,
    symmetric, as :func:`quantize` made them) and their biases change, so the other outputs score bit
    for bit as before. Refuses a checkpoint whose encoder is not ``onto``'s.
    """
    import onnx
    import torch
    from onnx import TensorProto, numpy_helper
    from onnxruntime.quantization.quant_utils import quantize_data
    from safetensors.torch import load_file, save_file

    from beaverguard.training.train import init_checkpoint

    checkpoint, onto, out = Path(checkpoint), Path(onto), Path(out)
    new = load_file(checkpoint / "model.safetensors")
    with tempfile.TemporaryDirectory() as tmp:
        old = load_file(init_checkpoint(onto, Path(tmp)) / "model.safetensors")
    moved = sorted(k for k in old
                   if not k.startswith("classifier.") and not torch.equal(old[k].float(), new[k].float()))
    if moved or old.keys() != new.keys():
        raise ExportCheckError(f"{checkpoint}: its encoder is not {onto}'s ({(moved or ['layout'])[0]} differs); "
                               "only a `beaverguard train --init ONTO --only ...` run exports this way")
    w, b = new["classifier.weight"].float().numpy(), new["classifier.bias"].float().numpy()
    rows = [i for i in range(len(w)) if not (np.array_equal(w[i], old["classifier.weight"][i].float().numpy())
                                            and b[i] == old["classifier.bias"][i].float().item())]
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(onto, out)
    graph = onnx.load(str(out / "model.onnx"))
    init = {t.name: t for t in graph.graph.initializer}
    quantized = numpy_helper.to_array(init["classifier.weight_Transposed_quantized"]).copy()  # (hidden, labels)
    scales = numpy_helper.to_array(init["classifier.weight_Transposed_scale"]).copy()
    zeros = numpy_helper.to_array(init["classifier.weight_Transposed_zero_point"])
    bias = numpy_helper.to_array(init["classifier.bias"]).copy()
    if zeros.any():
        raise ExportCheckError(f"{onto}: its classifier is not quantized symmetrically; export the checkpoint whole")
    for i in rows:
        _, scale, q = quantize_data(w[i], TensorProto.INT8, symmetric=True)
        quantized[:, i], scales[i], bias[i] = q, np.asarray(scale).reshape(()), b[i]
    for key, value in (("classifier.weight_Transposed_quantized", quantized),
                       ("classifier.weight_Transposed_scale", scales), ("classifier.bias", bias)):
        init[key].CopyFrom(numpy_helper.from_array(value.astype(numpy_helper.to_array(init[key]).dtype), key))
    onnx.save(graph, str(out / "model.onnx"))

    trainable = out / TRAINABLE / "model.safetensors"
    weights = load_file(trainable)
    for key in ("classifier.weight", "classifier.bias"):
        weights[key] = new[key].to(weights[key].dtype).contiguous()
    save_file(weights, trainable, metadata={"format": "pt"})
    spec = json.loads((out / "beaverguard.json").read_text())
    spec["name"] = name or out.name
    spec["sha256"]["model.onnx"] = _sha256(out / "model.onnx")
    (out / "beaverguard.json").write_text(json.dumps(spec, indent=2) + "\n")
    labels = spec["labels"]
    before = out / "export_report.json"  # the encoder's export checks still describe this graph
    checks = json.loads(before.read_text()) if before.is_file() else {}
    checks = {k: v for k, v in checks.items() if not k.startswith(("calibration", "thresholds"))}
    return {"head_of": str(onto), "refitted": [labels[i] for i in rows], "graph_export": checks}
