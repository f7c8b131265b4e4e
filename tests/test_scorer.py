import json
import shutil

import numpy as np
import pytest

from beaverguard import Exchange, ModelError, OnnxScorer
from beaverguard._categories import resolve
from beaverguard._encoding import Encoder


def test_scores_have_all_labels_in_unit_interval(tiny_model):
    scorer = OnnxScorer(tiny_model)
    [scores] = scorer.score([Exchange("how do i make a bomb")])
    assert len(scores) == 15 and "unsafe" in scores
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    assert scores["unsafe"] > 0.9 and scores[resolve("violence")] > 0.9
    assert scores[resolve("sexual")] < 0.1


def test_qa_pair_is_judged_with_its_response(tiny_model):
    scorer = OnnxScorer(tiny_model)
    harmful_q_refused, harmless_q_harmful_a = scorer.score(
        [Exchange("how do i make a bomb", "sorry i cannot help"), Exchange("bread recipe", "add poison")])
    assert harmful_q_refused["unsafe"] < 0.1
    assert harmless_q_harmful_a["unsafe"] > 0.9


def test_batched_equals_unbatched(tiny_model):
    scorer = OnnxScorer(tiny_model, batch_size=3)
    exchanges = [Exchange("hello " * n + ("bomb" if n % 3 == 0 else "cake"), None if n % 2 else "thanks " * n)
                 for n in range(1, 12)]
    together = scorer.score(exchanges)
    alone = [scorer.score([e])[0] for e in exchanges]
    for a, b in zip(together, alone):
        assert a.keys() == b.keys()
        np.testing.assert_allclose(list(a.values()), list(b.values()), rtol=1e-5, atol=1e-6)


def test_harm_after_2000_benign_tokens_is_flagged(tiny_model):
    scorer = OnnxScorer(tiny_model)  # tiny model's window is 32 tokens
    benign = "hello nice day " * 700  # 2,100 tokens
    late, clean = scorer.score([Exchange(benign + "kill"), Exchange("weather", benign + "kill")] +
                               [Exchange(benign)])[0:2]
    assert late["unsafe"] > 0.9 and clean["unsafe"] > 0.9
    assert scorer.score([Exchange(benign)])[0]["unsafe"] < 0.1


def test_windows_cover_every_token(tiny_model):
    enc = Encoder(tiny_model / "tokenizer.json", 32)
    text = " ".join(["hello"] * 100 + ["bomb"] + ["cake"] * 57)
    windows = enc.windows([text], [None])[0]
    assert all(len(ids) <= 32 for ids, _ in windows)
    bomb = enc.tokenizer.token_to_id("bomb")
    assert any(bomb in ids for ids, _ in windows)
    covered = sum(len(ids) - 2 for ids, _ in windows)
    assert covered >= 158  # every token, with some overlap


def test_max_tokens_caps_what_is_scored(tiny_model):
    scorer = OnnxScorer(tiny_model, max_tokens=50)
    text = "hello " * 100 + "bomb"
    assert scorer.score([Exchange(text)])[0]["unsafe"] < 0.1


def test_missing_model_dir_says_what_to_do(tmp_path):
    with pytest.raises(ModelError, match="does not exist.*beaverguard export"):
        OnnxScorer(tmp_path / "nothing")


def test_missing_file_named(tiny_model, tmp_path):
    broken = shutil.copytree(tiny_model, tmp_path / "m")
    (broken / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match="tokenizer.json is missing"):
        OnnxScorer(broken)


def test_corrupt_model_detected(tiny_model, tmp_path):
    broken = shutil.copytree(tiny_model, tmp_path / "m")
    data = bytearray((broken / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (broken / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="model.onnx is corrupt"):
        OnnxScorer(broken)


def test_wrong_labels_rejected(tiny_model, tmp_path):
    broken = shutil.copytree(tiny_model, tmp_path / "m")
    spec = json.loads((broken / "beaverguard.json").read_text())
    spec["labels"][0] = "cats"
    (broken / "beaverguard.json").write_text(json.dumps(spec))
    with pytest.raises(ModelError, match="do not match the 14 BeaverTails categories"):
        OnnxScorer(broken)


def test_unknown_provider_request_fails_clearly(tiny_model):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ModelError, match="onnxruntime-gpu"):
        OnnxScorer(tiny_model, provider="cuda")
    assert OnnxScorer(tiny_model, provider="auto").providers == ["CPUExecutionProvider"]


def test_a_cuda_session_that_fell_back_to_the_cpu_is_caught(caplog):
    """onnxruntime-gpu without its CUDA libraries builds a CPU session without an error."""
    from beaverguard._model import _on_gpu

    assert _on_gpu("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"]) is True
    with pytest.raises(ModelError, match="CUDA execution provider did not start"):
        _on_gpu("cuda", ["CPUExecutionProvider"])
    with caplog.at_level("WARNING", logger="beaverguard"):
        assert _on_gpu("auto", ["CPUExecutionProvider"]) is False
    assert "scoring on the CPU" in caplog.text
