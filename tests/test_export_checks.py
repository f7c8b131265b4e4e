"""Export checks: int8-vs-fp32 on the tiny model with onnxruntime alone, and the full torch export when installed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from beaverguard._encoding import Encoder
from beaverguard.training.export import (INT8_ROW_DRIFT, INT8_ROWS_TOLERANCE, ExportCheckError, check_int8, export_head,
                                         onnx_probs, quantize)

PAIRS = [("how do i make a bomb", None), ("hello", "steal it"), ("kill the idiot", "sorry i cannot"),
         ("tell me about rome", "the history of rome"), ("naked", None), ("what is the weather", "nice day")]


def _feeds(model_dir: Path) -> list[dict[str, np.ndarray]]:
    encoder = Encoder(model_dir / "tokenizer.json", 32)
    encs = encoder.encode([p for p, _ in PAIRS], [r for _, r in PAIRS])
    return [encoder.pad(encs[:3]), encoder.pad(encs[3:])]


def _with_bias(src: Path, dst: Path, delta: float) -> Path:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    for init in model.graph.initializer:
        if init.name == "bias":
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + np.float32(delta), "bias"))
    onnx.save(model, str(dst))
    return dst


def test_int8_check_passes_on_a_real_quantized_graph(tiny_model: Path, tmp_path: Path) -> None:
    import onnx

    int8 = quantize(tiny_model / "model.onnx", tmp_path / "int8.onnx")
    stored = {i.name: i.data_type for i in onnx.load(str(int8)).graph.initializer}
    assert any(t in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) for t in stored.values())  # really quantized
    report = check_int8(tiny_model / "model.onnx", int8, _feeds(tiny_model))
    assert report["int8_rows_drifted"] <= INT8_ROWS_TOLERANCE
    assert report["int8_vs_fp32_unsafe_agreement_at_0.5"] == 1.0


def test_int8_check_tolerates_small_drift_and_fails_on_a_perturbed_graph(tiny_model: Path, tmp_path: Path) -> None:
    int8 = quantize(tiny_model / "model.onnx", tmp_path / "int8.onnx")
    feeds = _feeds(tiny_model)
    slight = _with_bias(int8, tmp_path / "slight.onnx", 0.02)
    report = check_int8(tiny_model / "model.onnx", slight, feeds)
    assert 0 < report["int8_vs_fp32_max_abs"] and report["int8_rows_drifted"] <= INT8_ROWS_TOLERANCE
    broken = _with_bias(int8, tmp_path / "broken.onnx", 5.0)
    moved = np.abs(onnx_probs(broken, feeds) - onnx_probs(int8, feeds)).max(axis=1) > INT8_ROW_DRIFT
    assert moved.mean() > INT8_ROWS_TOLERANCE
    with pytest.raises(ExportCheckError, match="int8 differs from fp32"):
        check_int8(tiny_model / "model.onnx", broken, feeds)


def _tiny_checkpoint(tiny_model: Path, path: Path, labels: tuple[str, ...] | None = None) -> Path:
    """A randomly initialised 2-layer BERT with the 15 labels (or ``labels``), and the tiny model's tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from beaverguard.training.data import LABELS

    LABELS = labels or LABELS  # noqa: N806

    vocab = json.loads((tiny_model / "tokenizer.json").read_text())["model"]["vocab"]
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=len(LABELS),
                        problem_type="multi_label_classification", id2label=dict(enumerate(LABELS)),
                        label2id={k: i for i, k in enumerate(LABELS)})
    BertForSequenceClassification(config).eval().save_pretrained(path)
    shutil.copy(tiny_model / "tokenizer.json", path / "tokenizer.json")
    return path


