"""Streaming output rail: time to first token, and scoring time against response length.

    python benchmarks/bench_streaming.py [--delay-ms 0]

A fake model streams a long answer (BeaverTails responses joined, cut to length)
word by word, with no delay by default, so every millisecond measured is the
guard's. Handlers are guarded with ``@guard.protect`` (an async generator), in
``buffer`` and ``stream_first`` modes, against the same generator unguarded.
The checks score ``chunk_chars`` new characters plus ``overlap_chars`` of context
each, so the total should grow linearly with the length: the table gives the
extra time per character at each length.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from pathlib import Path

from _common import DEFAULT_MODEL_DIR, load_pairs, median, report, table

from beaverguard import Guard, Policy


def answers(lengths: list[int], **kw) -> tuple[str, dict[int, list[str]]]:
    """One prompt and, per length, that many characters of realistic answer text as word tokens."""
    pairs = load_pairs(400, **kw)
    text = " ".join(r for _, r in pairs)
    assert len(text) >= max(lengths), "not enough text for the longest answer"
    return pairs[0][0], {n: re.findall(r"\S+\s*", text[:n]) for n in lengths}


def make_handler(tokens_by_len: dict[int, list[str]], delay: float):
    async def handler(prompt: str, length: int):
        for tok in tokens_by_len[length]:
            if delay:
                await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)  # yield to the loop, as a real network stream would
            yield tok
    return handler


async def first_token(stream) -> float:
    t0 = time.perf_counter()
    async for _ in stream:
        break
    ttft = time.perf_counter() - t0
    await stream.aclose()
    return ttft


async def drain(stream) -> tuple[float, int]:
    t0 = time.perf_counter()
    chars = 0
    async for chunk in stream:
        chars += len(chunk)
    return time.perf_counter() - t0, chars


def guard_for(model: Path, mode: str, input_rail: bool) -> Guard:
    # Rules log instead of block, so that no check cuts a stream short: every check is run and timed.
    log = {"default": {"action": "log"}, "unsafe": {"action": "log"}}
    return Guard(Policy.model_validate({"streaming": {"mode": mode}, "input": {"enabled": input_rail, **log},
                                        "output": log, "timeout_s": 300}), model=model)


async def run(args: argparse.Namespace) -> str:
    lengths = [int(x) for x in args.lengths.split(",")]
    prompt, tokens = answers(lengths, **({"path": args.data} if args.data else {}))
    handler = make_handler(tokens, args.delay_ms / 1000)
    guards = {(mode, rail): guard_for(args.model, mode, rail)
              for mode in ("buffer", "stream_first") for rail in (False, True)}
    variants = {"no guard": handler, **{(m, r): g.protect(handler) for (m, r), g in guards.items()}}
    for v in variants.values():  # warm up
        await drain(v(prompt, lengths[0]))

    ttft: dict = {k: [] for k in variants}
    total: dict = {(k, n): [] for k in variants if k == "no guard" or not k[1] for n in lengths}
    for rep in range(args.repeats):
        keys = list(variants)
        keys = keys[rep % len(keys):] + keys[:rep % len(keys)]
        for k in keys:
            for _ in range(5):
                ttft[k].append(await first_token(variants[k](prompt, lengths[-1])))
        for n in lengths:
            for k in keys:
                if (k, n) in total:
                    wall, chars = await drain(variants[k](prompt, n))
                    assert chars == len("".join(tokens[n])), (k, n, chars)  # nothing was cut short
                    total[(k, n)].append(wall)
        print(f"pass {rep + 1}/{args.repeats} done")
    for g in guards.values():
        g.close()

    def label(k) -> str:
        return k if isinstance(k, str) else f"{k[0]}{', input rail on' if k[1] else ''}"

    base = median(ttft["no guard"])
    ttft_rows = [[label(k), median(v) * 1e3, f"{(median(v) - base) * 1e3:.2f}"] for k, v in ttft.items()]
    s = guards[("buffer", False)].policy.streaming
    rows = []
    for n in lengths:
        none = median(total[("no guard", n)])
        row = [n, none * 1e3]
        for mode in ("buffer", "stream_first"):
            t = median(total[((mode, False), n)])
            row += [t * 1e3, (t - none) * 1e3, (t - none) / n * 1e6]
        rows.append(row)
    per_char = {mode: [r[4 + 3 * i] for r in rows] for i, mode in enumerate(("buffer", "stream_first"))}
    spread = {m: max(v) / min(v) for m, v in per_char.items() if min(v) > 0}
    return (f"Prompt: one BeaverTails prompt; answer: BeaverTails responses joined and cut to length, streamed "
            f"word by word ({'no delay' if not args.delay_ms else f'{args.delay_ms} ms per word'}). Policy: "
            f"default but for the mode, and rules that log instead of block (so every check runs); `chunk_chars` {s.chunk_chars}, `overlap_chars` {s.overlap_chars}; input "
            f"rail off unless said, so the figures are the output rail's. {args.repeats} passes, variants "
            "interleaved; medians.\n\n"
            "### Time to first token\n\n"
            + table(["variant", "TTFT ms", "extra vs no guard, ms"], ttft_rows)
            + "\n\n`buffer` holds text back until a check of the first "
            f"{s.chunk_chars} characters has passed; `stream_first` releases the first chunk at once. With the "
            "input rail on, the prompt's check comes first in both.\n\n"
            "### Total time against length\n\n"
            + table(["answer chars", "no guard ms", "buffer ms", "buffer extra ms", "buffer extra us/char",
                     "stream_first ms", "stream_first extra ms", "stream_first extra us/char"], rows)
            + "\n\nLinear if the extra time per character stays flat: across these lengths it varies by a factor "
            + ", ".join(f"{v:.2f} ({m})" for m, v in spread.items()) + " between its largest and smallest value.\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--lengths", default="1000,2000,4000,8000,16000")
    ap.add_argument("--delay-ms", type=float, default=0.0, help="fixed delay per streamed word")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--name", default="streaming")
    args = ap.parse_args()
    report(args.name, "Streaming output rail", asyncio.run(run(args)))


if __name__ == "__main__":
    main()
