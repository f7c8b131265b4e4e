"""Runs side by side, one column each: the figures an ablation decides on (issue 20, step 0).

    python benchmarks/ablation.py NAME=EVAL.json:ROBUSTNESS.md ... [--out FILE.md]

Each run is the JSON of ``beaverguard eval --by-source --equal-recall catqa=0.9 --json`` (on the
test split and the sources held out whole) and the table ``benchmarks/robustness.py --out`` wrote.
Harm is read three ways: ranking (AUPRC of ``unsafe``, which no threshold moves), the default
policy's decision, and each benign source's flagged share at equal recall (the threshold that catches
90% of held-out CatQA). A change counts as better only where it ranks better or flags less at the
same recall; the operating-point rows show where a calibration moved instead.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

HELD = "held out"
#: (label, where to read it): ("eval", path in the JSON) or ("robustness", section, start of the row's text).
ROWS: list[tuple[str, tuple]] = [
    ("AUPRC `unsafe`, prompts (test split)", ("eval", "sections", "prompt", "unsafe", "auprc")),
    ("AUPRC `unsafe`, QA pairs (test split)", ("eval", "sections", "qa", "unsafe", "auprc")),
    ("BeaverTails QA F1 (test split)", ("eval", "by_source", "beavertails-30k_test", "qa", "f1")),
    ("CatQA recall (held out)", ("eval", "by_source", "catqa", "prompt", "recall")),
    ("JailbreakV recall (held out)", ("eval", "by_source", "jailbreakv-28k", "prompt", "recall")),
    ("OKTest flagged (held out)", ("eval", "by_source", "oktest", "prompt", "fpr")),
    ("oasst1 flagged", ("eval", "by_source", "oasst1-first-turn", "prompt", "fpr")),
    ("OR-Bench-Hard flagged", ("eval", "by_source", "or-bench-hard-1k", "prompt", "fpr")),
    ("at CatQA recall 0.90: OKTest flagged", ("eval", "equal_recall", "flagged", "oktest (prompt)", "safe_flagged")),
    ("at CatQA recall 0.90: oasst1 flagged",
     ("eval", "equal_recall", "flagged", "oasst1-first-turn (prompt)", "safe_flagged")),
    ("at CatQA recall 0.90: ShareGPT flagged",
     ("eval", "equal_recall", "flagged", "sharegpt-first-turn (prompt)", "safe_flagged")),
    ("at CatQA recall 0.90: OR-Bench-Hard flagged",
     ("eval", "equal_recall", "flagged", "or-bench-hard-1k (prompt)", "safe_flagged")),
    ("at CatQA recall 0.90: PHTest flagged", ("eval", "equal_recall", "flagged", "phtest (prompt)", "safe_flagged")),
    ("at CatQA recall 0.90: JailbreakV caught",
     ("eval", "equal_recall", "flagged", "jailbreakv-28k (prompt)", "unsafe_caught")),
    ("contrast, harmful fills (held-out templates)", ("robustness", "contrast (held out)", "harmful objects")),
    ("contrast, everyday fills flagged", ("robustness", "contrast (held out)", "everyday objects")),
    ("adult sexual: child_abuse stays under", ("robustness", "categories", "adult sexual")),
    ("injection: Tensor Trust hijacking (held out)", ("robustness", "injection (held out)", "tensor-trust-hijacking")),
    ("injection: planted, held-out parts", ("robustness", "injection (held out)", "planted in held-out")),
    ("injection: held-out notes to a person flagged", ("robustness", "injection (held out)", "the same carriers")),
    ("injection: composed, held-out parts", ("robustness", "injection (held out)", "composed from held-out")),
    ("injection: composed notes to people flagged", ("robustness", "injection (held out)", "notes to people composed")),
    ("injection: NotInject flagged (held out)", ("robustness", "injection (held out)", "notinject")),
    ("injection: deepset recall (test split)", ("robustness", "injection (test split)", "deepset-prompt-injections:")),
    ("injection: PromptShield recall (test split)", ("robustness", "injection (test split)", "promptshield-5k:")),
    ("injection: ordinary chat flagged", ("robustness", "injection", "ordinary chat")),
    ("injection: harmless tool results flagged", ("robustness", "injection", "harmless tool results")),
    ("injection: held-out attacks alone", ("robustness", "injection in a document", "held-out injections alone")),
    ("injection: in 2,000 tokens, middle (× alone)", ("robustness", "injection in a document", "inside ~2,000 tokens, at the middle")),
    ("injection: in 2,000 tokens, end (× alone)", ("robustness", "injection in a document", "inside ~2,000 tokens, at the end")),
]


def robustness_rows(path: Path) -> dict[tuple[str, str], str]:
    """(section, what) -> the value (and its ratio, where the table has one) of a robustness table."""
    out = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and re.fullmatch(r"[0-9.]+", cells[3]):
            out[(cells[0], cells[1])] = cells[3] + (f" ({cells[4]}×)" if cells[4] else "")
    return out


def value(run: tuple[dict, dict], where: tuple) -> str:
    report, table = run
    if where[0] == "eval":
        node = report
        for key in where[1:]:
            node = node.get(key) if isinstance(node, dict) else None
        return "" if node is None else f"{node:.3f}"
    section, start = where[1], where[2]
    return next((v for (s, what), v in table.items() if s == section and what.startswith(start)), "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", metavar="NAME=EVAL.json:ROBUSTNESS.md")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    names, runs = [], []
    for spec in args.runs:
        name, _, paths = spec.partition("=")
        eval_path, _, robustness_path = paths.partition(":")
        names.append(name)
        runs.append((json.loads(Path(eval_path).read_text()), robustness_rows(Path(robustness_path))))
    lines = [f"| | {' | '.join(names)} |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {label} | {' | '.join(value(r, where) for r in runs)} |" for label, where in ROWS]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