def test_export_command_end_to_end(tiny_model: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("optimum.onnxruntime")
    from beaverguard import Exchange, Guard
    from beaverguard._model import ModelSpec
    from beaverguard.cli import main
    from beaverguard.training.data import LABELS

    checkpoint = _tiny_checkpoint(tiny_model, tmp_path / "checkpoint")
    calib = tmp_path / "calib.jsonl"
    rows = [{"prompt": p, "response": r, "is_safe": i % 2 == 0, "source": "beavertails-test" if r else "toxicchat",
             "categories": ([] if i % 2 == 0 else ["violence,aiding_and_abetting,incitement"]) if r else None}
            for i, (p, r) in enumerate(PAIRS * 4)]
    calib.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "model"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(out), "--calib", str(calib),
                 "--max-length", "32", "--name", "tiny-bert", "--keep-fp32", str(tmp_path / "fp32.onnx")]) == 0

    printed = json.loads(capsys.readouterr().out)
    report = json.loads((out / "export_report.json").read_text())
    assert printed == report
    assert report["sample"] == len(rows) and report["calibration_rows"] == len(rows)
    assert report["fp32_vs_torch_max_abs"] <= 1e-4
    assert report["int8_rows_drifted"] <= INT8_ROWS_TOLERANCE
    assert (tmp_path / "fp32.onnx").is_file()

    spec = ModelSpec.load(out)  # checksums verified
    assert spec.name == "tiny-bert" and spec.max_length == 32
    assert {rail: dict(t) for rail, t in spec.thresholds.items()} == report["thresholds"]
    assert all(set(t) == set(LABELS) for t in report["thresholds"].values())
    # The shipped directory scores through the runtime, matching the fp32 graph within the int8 tolerance.
    guard = Guard(model=out)
    try:
        scores = guard.score_many([Exchange(p, r) for p, r in PAIRS])
    finally:
        guard.close()
    feeds = _feeds(out)
    fp32 = onnx_probs(tmp_path / "fp32.onnx", feeds)
    runtime = np.array([[s[k] for k in LABELS] for s in scores])
    assert np.mean(np.abs(runtime - fp32).max(axis=1) > INT8_ROW_DRIFT) <= INT8_ROWS_TOLERANCE


