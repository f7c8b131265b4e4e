"""AUPRC of trained checkpoints on the trainer's own calib sample, to compare them before exporting.

    python benchmarks/calib_auprc.py CHECKPOINT_OR_MODEL_DIR ... [--mix MIX] [--data-dir DIR]

The same 3,000 calib rows (seed 13) and the same figures the trainer prints after each epoch
(``training.train.summarize``): prompts, QA pairs, BeaverTails QA, injection, categories macro. Use it
to choose between checkpoints and averages (``beaverguard merge``) in minutes; a candidate that
survives is exported and measured on the test split and the held-out sources like any other.
Needs the ``train`` extra (torch); reads a shipped model directory through its trainable weights.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from beaverguard._encoding import Conversation, Encoder  # noqa: E402
from beaverguard.training.mix import build, load_mix  # noqa: E402
from beaverguard.training.train import CONVERSATION, TrainConfig, init_checkpoint, predict, summarize  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--mix", type=Path, default=ROOT / "src" / "beaverguard" / "training" / "mixes" / "v4.yaml")
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForSequenceClassification

    cfg = TrainConfig(out=Path("."))
    calib = build(load_mix(args.mix), args.data_dir).calib
    calib = random.Random(cfg.seed).sample(calib, min(cfg.calib_limit, len(calib)))  # as the trainer samples
    print(f"{len(calib)} calib rows of {args.mix.name}; AUPRC")
    for path in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = init_checkpoint(path, Path(tmp))
            encoder = Encoder(checkpoint / "tokenizer.json", cfg.max_length, Conversation(**CONVERSATION))
            model = AutoModelForSequenceClassification.from_pretrained(checkpoint, dtype=torch.float32)
            report = summarize(calib, predict(model, encoder, calib, torch.device("cpu")))
        print(f"{path}: " + "  ".join(f"{k.replace('_macro_auprc', ' (macro)')} {v['auprc']:.3f}"
                                      for k, v in report.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
