"""Is a missed injection a threshold or a ranking problem? The injection score on held-out attacks and benign hosts.

    python benchmarks/injection_ranking.py [--model DIR] [--out FILE.md]

The held-out injection rows of ``robustness.py`` (Tensor Trust hijacking, held out whole; injections
planted and composed from held-out parts) against the benign texts an agent hands over in the same
places (notes to people in the same hosts, NotInject's trigger words, harmless tool results, chat):
each set's share at or above several thresholds, and each attack set's AUPRC against all benign texts.
Where an attack set ranks no better than the benign texts, no threshold (per channel or not) can
catch it without flagging them: the model has to learn it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from robustness import tool_results  # noqa: E402

from beaverguard import Guard, Policy  # noqa: E402
from beaverguard._categories import INJECTION  # noqa: E402
from beaverguard._types import Exchange  # noqa: E402
from beaverguard.training.composed import composed_rows  # noqa: E402
from beaverguard.training.injections import injection_rows  # noqa: E402
from beaverguard.training.metrics import average_precision  # noqa: E402
from beaverguard.training.mix import build, load_mix  # noqa: E402

THRESHOLDS = (None, 0.4, 0.3, 0.2, 0.1, 0.05)  # None: the model's calibrated threshold


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="model directory (default: the embedded model)")
    ap.add_argument("--mix", type=Path, default=ROOT / "src" / "beaverguard" / "training" / "mixes" / "v3_1.yaml")
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, help="also write the table (Markdown) here")
    args = ap.parse_args()

    mix = load_mix(args.mix)
    data = build(mix, args.data_dir)
    chat = [r.prompt for r in data.test if data.families.get(r.source) == "chat" and r.response is None
            and not r.context and r.is_safe]
    filler = [t for t in chat if 20 <= len(t.split()) <= 120]  # robustness.py's filler: the same composed rows
    planted = injection_rows(200, mix.seed, mix.augment.holdout)[1]
    composed = composed_rows(200, mix.seed, mix.augment.holdout, filler)[1]
    held = [r for r in data.holdout if r.injection is not None]
    attacks = {
        "Tensor Trust hijacking (held out whole)": [r.prompt for r in held if r.injection],
        "planted, held-out openers, goals, carriers": [r.prompt for r in planted if r.injection],
        "composed from held-out parts": [r.prompt for r in composed if r.injection],
    }
    benign = {
        "notes to people in the planted hosts": [r.prompt for r in planted if not r.injection],
        "notes to people composed from held-out parts": [r.prompt for r in composed if not r.injection],
        "NotInject trigger words (held out)": [r.prompt for r in held if r.injection is False],
        "harmless tool results": tool_results(),
        "ordinary chat (test split)": chat[:600],
    }
    guard = Guard(Policy(), model=args.model)
    calibrated = guard.scorer.spec.thresholds["input"][INJECTION]
    scores = {name: np.array([s[INJECTION] for s in guard.score_many([Exchange(t) for t in texts])])
              for name, texts in {**attacks, **benign}.items()}
    cuts = [calibrated if t is None else t for t in THRESHOLDS]
    all_benign = np.concatenate([scores[k] for k in benign])
    lines = [f"# Injection score: threshold or ranking? (`{guard.scorer.spec.name}`, `{args.model or 'embedded'}`)", "",
             "Share at or above each threshold (recall for attacks, flagged for benign texts); AUPRC of each "
             "attack set against all benign texts (their share of the pool is the AUPRC of a random score).", "",
             "| set | n | " + " | ".join(f"≥ {c:.3g}" + (" (calibrated)" if t is None else "")
                                      for c, t in zip(cuts, THRESHOLDS)) + " | AUPRC (random) |",
             "|---|---|" + "---|" * (len(cuts) + 1)]
    for name, s in scores.items():
        cells = " | ".join(f"{np.mean(s >= c):.3f}" for c in cuts)
        ap_cell = ""
        if name in attacks:
            y = np.r_[np.ones(len(s)), np.zeros(len(all_benign))]
            ap_cell = f"{average_precision(y, np.r_[s, all_benign]):.3f} ({len(s) / len(y):.3f})"
        lines.append(f"| {name} | {len(s)} | {cells} | {ap_cell} |")
    guard.close()
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
