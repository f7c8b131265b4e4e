"""Swearing: the same request with casual profanity, harmless and harmful alike.

People swear at their computers, their cars and their ovens. Model v3.3 learnt
that profanity means harm: at the threshold that catches 90% of a held-out
harmful-question source, a quarter of a held-out set of benign questions holding
rude words were flagged ("How can I fix this goddamn computer?"). Here a
request gets a swear word in one of four places (an interjection before it, an
intensifier inside it, "the hell" after its question word, a frustrated remark
after it) and keeps its own label, on both sides: profanity alone then carries
no signal, and the request decides.

A quarter of the words (by a hash of the word) is held out: training sees only
the others, and :func:`swear` with ``held=True`` builds evaluation rows from the
held-out ones.
"""

from __future__ import annotations

import random
import re
from dataclasses import replace

from beaverguard.training.augment import _held_out
from beaverguard.training.data import Row

__all__ = ["INTERJECTIONS", "INTENSIFIERS", "REMARKS", "held_out", "swear", "swearing_rows"]

INTERJECTIONS = (
    "Damn,", "Dammit,", "Shit,", "Crap,", "Fuck,", "Ugh, fuck.", "Holy shit,", "Goddammit,", "For fuck's sake,",
    "Bloody hell,", "Jesus Christ,", "Son of a bitch,", "Oh hell,", "Christ,", "Screw it,", "Argh, shit.",
    "Fucking hell,", "Oh crap,", "Hell,", "Balls,",
)
INTENSIFIERS = (
    "damn", "goddamn", "fucking", "freaking", "bloody", "frigging", "effing", "shitty", "crappy", "damned",
    "stupid", "godforsaken", "bastard", "motherfucking", "piece-of-shit", "sodding",
)
#: ``{w}`` takes an intensifier.
REMARKS = (
    "This is driving me {w} crazy.", "I'm so {w} tired of this.", "Sorry for swearing, it's been a {w} long day.",
    "This is {w} ridiculous.", "I've wasted a whole {w} afternoon on this.", "Please, I'm losing my {w} mind.",
    "Every {w} time.", "I'm at my {w} wits' end.",
)
_HELL = ("hell", "fuck", "heck", "devil", "fucking hell")

_QUESTION = re.compile(r"^(How|What|Where|Why|Who|When)\s+(do|does|did|can|could|should|would|is|are|was|am)\b")
_DETERMINER = re.compile(r"\b(the|this|that|my|your|our|these|those|his|her|their)\s+"
                         r"(?!(?:best|most|least|first|last|same|other|only|right|way)\b)(?=[a-z])")


def held_out(word: str, share: float = 0.25, seed: int = 13) -> bool:
    """Whether ``word`` is in the held-out share (stable: a hash of the word and the seed)."""
    return _held_out(f"swear:{word}", share, seed)


def _pick(words: tuple[str, ...], rng: random.Random, held: bool, share: float, seed: int) -> str:
    side = [w for w in words if held_out(w, share, seed) == held]
    return rng.choice(side or words)  # a list too short to split is shared


def swear(text: str, rng: random.Random, *, held: bool = False, share: float = 0.25, seed: int = 13) -> str:
    """``text`` with one swear word put in one of four places (words from the kept or held-out share)."""
    how = rng.randrange(4)
    if how == 1 and (m := _DETERMINER.search(text)):
        return f"{text[:m.end()]}{_pick(INTENSIFIERS, rng, held, share, seed)} {text[m.end():]}"
    if how == 2 and (m := _QUESTION.match(text)):
        return f"{m.group(1)} the {_pick(_HELL, rng, held, share, seed)} {text[len(m.group(1)):].lstrip()}"
    if how == 3:
        remark = _pick(REMARKS, rng, held, share, seed).format(w=_pick(INTENSIFIERS, rng, held, share, seed))
        return f"{text.rstrip()} {remark}"
    first = text[:1].lower() if text[1:2].islower() else text[:1]
    return f"{_pick(INTERJECTIONS, rng, held, share, seed)} {first}{text[1:]}"


def swearing_rows(harmful: list[Row], benign: list[Row], n: int, seed: int, *, held: bool = False,
                  share: float = 0.25, max_words: int = 60) -> list[Row]:
    """``n`` rows, half harmful and half benign requests, each with swearing and its own label."""
    rng = random.Random(f"{seed}:swearing:{held}")
    out: list[Row] = []
    for pool in (harmful, benign):
        short = [r for r in pool if len(r.prompt.split()) <= max_words]
        for _ in range(n // 2 if short else 0):
            row = rng.choice(short)
            out.append(replace(row, prompt=swear(row.prompt, rng, held=held, share=share, seed=seed),
                               source=f"{row.source}+swearing"))
    return out
