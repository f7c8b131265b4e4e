"""The ``beaverguard`` command line: check, score, policy, eval, and the model pipeline."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from beaverguard._train_cli import add_train_parser
from beaverguard.server.cli import add_serve_parser  # argparse only: the server loads when `serve` runs

__all__ = ["main", "build_parser", "decision_summary"]


def _guard(args: argparse.Namespace):
    from beaverguard._guard import Guard

    return Guard(args.policy, model=args.model)


def decision_summary(d) -> dict:
    """A decision as `beaverguard check` prints it (:meth:`Decision.summary`; `POST /v1/guard/check` answers the same)."""
    return d.summary()


def cmd_check(args: argparse.Namespace) -> int:
    guard = _guard(args)
    if args.response is None:
        d = guard.check_input_sync(args.prompt, channel=args.channel)
    else:
        if args.channel != "user":
            guard.close()
            raise SystemExit("beaverguard check: --channel judges a text handed to the model (input rail); "
                             "it does not go with --response")
        d = guard.check_output_sync(args.prompt, args.response)
    print(json.dumps(decision_summary(d), indent=2, ensure_ascii=False))
    guard.close()
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    if args.engine == "ray":
        return _ray_score(args)
    from tqdm import tqdm

    from beaverguard._rows import channel_of, exchange_of, scored_fields

    rows = _read_rows(Path(args.input))
    try:
        channels = [channel_of(r, f"{args.input}:{i}") for i, r in enumerate(rows, 1)]
    except ValueError as exc:
        raise SystemExit(f"beaverguard score: {exc}") from None
    guard = _guard(args)
    exchanges = [exchange_of(r) for r in rows]
    with tqdm(total=len(rows), desc="scoring", unit="row", disable=args.quiet) as bar:
        scores = guard.score_many(exchanges, progress=bar.update)
    with contextlib.ExitStack() as stack:  # closes the file it opens, never stdout
        out = sys.stdout if args.output == "-" else stack.enter_context(open(args.output, "w", encoding="utf-8"))
        for row, ex, s, channel in zip(rows, exchanges, scores, channels):
            out.write(json.dumps({**row, **scored_fields(guard, ex, s, channel)}, ensure_ascii=False) + "\n")
    guard.close()
    return 0


def _ray_score(args: argparse.Namespace) -> int:
    """``score --engine ray``: Ray is imported here, and only here, so the core install never needs it."""
    try:
        import ray  # noqa: F401  (here, so that a missing extra is reported before anything starts)

        from beaverguard.ray.cli import run_score
    except ImportError as exc:
        if (exc.name or "").split(".")[0] not in ("ray", "pyarrow"):
            raise
        print(f"beaverguard score --engine ray needs the ray extra ({exc.name} is missing): "
              'pip install "beaverguard[ray]"', file=sys.stderr)
        return 2
    return run_score(args)


def _read_rows(path: Path) -> list[dict]:
    from beaverguard._jsonl import read_records

    try:
        return [record for _, record in read_records(path)]
    except ValueError as exc:
        raise SystemExit(str(exc)) from None


def cmd_policy_validate(args: argparse.Namespace) -> int:
    from beaverguard._exceptions import PolicyError
    from beaverguard._yaml import load_policy

    status = 0
    for path in args.files:
        try:
            load_policy(path)
            print(f"{path}: ok")
        except PolicyError as exc:
            print(exc, file=sys.stderr)
            status = 1
    return status


def cmd_policy_docs(args: argparse.Namespace) -> int:
    from beaverguard._policy_docs import policy_reference

    print(policy_reference(), end="")
    return 0


def cmd_policy_diff(args: argparse.Namespace) -> int:
    from beaverguard.replay import run_policy_diff

    return run_policy_diff(args)


def cmd_replay(args: argparse.Namespace) -> int:
    from beaverguard.replay import run_replay

    return run_replay(args)


def cmd_eval(args: argparse.Namespace) -> int:
    from beaverguard.training.evaluate import run_eval

    return run_eval(args)


def cmd_export(args: argparse.Namespace) -> int:
    from beaverguard.training.export_cli import run_export

    return run_export(args)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from beaverguard.training.export_cli import run_calibrate

    return run_calibrate(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="beaverguard", description="Guardrails scored by a BeaverTails model.")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_guard_options(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--policy", type=Path, help="policy YAML (default: the built-in policy)")
        p.add_argument("--model", type=Path, help="model directory (default: the policy's, else the embedded one)")
        return p

    p = with_guard_options(sub.add_parser("check", help="judge one prompt (and response); print the decision"))
    p.add_argument("--prompt", required=True)
    p.add_argument("--response", help="judge this response with the prompt (output rail)")
    p.add_argument("--channel", choices=["user", "tool_result", "document"], default="user",
                   help="where the prompt comes from: the user, a tool's output, or a document handed to the model "
                        "(the policy's injection rules differ by it)")
    p.set_defaults(func=cmd_check)

    p = with_guard_options(sub.add_parser("score", help="score a JSON Lines file of {prompt, response}",
                                          description="Add scores, unsafe and flagged to every row. --engine ray "
                                                      "scores on a Ray cluster (ray extra): JSON Lines or "
                                                      "Parquet, local paths or pyarrow.fs URIs (s3://, gs://, "
                                                      "...), written as shards into the --output directory; a "
                                                      "re-run skips the shards already written."))
    # strings, not Paths: a URI such as s3://bucket/x must keep its double slash
    p.add_argument("--input", required=True, help="JSON Lines file (ray: also Parquet, a directory, a URI)")
    p.add_argument("--output", required=True, help="output JSON Lines ('-' for stdout); ray: a directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: this process (default); ray: an actor pool on a Ray cluster (ray extra)")
    ray = p.add_argument_group("--engine ray")
    ray.add_argument("--ray-address", help="cluster to join (default: $RAY_ADDRESS, else start a local one)")
    ray.add_argument("--actors", type=int, default=1, help="scoring actors, each holding one model (default 1)")
    ray.add_argument("--cpus-per-actor", type=float, default=1.0, help="CPUs each actor reserves (default 1)")
    ray.add_argument("--gpus-per-actor", type=float, default=0.0,
                     help="GPUs each actor reserves; > 0 scores on CUDA (onnxruntime-gpu) (default 0)")
    ray.add_argument("--batch-size", type=int, default=64, help="rows per batch sent to an actor (default 64)")
    ray.add_argument("--shard-mb", type=float, default=8.0,
                     help="input megabytes per output shard, the unit a re-run skips (default 8; Parquet: "
                          "one shard per row group)")
    p.set_defaults(func=cmd_score)

    pol = sub.add_parser("policy", help="policy files").add_subparsers(dest="policy_command", required=True)
    p = pol.add_parser("validate", help="validate policy files")
    p.add_argument("files", type=Path, nargs="+")
    p.set_defaults(func=cmd_policy_validate)
    p = pol.add_parser("docs", help="print the policy reference (Markdown) generated from the schema")
    p.set_defaults(func=cmd_policy_docs)
    p = pol.add_parser("diff", help="print the keys that differ between two policy files, old -> new")
    p.add_argument("old", type=Path)
    p.add_argument("new", type=Path)
    p.set_defaults(func=cmd_policy_diff)

    p = sub.add_parser("replay", help="decide an audit log again under another policy; report what would change",
                       description="Re-decide every audit record from its stored scores (no model) under --policy, "
                                   "and report the changes by rail, action and category.")
    p.add_argument("audit", type=Path, help="audit JSON Lines file (the policy's audit.path)")
    p.add_argument("--policy", type=Path, required=True, help="the candidate policy YAML")
    p.add_argument("--model", type=Path, help="model directory (default: the policy's, else the embedded one)")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of tables")
    p.add_argument("--html", type=Path, help="also write one plot per changed category to this HTML file "
                                             "(the plot extra: matplotlib)")
    p.add_argument("--rescore", action="store_true",
                   help="score the text the records kept (content: full) again with the policy's model; "
                        "hashed or dropped text is not replayable")
    p.add_argument("--labels", type=Path, help="JSON Lines of {request_id, is_safe} from reviewers: precision, "
                                               "recall and FPR before and after, thresholds within --fpr-budget")
    p.add_argument("--fpr-budget", type=float, default=0.05, help="false-positive budget for --labels (default 0.05)")
    p.set_defaults(func=cmd_replay)

    p = with_guard_options(sub.add_parser("eval", help="precision, recall, F1, FPR and AUPRC on a labelled file"))
    p.add_argument("--data", type=Path, required=True, action="append", help="labelled JSON Lines (repeatable)")
    p.add_argument("--plot", type=Path, help="write precision-recall curves (PNG) to this directory")
    p.add_argument("--by-source", action="store_true", help="also report the decision's metrics per row source")
    p.add_argument("--unseen-from", type=Path, help="also report per source on the rows whose prompt this "
                                                    "(training) file does not have, not even nearly")
    p.add_argument("--equal-recall", metavar="SOURCE[=RECALL]",
                   help="also report each source's flagged share at the unsafe threshold that catches RECALL "
                        "(default 0.9) of SOURCE's unsafe rows: compare models at the same recall")
    p.add_argument("--json", type=Path, help="also write the metrics as JSON")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("export", help="export a checkpoint to ONNX, quantize to int8, calibrate (train extra)")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--mix", type=Path, help="the data mix the checkpoint was trained on: its calibration split, "
                                            "families and false-positive budgets set the thresholds")
    p.add_argument("--data-dir", type=Path, help="where the mix's files are (default: the mix's data_dir)")
    p.add_argument("--calib", type=Path, help="calibration split (JSON Lines) for thresholds, without --mix")
    p.add_argument("--sample", type=Path, help="held-out rows for the export checks, 1,024 drawn (default: --calib)")
    p.add_argument("--name", help="model name written into beaverguard.json (default: the --out directory's name)")
    p.add_argument("--max-length", type=int, default=256, help="the model's window in tokens (as trained)")
    p.add_argument("--keep-fp32", type=Path, help="also keep the fp32 ONNX graph here (for benchmarks)")
    p.add_argument("--onto", type=Path, help="the model directory a `train --only` run refitted: copy it and write in "
                                             "only the refitted classifier rows, so every other score stays as it was")
    p.add_argument("--precision", choices=["int8", "fp32"], default="int8",
                   help="int8: the CPU model (default); fp32: the GPU model, batch-invariant, so it batches")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("calibrate", help="recalibrate an exported model's thresholds (no torch needed)")
    p.add_argument("--model", type=Path, required=True, help="the model directory (its beaverguard.json is rewritten)")
    p.add_argument("--mix", type=Path, help="a data mix: its calibration split, families and budgets")
    p.add_argument("--data-dir", type=Path, help="where the mix's files are (default: the mix's data_dir)")
    p.add_argument("--calib", type=Path, help="calibration rows (JSON Lines), without --mix")
    p.set_defaults(func=cmd_calibrate)

    add_train_parser(sub)
    add_serve_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from beaverguard._exceptions import BeaverguardError

    try:
        return args.func(args)
    except BeaverguardError as exc:
        print(f"beaverguard: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
