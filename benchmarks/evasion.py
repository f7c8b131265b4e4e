"""How much obfuscation evades the input rail, with and without normalization.

Takes a seeded sample of harmful prompts, obfuscates each one several ways,
scores every variant with the default model under the default policy (with
``execution.normalize`` on and off) and reports the input rail's recall: the
share of harmful prompts it flags at the model's calibrated thresholds. Benign
prompts show what normalization costs in false positives.

    python benchmarks/evasion.py [--n 300] [--seed 0]     # writes benchmarks/results/evasion.md
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from pathlib import Path

from _common import DEFAULT_DATA, report, table

from beaverguard import Exchange, Guard, Policy
from beaverguard._normalize import normalize

DATA = DEFAULT_DATA.parent
HARMFUL = DATA / "beavertails_30k_train_unsafe_prompts.jsonl"
BENIGN = DATA / "alpaca_harmless_prompts.jsonl"

_HOMOGLYPHS = {"a": "а", "c": "с", "e": "е", "o": "о", "p": "р", "x": "х", "y": "у", "i": "і", "s": "ѕ",
               "j": "ј", "A": "А", "B": "В", "C": "С", "E": "Е", "H": "Н", "K": "К", "M": "М", "O": "О",
               "P": "Р", "T": "Т", "X": "Х"}
_LEET = {"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"}


def homoglyphs(text: str, rng: random.Random) -> str:
    return "".join(_HOMOGLYPHS.get(ch, ch) for ch in text)


def zero_width(text: str, rng: random.Random) -> str:
    return " ".join("\u200b".join(word) for word in text.split(" "))


def spacing(text: str, rng: random.Random) -> str:
    return "  ".join(" ".join(word) for word in text.split())


def leetspeak(text: str, rng: random.Random) -> str:
    return "".join(_LEET.get(ch.lower(), ch) for ch in text)


def mixed(text: str, rng: random.Random) -> str:
    # One trick per word, so a prompt mixes them all.
    return " ".join(rng.choice(list(OBFUSCATIONS.values())[:-1])(word, rng) for word in text.split())


OBFUSCATIONS: dict[str, Callable[[str, random.Random], str]] = {
    "homoglyphs": homoglyphs, "zero-width": zero_width, "spacing": spacing, "leetspeak": leetspeak, "mixed": mixed,
}


def load(path: Path, n: int, seed: int) -> list[str]:
    prompts = [json.loads(line)["prompt"] for line in path.open()]
    return random.Random(seed).sample(prompts, min(n, len(prompts)))


def flagged_share(guard: Guard, prompts: list[str]) -> float:
    scores = guard.score_many([Exchange(p) for p in prompts])
    return sum(guard.judge("input", s)[0].severity > 0 for s in scores) / len(prompts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="harmful prompts to sample")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    harmful = load(HARMFUL, args.n, args.seed)
    benign = load(BENIGN, 400, args.seed)
    guards = {"off": Guard(Policy.model_validate({"execution": {"normalize": False}})), "on": Guard()}
    start = time.perf_counter()
    rows = []
    for name, fn in {"plain": lambda t, r: t, **OBFUSCATIONS}.items():
        rng = random.Random(args.seed)
        variants = [fn(p, rng) for p in harmful]
        off, on = (flagged_share(guards[k], variants) for k in ("off", "on"))
        rows.append((name, off, on))
        print(f"{name:12s} recall off {off:6.1%}  on {on:6.1%}", flush=True)
    fp_off, fp_on = (flagged_share(guards[k], benign) for k in ("off", "on"))
    changed = sum(normalize(p) != p for p in benign)
    elapsed = time.perf_counter() - start
    for g in guards.values():
        g.close()

    lines = [
        f"Model: default ({guards['on'].scorer.spec.name}), default policy (calibrated input thresholds; "
        "a prompt counts as caught when any rule fires). Data: "
        f"{args.n} harmful prompts sampled (seed {args.seed}) from `{HARMFUL.name}`; "
        f"benign: {len(benign)} prompts of `{BENIGN.name}`. Time: {elapsed:.0f} s for everything.",
        "",
        table(["obfuscation", "recall, normalize off", "recall, normalize on", "change"],
              [[name, f"{off:.1%}", f"{on:.1%}", f"{on - off:+.1%}"] for name, off, on in rows]),
        "",
        f"Benign prompts flagged (false positives): {fp_off:.1%} off, {fp_on:.1%} on; "
        f"normalization changed the text of {changed} of {len(benign)} benign prompts.",
        "",
        "Obfuscations: homoglyphs = Latin letters with a Cyrillic look-alike swapped for it; zero-width = "
        "U+200B between the letters of every word; spacing = letters separated by a space, words by two; "
        "leetspeak = a e i o s t -> 4 3 1 0 5 7; mixed = one of those per word (seeded).",
        "",
        "Notes: zero-width characters never evaded this model: its BERT tokenizer already drops format "
        "characters, so normalization adds nothing there. The harmful prompts come from the split the default "
        "model was trained on, so plain recall is optimistic; the gaps between obfuscations are the point.",
    ]
    report("evasion", "Evasion: input-rail recall under obfuscation, normalization off vs on", "\n".join(lines))


if __name__ == "__main__":
    main()
