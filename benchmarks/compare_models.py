"""Two models side by side, from the JSON reports of ``beaverguard eval --by-source --equal-recall ... --json``.

    python benchmarks/compare_models.py OLD.json NEW.json [--names v2 v3] [--out FILE.md]

Per source and rail: the default policy's decision (recall on harmful rows, share flagged on safe
ones) with the AUPRC of the ``unsafe`` score beside it, and each source's flagged share at equal
recall (the ``unsafe`` threshold that catches the same share of the same held-out harmful source for
both models). A model is better only where it flags less at the same recall, or ranks better
(AUPRC); a threshold move alone changes the first two columns and nothing else.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _f(x: float | None) -> str:
    return "" if x is None else f"{x:.3f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--names", nargs=2, default=["old", "new"])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    old, new = (json.loads(p.read_text()) for p in (args.old, args.new))
    a, b = args.names
    lines = ["## The default policy's decision, by source", "",
             f"Recall on harmful rows / share flagged of safe rows, and AUPRC of `unsafe` where a source has both.", "",
             f"| source | rail | n | {a} | {b} | AUPRC {a} | AUPRC {b} |", "|---|---|---|---|---|---|---|"]
    for source in sorted(set(old["by_source"]) | set(new["by_source"])):
        for section in ("prompt", "qa"):
            o, n = old["by_source"].get(source, {}).get(section), new["by_source"].get(source, {}).get(section)
            if not o or not n:
                continue
            both = o["positives"] and o["n"] > o["positives"]
            if o["positives"] == o["n"]:
                vo, vn, what = o["recall"], n["recall"], "recall"
            elif o["positives"] == 0:
                vo, vn, what = o["fpr"], n["fpr"], "flagged"
            else:
                vo, vn, what = o["f1"], n["f1"], "F1"
            lines.append(f"| {source} | {section} | {o['n']} | {what} {_f(vo)} | {_f(vn)} | "
                         f"{_f(o['auprc']) if both else ''} | {_f(n['auprc']) if both else ''} |")
    for section in ("prompt", "qa"):
        o, n = old["sections"][section]["unsafe"], new["sections"][section]["unsafe"]
        lines.append(f"| **all {section} rows** | | {o['n']} | F1 {_f(o['f1'])} at FPR {_f(o['fpr'])} | "
                     f"F1 {_f(n['f1'])} at FPR {_f(n['fpr'])} | {_f(o['auprc'])} | {_f(n['auprc'])} |")
    eo, en = old.get("equal_recall"), new.get("equal_recall")
    if eo and en:
        lines += ["", f"## At equal recall: {eo['recall']:.0%} of {eo['source']}", "",
                  f"`unsafe` thresholds: {a} {eo['threshold']:.4f}, {b} {en['threshold']:.4f}. Share of each "
                  "source's safe rows flagged there (lower is better), and of its harmful rows caught.", "",
                  f"| source | n | safe flagged {a} | {b} | harmful caught {a} | {b} |", "|---|---|---|---|---|---|"]
        for key in sorted(set(eo["flagged"]) & set(en["flagged"])):
            o, n = eo["flagged"][key], en["flagged"][key]
            lines.append(f"| {key} | {o['n']} | {_f(o.get('safe_flagged'))} | {_f(n.get('safe_flagged'))} | "
                         f"{_f(o.get('unsafe_caught'))} | {_f(n.get('unsafe_caught'))} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
