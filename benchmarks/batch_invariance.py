"""Do a row's scores depend on the other rows of its run? (They must not, for a guard.)

Scores every row of a labelled file twice with the same model: each exchange
alone, and in length-sorted runs of ``--batch`` exchanges (what a batching plan
would do). Prints the largest difference in probability and how many of the
default policy's decisions flip. The shipped int8 model (dynamic activation
quantization: one scale per run) is not batch-invariant, which is why its
``beaverguard.json`` says ``batch_invariant: false`` and the guard runs each
exchange alone.

    python benchmarks/batch_invariance.py --data FILE.jsonl [--batch 8]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _common import DEFAULT_DATA, DEFAULT_MODEL_DIR, report, table

from beaverguard import Exchange, Guard, OnnxScorer
from beaverguard.training.data import read_jsonl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    rows = read_jsonl(args.data)
    exchanges = [Exchange(r.prompt, r.response) for r in rows]
    alone_scorer = OnnxScorer(args.model, threads=1, batch_size=1)
    batch_scorer = OnnxScorer(args.model, threads=1, batch_size=args.batch)  # runs sorted by length
    labels = alone_scorer.labels
    alone = np.array([[s[k] for k in labels] for e in exchanges for s in alone_scorer.score([e])])
    batched = np.array([[s[k] for k in labels] for s in batch_scorer.score(exchanges)])
    guard = Guard(model=args.model)
    try:
        def actions(probs: np.ndarray) -> list[str]:
            return [guard.judge("input" if e.response is None else "output", dict(zip(labels, p)))[0].value
                    for e, p in zip(exchanges, probs)]
        flips = sum(a != b for a, b in zip(actions(alone), actions(batched)))
    finally:
        guard.close()
    diff = np.abs(alone - batched)
    body = (f"{len(rows)} rows of `{args.data.name}`, model `{alone_scorer.spec.name}` "
            f"(`batch_invariant: {str(alone_scorer.batch_invariant).lower()}` in its beaverguard.json), "
            f"each exchange alone vs length-sorted runs of {args.batch}.\n\n"
            + table(["max abs diff", "mean abs diff", "rows whose scores changed", "decisions flipped"],
                    [[f"{diff.max():.4f}", f"{diff.mean():.6f}", int((diff.max(1) > 1e-6).sum()),
                      f"{flips} of {len(rows)}"]]) + "\n")
    report("batch_invariance", "Batch invariance of the model", body)


if __name__ == "__main__":
    main()
