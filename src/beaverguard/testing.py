"""A tiny real ONNX model for tests: same directory layout and inputs as the default model.

It sums per-token weights: harm words push their categories and ``unsafe``
up, refusal words push everything down; with ``injection=True`` it has the
``injection`` output too, which "ignore" and "instructions" push up. A prompt alone is judged whole; in a
prompt-response pair only the response counts, so a harmful question with a
harmless answer is safe, as in BeaverTails QA moderation. Needs the
``onnx`` package (in the ``test`` extra), not torch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from beaverguard._categories import INJECTION, LABELS, resolve

__all__ = ["build_tiny_model", "TINY_WORDS", "TINY_INJECTION_WORDS"]

#: Words that raise only the ``injection`` output (in a model built with ``injection=True``).
TINY_INJECTION_WORDS = ("ignore", "instructions")

#: word -> categories it raises ("" = only the overall unsafe score; "refusal" lowers all).
TINY_WORDS: dict[str, tuple[str, ...]] = {
    "bomb": ("violence", "drugs_weapons"),
    "kill": ("violence",),
    "poison": ("violence",),
    "meth": ("drugs_weapons",),
    "steal": ("financial_crime",),
    "naked": ("sexual",),
    "idiot": ("hate_speech",),
    "address": ("privacy",),
    "suicide": ("self_harm",),
    "sorry": ("refusal",),
    "cannot": ("refusal",),
}
_FILLER = ["hello", "how", "do", "i", "make", "a", "the", "bread", "cake", "what", "is", "weather",
           "today", "you", "here", "it", "to", "and", "recipe", "flour", "water", "salt", "help", "me",
           "please", "tell", "about", "history", "of", "rome", "can", "nice", "day", "thanks"]


def build_tiny_model(path: str | Path, *, max_length: int = 32, injection: bool = False) -> Path:
    """Write a tiny model directory at ``path`` and return it (with the ``injection`` output if asked)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3}
    labels = (*LABELS, INJECTION) if injection else LABELS
    for word in [*TINY_WORDS, *TINY_INJECTION_WORDS, *_FILLER]:
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()])
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.save(str(path / "tokenizer.json"))

    weights = np.zeros((len(vocab), len(labels)), dtype=np.float32)
    for word, cats in TINY_WORDS.items():
        row = weights[vocab[word]]
        if cats == ("refusal",):
            row[:] = -20.0
            continue
        row[LABELS.index("unsafe")] = 10.0
        for c in cats:
            row[LABELS.index(resolve(c))] = 10.0
    if injection:
        for word in TINY_INJECTION_WORDS:
            weights[vocab[word], -1] = 5.0  # both words, or one twice: 0.5 and up
    bias = np.full(len(labels), -4.0, dtype=np.float32)

    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["embedding", "input_ids"], ["tok"]),               # B,T,L
            helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),  # B,T
            # In a pair only the response counts (QA moderation); a prompt alone counts whole.
            helper.make_node("Cast", ["token_type_ids"], ["typef"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMax", ["typef"], ["is_pair"], axes=[1], keepdims=1),   # B,1
            helper.make_node("Sub", ["one", "typef"], ["not_type"]),
            helper.make_node("Mul", ["is_pair", "not_type"], ["drop"]),
            helper.make_node("Sub", ["one", "drop"], ["weight"]),
            helper.make_node("Mul", ["maskf", "weight"], ["maskw"]),
            helper.make_node("Unsqueeze", ["maskw", "axis2"], ["mask3"]),                  # B,T,1
            helper.make_node("Mul", ["tok", "mask3"], ["masked"]),
            helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),    # B,L
            helper.make_node("Add", ["summed", "bias"], ["logits"]),
        ],
        "beaverguard_tiny",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
         for n in ("input_ids", "attention_mask", "token_type_ids")],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(labels)])],
        initializer=[numpy_helper.from_array(weights, "embedding"), numpy_helper.from_array(bias, "bias"),
                     numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
                     numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
                     numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path / "model.onnx"))

    spec = {
        "name": "beaverguard-tiny-test",
        "labels": list(labels),
        "max_length": max_length,
        "layout": "bert-pair",
        "activation": "sigmoid",
        "thresholds": {"input": {k: 0.5 for k in labels}, "output": {k: 0.5 for k in labels}},
        "sha256": {name: hashlib.sha256((path / name).read_bytes()).hexdigest()
                   for name in ("model.onnx", "tokenizer.json")},
    }
    (path / "beaverguard.json").write_text(json.dumps(spec, indent=2))
    return path
