"""What a shadow policy costs a check: the same guard with and without ``shadow:``, interleaved in one process.

    python benchmarks/bench_shadow.py [--n 200] [--blocks 10] [--out benchmarks/results/shadow.md]

The shadow decision reuses the enforced check's scores (no second model run), so its cost is one more
pass of the pure decision over 15-16 scores and a few more bytes in the audit record. Issue 24's
floor: at most 3% added to a check's latency. Prompts are BeaverTails prompts of ``../shared/data``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import machine  # noqa: E402

from beaverguard import Guard  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--blocks", type=int, default=10)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rows = [json.loads(line) for line in open(ROOT.parent / "shared" / "data" / "beavertails_30k_test_half.jsonl")]
    prompts = [r["prompt"] for r in rows[: args.n]]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        audit = "audit: {path: %s, log: false}\nexecution: {provider: cpu}\n"
        (tmp / "candidate.yaml").write_text("input: {default: {action: log}, unsafe: {threshold: 0.5}}\n")
        (tmp / "plain.yaml").write_text(audit % (tmp / "a.jsonl"))
        (tmp / "shadowed.yaml").write_text(audit % (tmp / "b.jsonl") + "shadow: candidate.yaml\n")
        guards = {"without shadow": Guard(tmp / "plain.yaml"), "with shadow": Guard(tmp / "shadowed.yaml")}
        times: dict[str, list[float]] = {k: [] for k in guards}
        try:
            for g in guards.values():
                for p in prompts[:10]:
                    g.check_input_sync(p)
            for _ in range(args.blocks):
                for name, g in guards.items():
                    for p in prompts:
                        start = time.perf_counter()
                        g.check_input_sync(p)
                        times[name].append(time.perf_counter() - start)
        finally:
            for g in guards.values():
                g.close()
    plain, shadow = (statistics.median(times[k]) * 1000 for k in ("without shadow", "with shadow"))
    text = "\n".join([
        "# Shadow policy cost (issue 24)", "",
        f"{machine()}; `python benchmarks/bench_shadow.py --n {args.n} --blocks {args.blocks}`; "
        f"{args.n} BeaverTails prompts, input rail, default model, sync checks, the two guards interleaved in "
        f"{args.blocks} blocks; audit to a file for both.", "",
        "| guard | p50 per check |", "|---|---|",
        f"| without shadow | {plain:.3f} ms |", f"| with `shadow:` | {shadow:.3f} ms |", "",
        f"Ratio: {shadow / plain:.3f}× (floor ≤ 1.03×)."])
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
