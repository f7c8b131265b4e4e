"""Argument parsing of ``beaverguard train`` (kept apart so the CLI module stays small)."""

from __future__ import annotations

import argparse
import random
from pathlib import Path


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="fine-tune the moderation model (needs the 'train' extra)")
    p.add_argument("--data", action="append", default=[], type=Path,
                   help="JSON Lines file in the shared schema or the BeaverTails layout; repeat to add files "
                        "(a file given twice counts twice)")
    p.add_argument("--hf-split", action="append", default=[],
                   help="also load this split of PKU-Alignment/BeaverTails from the hub (e.g. 30k_train)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--base", type=Path, help="base encoder directory (default: all-MiniLM-L6-v2 from PyPI)")
    p.add_argument("--layers", type=int, help="keep only the first N encoder layers")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=8e-5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--refusals", type=int, default=1500, help="synthetic refused-harmful QA pairs to add")
    p.add_argument("--category-pos-weight", type=float, default=1.0,
                   help="weight positives of rare categories by neg/pos, capped at this value (1: off)")
    p.add_argument("--safe-prompts-from", action="append", default=[], type=Path,
                   help="also train on the prompts of this file's safe rows as safe prompt-only rows (for sources "
                        "whose questions are benign in themselves, e.g. TruthfulQA); repeatable")
    p.add_argument("--train-limit", type=int,
                   help="train on a random sample of this many training rows (the splits stay whole)")
    p.add_argument("--limit", type=int, help="use only this many rows (a random sample; for smoke tests)")
    p.add_argument("--device", default="auto")
    p.add_argument("--splits-only", action="store_true",
                   help="write the train/calib/test splits to OUT/splits and stop (no torch needed)")
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from beaverguard.training.data import Row, iter_files, load_hf_beavertails
    from beaverguard.training.train import TrainConfig, train, write_splits

    rows = list(iter_files(args.data))
    rows += [Row(r.prompt, None, True, (), f"{r.source}-prompt")
             for r in iter_files(args.safe_prompts_from) if r.is_safe]
    for split in args.hf_split:
        rows += load_hf_beavertails(split)
    if not rows:
        raise SystemExit("beaverguard train: no data; pass --data FILE or --hf-split SPLIT")
    if args.limit:
        rows = random.Random(args.seed).sample(rows, min(args.limit, len(rows)))
    if args.splits_only:
        write_splits(rows, args.out, args.seed)
        return 0
    cfg = TrainConfig(out=args.out, base=args.base, layers=args.layers, epochs=args.epochs, lr=args.lr,
                      batch_size=args.batch_size, max_length=args.max_length, seed=args.seed,
                      refusals=args.refusals, category_pos_weight=args.category_pos_weight, device=args.device,
                      train_limit=args.train_limit)
    train(rows, cfg)
    return 0
