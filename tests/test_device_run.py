"""The device run's three steps on this CPU: pack under the size limit, train from shipped weights, bring back in parts.

The device itself is lent to some sessions only; everything but the GPU is exercised here, with the
tiny model, a tiny mix, and the part size made small so the weights come back in several pieces.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from beaverguard.training import device

ROOT = Path(__file__).resolve().parents[1]


def _mix(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"prompt": f"how do i bake bread number {i}", "response": None, "is_safe": True, "categories": None}
            for i in range(30)]
    rows += [{"prompt": f"how do i kill my neighbour number {i}", "response": None, "is_safe": False,
              "categories": ["violence,aiding_and_abetting,incitement"]} for i in range(30)]
    (data / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    mix = tmp_path / "mix.yaml"
    mix.write_text(f"version: 1\ndata_dir: {data}\ncalib: 0.2\ntest: 0.2\nsources:\n  - {{file: rows.jsonl}}\n")
    return mix


def test_pack_writes_gzipped_splits_and_refuses_past_the_limit(tmp_path: Path) -> None:
    mix = _mix(tmp_path)
    total = device.pack(mix, None, tmp_path / ".device", root=ROOT)
    assert sorted(p.name for p in (tmp_path / ".device").iterdir()) == ["calib.jsonl.gz", "test.jsonl.gz",
                                                                        "train.jsonl.gz"]
    assert total <= device.LIMIT_BYTES  # this checkout and the pack fit what travels to the device
    with pytest.raises(ValueError, match="over the device's"):
        device.pack(mix, None, tmp_path / ".device", root=ROOT, limit=total - 1)


def test_run_brings_the_weights_back_in_parts_and_unpack_rebuilds_the_checkpoint(tiny_model: Path, tmp_path: Path,
                                                                                 monkeypatch) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    from beaverguard.training.export import save_trainable
    from test_export_checks import _tiny_checkpoint

    shipped = save_trainable(_tiny_checkpoint(tiny_model, tmp_path / "checkpoint"), tmp_path / "model")
    device.pack(_mix(tmp_path), None, tmp_path / ".device", root=ROOT)
    part = max(f.stat().st_size for f in shipped.iterdir()) // 2 + 1  # the largest file comes back in two parts
    monkeypatch.setattr(device, "PART_BYTES", part)
    parts = device.run(tmp_path / ".device", shipped, tmp_path / "OUT", epochs=1, lr=1e-3, work=tmp_path / "work",
                       batch_size=8)
    assert all(p.stat().st_size <= part for p in parts) and any(p.name.endswith(".part1") for p in parts)
    checkpoint = device.unpack(tmp_path / "OUT", tmp_path / "back")
    trained = load_file(tmp_path / "work" / "checkpoint" / "model.safetensors")
    back = load_file(checkpoint / "model.safetensors")
    assert set(back) == set(trained) and (checkpoint / "tokenizer.json").is_file()
    # bf16 and int8 word embeddings: close to what trained, and trained moved away from the start
    assert all((back[k].float() - trained[k]).abs().max() < 0.05 for k in trained)
    start = load_file(tmp_path / "checkpoint" / "model.safetensors")
    assert any(not torch.allclose(start[k], trained[k]) for k in start)