def test_export_fp32_for_gpus_is_batch_invariant(tiny_model: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("optimum.onnxruntime")
    from beaverguard import Exchange, OnnxScorer
    from beaverguard._model import ModelSpec
    from beaverguard.cli import main
    from beaverguard.training.data import LABELS

    checkpoint = _tiny_checkpoint(tiny_model, tmp_path / "checkpoint")
    calib = tmp_path / "calib.jsonl"
    calib.write_text("".join(json.dumps({"prompt": p, "response": r, "is_safe": i % 2 == 0, "categories": None})
                             + "\n" for i, (p, r) in enumerate(PAIRS * 4)))
    out = tmp_path / "model"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(out), "--calib", str(calib),
                 "--max-length", "32", "--precision", "fp32"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["precision"] == "fp32" and "int8_bytes" not in report
    assert ModelSpec.load(out).batch_invariant
    alone = OnnxScorer(out, batch_size=1)
    together = OnnxScorer(out, batch_size=8)
    exchanges = [Exchange(p, r) for p, r in PAIRS]
    assert together.batch_size == 8 and OnnxScorer(out).batch_size > 1  # the plan batches an invariant model
    a = np.array([[s[k] for k in LABELS] for e in exchanges for s in alone.score([e])])
    b = np.array([[s[k] for k in LABELS] for s in together.score(exchanges)])
    assert np.abs(a - b).max() < 1e-5


def test_calibrate_command_rewrites_an_exported_models_thresholds(tiny_model: Path, tmp_path: Path, capsys) -> None:
    """No checkpoint, no torch: the thresholds a model directory ships are recalibrated on new rows in place."""
    from beaverguard._model import ModelSpec
    from beaverguard.cli import main
    from beaverguard.training.calibrate import calibrate
    from beaverguard.training.data import read_jsonl
    from beaverguard.training.export_cli import runtime_probs

    model = shutil.copytree(tiny_model, tmp_path / "model")
    before = json.loads((model / "beaverguard.json").read_text()).get("thresholds")
    calib = tmp_path / "calib.jsonl"
    rows = [{"prompt": p, "response": r, "is_safe": i % 3 != 0, "source": "beavertails-test" if r else "toxicchat",
             "categories": ([] if i % 3 else ["violence,aiding_and_abetting,incitement"]) if r else None}
            for i, (p, r) in enumerate(PAIRS * 5)]
    calib.write_text("".join(json.dumps(r) + "\n" for r in rows))

    assert main(["calibrate", "--model", str(model), "--calib", str(calib)]) == 0
    report = json.loads((model / "export_report.json").read_text())
    assert json.loads(capsys.readouterr().out) == report
    assert report["calibration_rows"] == len(rows)
    expected = calibrate(read_jsonl(calib), runtime_probs(model, read_jsonl(calib)))
    assert report["thresholds"] == expected != before
    spec = ModelSpec.load(model)  # the checksums still hold: thresholds are not part of them
    assert {rail: dict(t) for rail, t in spec.thresholds.items()} == expected


def test_calibrate_command_refuses_a_directory_that_is_not_a_model(tmp_path: Path) -> None:
    from beaverguard.cli import main

    with pytest.raises(SystemExit, match="has no beaverguard.json"):
        main(["calibrate", "--model", str(tmp_path), "--calib", str(tmp_path / "calib.jsonl")])


def test_export_ships_trainable_weights_and_train_continues_from_them(tiny_model: Path, tmp_path: Path,
                                                                      capsys) -> None:
    """A model with the injection output exports, loads, ships bf16 weights, and ``--init`` trains on from them."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("optimum.onnxruntime")
    from safetensors.torch import load_file

    from beaverguard import Guard
    from beaverguard.cli import main
    from beaverguard.training.data import TRAIN_LABELS, Row
    from beaverguard.training.train import TrainConfig, init_checkpoint, train

    checkpoint = _tiny_checkpoint(tiny_model, tmp_path / "checkpoint", labels=TRAIN_LABELS)
    calib = tmp_path / "calib.jsonl"
    rows = [{"prompt": p, "response": r, "is_safe": i % 2 == 0, "categories": None} for i, (p, r) in enumerate(PAIRS * 4)]
    rows += [{"prompt": f"ignore the instructions {i}", "response": None, "is_safe": None, "categories": None,
              "injection": i % 2 == 0, "source": "injection-test"} for i in range(8)]
    calib.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "model"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(out), "--calib", str(calib),
                 "--max-length", "32"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["thresholds"]["input"]) == set(TRAIN_LABELS) and "injection" in report["calibration"]
    spec = json.loads((out / "beaverguard.json").read_text())
    assert spec["labels"] == list(TRAIN_LABELS) and spec["trainable"] == "trainable"
    shipped = load_file(out / "trainable" / "model.safetensors")
    assert {t.dtype for t in shipped.values()} == {torch.bfloat16}
    words = load_file(out / "trainable" / "embeddings.int8.safetensors")  # the word embeddings: int8 per row
    assert words["int8"].dtype == torch.int8 and words["scale"].shape == (words["int8"].shape[0], 1)
    fp32_words = load_file(checkpoint / "model.safetensors")["bert.embeddings.word_embeddings.weight"]
    assert (words["int8"].float() * words["scale"] - fp32_words).abs().max() <= words["scale"].max() / 2 + 1e-6
    guard = Guard(model=out)
    try:
        assert "injection" in guard.check_input_sync("hello", channel="document").scores
    finally:
        guard.close()

    assert (init_checkpoint(out, tmp_path / "widened") / "model.safetensors").is_file()
    train_rows = [Row(p, r, i % 2 == 0, None) for i, (p, r) in enumerate(PAIRS * 2)]
    run = tmp_path / "run"
    train({"train": train_rows, "calib": train_rows, "test": train_rows},
          TrainConfig(out=run, init=out, epochs=1, lr=0.0, batch_size=len(train_rows), max_length=32, bf16=False))
    # (one batch: a run of a single step once divided by zero in the learning-rate schedule)
    continued = load_file(run / "checkpoint" / "model.safetensors")
    # lr 0: the continued run's weights are the shipped ones exactly (bf16 widened to fp32; embeddings dequantized)
    key = "bert.embeddings.word_embeddings.weight"
    assert set(continued) == {*shipped, key}
    assert all(torch.equal(continued[k], shipped[k].float()) for k in shipped)
    assert torch.equal(continued[key], (words["int8"].float() * words["scale"]).bfloat16().float())


def test_init_refuses_a_model_without_trainable_weights(tiny_model: Path) -> None:
    from beaverguard.training.train import init_checkpoint

    with pytest.raises(ValueError, match="ships no trainable weights"):
        init_checkpoint(tiny_model)


def test_merge_averages_two_models_weights_and_refuses_different_layouts(tiny_model: Path, tmp_path: Path,
                                                                          capsys) -> None:
    """``beaverguard merge`` writes (1 - w)·a + w·b, reads shipped model directories as ``--init`` does."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("optimum.onnxruntime")
    from safetensors.torch import load_file, save_file

    from beaverguard.cli import main
    from beaverguard.training.data import TRAIN_LABELS

    a = _tiny_checkpoint(tiny_model, tmp_path / "a", labels=TRAIN_LABELS)
    b = _tiny_checkpoint(tiny_model, tmp_path / "b", labels=TRAIN_LABELS)
    weights_b = {k: v + 1.0 for k, v in load_file(b / "model.safetensors").items()}
    save_file(weights_b, b / "model.safetensors", metadata={"format": "pt"})
    weights_a = load_file(a / "model.safetensors")

    assert main(["merge", str(a), str(b), "--weight", "0.25", "--out", str(tmp_path / "merged")]) == 0
    merged = load_file(tmp_path / "merged" / "model.safetensors")
    assert merged.keys() == weights_a.keys()
    assert all(torch.allclose(merged[k], 0.75 * weights_a[k] + 0.25 * weights_b[k]) for k in merged)
    assert "merged 0.75" in capsys.readouterr().out

    # a shipped model directory (bf16 weights, int8 word embeddings) is widened first, as --init does
    calib = tmp_path / "calib.jsonl"
    calib.write_text("".join(json.dumps({"prompt": p, "response": r, "is_safe": i % 2 == 0, "categories": None}) + "\n"
                             for i, (p, r) in enumerate(PAIRS * 4)))
    assert main(["export", "--checkpoint", str(a), "--out", str(tmp_path / "model"), "--calib", str(calib),
                 "--max-length", "32"]) == 0
    assert main(["merge", str(tmp_path / "model"), str(b), "--weight", "0", "--out", str(tmp_path / "same")]) == 0
    same = load_file(tmp_path / "same" / "model.safetensors")
    assert all(torch.allclose(same[k], weights_a[k], atol=0.02) for k in same)   # bf16 and int8 rounding only

    other = _tiny_checkpoint(tiny_model, tmp_path / "other")   # 15 labels: another head
    with pytest.raises(SystemExit, match="not the same layout"):
        main(["merge", str(a), str(other), "--out", str(tmp_path / "bad")])
    with pytest.raises(SystemExit, match="merge weight 2"):
        main(["merge", str(a), str(b), "--weight", "2", "--out", str(tmp_path / "bad")])


def test_a_teacher_keeps_the_harm_outputs_where_labels_would_move_them(tiny_model: Path, tmp_path: Path) -> None:
    """``--teacher MODEL=harm``: harm outputs learn the teacher's probabilities, not the rows' labels."""
    pytest.importorskip("torch")
    from beaverguard.training.data import TRAIN_LABELS, Row
    from beaverguard.training.train import TrainConfig, predict, train

    start = _tiny_checkpoint(tiny_model, tmp_path / "start", labels=TRAIN_LABELS)
    rows = [Row(p, r, False, None) for p, r in PAIRS * 10]  # every row labelled unsafe
    unsafe = TRAIN_LABELS.index("unsafe")

    def trained(name: str, teacher: Path | None) -> tuple[float, float]:
        import torch
        from transformers import AutoModelForSequenceClassification

        from beaverguard._encoding import Conversation, Encoder
        from beaverguard.training.train import CONVERSATION

        train({"train": rows, "calib": rows, "test": rows},
              TrainConfig(out=tmp_path / name, init=start, epochs=1, lr=5e-3, batch_size=4, max_length=32, bf16=False,
                          teachers=((teacher, ("harm",)),) if teacher else ()))  # one epoch: its checkpoint is the one kept
        encoder = Encoder(start / "tokenizer.json", 32, Conversation(**CONVERSATION))
        probs = {}
        for key, path in (("start", start), ("run", tmp_path / name / "checkpoint")):
            model = AutoModelForSequenceClassification.from_pretrained(path)
            probs[key] = predict(model, encoder, rows, torch.device("cpu"))[:, unsafe]
        return float(abs(probs["run"] - probs["start"]).mean()), float(probs["run"].mean())

    by_labels, mean = trained("labels", None)
    by_teacher, _ = trained("teacher", start)
    assert mean > 0.7 and by_labels > 0.2  # the labels pull `unsafe` up
    assert by_teacher < by_labels / 5  # the teacher holds it where it was


def test_a_teacher_names_groups_of_outputs(tmp_path: Path) -> None:
    from beaverguard._train_cli import _teacher

    assert _teacher("runs/a") == (Path("runs/a"), ("harm",))
    assert _teacher("runs/a=categories,injection") == (Path("runs/a"), ("categories", "injection"))
    with pytest.raises(SystemExit, match="'toxicity' is not one of categories, unsafe, harm, injection"):
        _teacher("runs/a=toxicity")


def test_only_refits_the_named_outputs_and_leaves_the_others_exactly(tiny_model: Path, tmp_path: Path) -> None:
    """``--only categories``: the category rows learn the labels; the encoder, ``unsafe``, ``injection`` stay."""
    pytest.importorskip("torch")
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    from beaverguard._categories import CATEGORY_KEYS
    from beaverguard._encoding import Conversation, Encoder
    from beaverguard.training.data import TRAIN_LABELS, Row
    from beaverguard.training.train import CONVERSATION, TrainConfig, predict, train

    start = _tiny_checkpoint(tiny_model, tmp_path / "start", labels=TRAIN_LABELS)
    violence = CATEGORY_KEYS[-1]
    rows = [Row(p, r, False, (violence,)) for p, r in PAIRS * 10]  # every row unsafe, of one category
    train({"train": rows, "calib": rows, "test": rows},
          TrainConfig(out=tmp_path / "run", init=start, epochs=3, lr=5e-2, batch_size=4, max_length=32, bf16=False,
                      only=("categories",)))
    before = load_file(start / "model.safetensors")
    after = load_file(tmp_path / "run" / "checkpoint" / "model.safetensors")
    moved = {k for k in before if not torch.equal(before[k].float(), after[k].float())}
    assert moved == {"classifier.weight", "classifier.bias"}
    n = len(CATEGORY_KEYS)
    assert torch.equal(before["classifier.weight"][n:].float(), after["classifier.weight"][n:].float())
    assert torch.equal(before["classifier.bias"][n:].float(), after["classifier.bias"][n:].float())

    encoder = Encoder(start / "tokenizer.json", 32, Conversation(**CONVERSATION))
    probs = {key: predict(AutoModelForSequenceClassification.from_pretrained(path), encoder, rows, torch.device("cpu"))
             for key, path in (("start", start), ("run", tmp_path / "run" / "checkpoint"))}
    column = TRAIN_LABELS.index(violence)
    assert probs["run"][:, column].mean() > probs["start"][:, column].mean() + 0.2  # the labels pulled it up
    assert probs["run"][:, 0].mean() < probs["start"][:, 0].mean()  # and the other categories down (negatives)

    marked = [Row(p, None, None, None, injection=i % 2 == 0) for i, (p, _) in enumerate(PAIRS * 10)]
    train({"train": marked, "calib": marked, "test": marked},  # one output alone
          TrainConfig(out=tmp_path / "injection", init=start, epochs=1, lr=5e-2, batch_size=4, max_length=32,
                      bf16=False, only=("injection",)))
    alone = load_file(tmp_path / "injection" / "checkpoint" / "model.safetensors")["classifier.weight"]
    differs = [i for i, row in enumerate(alone) if not torch.equal(row.float(), before["classifier.weight"][i].float())]
    assert differs == [TRAIN_LABELS.index("injection")]

    with pytest.raises(ValueError, match="give the model to refit as init"):
        train({"train": rows, "calib": rows, "test": rows}, TrainConfig(out=tmp_path / "x", only=("categories",)))
    with pytest.raises(ValueError, match="'toxicity' is not one of"):
        train({"train": rows, "calib": rows, "test": rows},
              TrainConfig(out=tmp_path / "x", init=start, only=("toxicity",)))


def test_export_onto_writes_only_the_refitted_rows_into_the_shipped_graph(tiny_model: Path, tmp_path: Path,
                                                                          capsys) -> None:
    """``export --onto``: a ``--only`` run's rows go into the model's own int8 graph; other scores stay bit for bit."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("optimum.onnxruntime")
    from safetensors.torch import load_file

    from beaverguard._categories import CATEGORY_KEYS
    from beaverguard.cli import main
    from beaverguard.training.data import TRAIN_LABELS, Row
    from beaverguard.training.train import TrainConfig, train

    calib = tmp_path / "calib.jsonl"
    calib.write_text("".join(json.dumps({"prompt": p, "response": r, "is_safe": i % 2 == 0, "categories": None}) + "\n"
                             for i, (p, r) in enumerate(PAIRS * 4)))
    shipped = tmp_path / "shipped"
    assert main(["export", "--checkpoint", str(_tiny_checkpoint(tiny_model, tmp_path / "ck", labels=TRAIN_LABELS)),
                 "--out", str(shipped), "--calib", str(calib), "--max-length", "32"]) == 0
    rows = [Row(p, r, False, (CATEGORY_KEYS[-1],)) for p, r in PAIRS * 10]
    splits = {"train": rows, "calib": rows, "test": rows}
    train(splits, TrainConfig(out=tmp_path / "only", init=shipped, epochs=3, lr=5e-2, batch_size=4, max_length=32,
                              bf16=False, only=("categories",)))
    capsys.readouterr()
    refit = tmp_path / "refit"
    assert main(["export", "--checkpoint", str(tmp_path / "only" / "checkpoint"), "--onto", str(shipped),
                 "--out", str(refit), "--calib", str(calib), "--max-length", "32"]) == 0
    assert json.loads(capsys.readouterr().out)["refitted"] == list(CATEGORY_KEYS)

    feeds = _feeds(shipped)
    before, after = onnx_probs(shipped / "model.onnx", feeds), onnx_probs(refit / "model.onnx", feeds)
    n = len(CATEGORY_KEYS)
    assert np.array_equal(before[:, n:], after[:, n:])  # unsafe and injection: the same graph, bit for bit
    assert np.abs(before[:, n - 1] - after[:, n - 1]).max() > 0.05  # the refitted category moved
    trained = load_file(tmp_path / "only" / "checkpoint" / "model.safetensors")["classifier.weight"]
    assert torch.equal(load_file(refit / "trainable" / "model.safetensors")["classifier.weight"], trained.bfloat16())

    train(splits, TrainConfig(out=tmp_path / "all", init=shipped, epochs=1, lr=5e-2, batch_size=4, max_length=32,
                              bf16=False))  # every weight moved: not a refit of the head
    with pytest.raises(ExportCheckError, match="its encoder is not"):
        export_head(tmp_path / "all" / "checkpoint", shipped, tmp_path / "bad")
