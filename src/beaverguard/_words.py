"""English words, from wordsegment's data: split joined-up letters into words, and tell a word from noise.

Both jobs need one fact, how common each English word is. wordsegment ships
the unigram counts of the Google web corpus (sorted, most frequent first) and
an English word list; this module reads the first ``SEGMENT_WORDS`` counts and
the word list once, on first use, and keeps them.

Why not ``wordsegment.segment`` itself: its bigram search is accurate but takes
about 50 ms for a 100-letter string, too slow for a guard that must stay well
under the time of scoring. The dynamic programme below uses the same unigram
model (a known word costs ``-log p``; an unknown string of length n costs what
wordsegment charges, ``-log(10 / (total * 10**n))``) at a fixed number of
look-ups per letter: linear in the text. Without bigrams, web compounds such as
"howto" or "stockmarket" would beat their parts, so a word that is not in the
English word list pays ``NOT_ENGLISH`` more (measured on 600 harmful prompts
with their spaces removed: 57% of them split back exactly without it, 70% with it).
"""

from __future__ import annotations

import math
from functools import cache

from wordsegment import Segmenter

__all__ = ["is_word", "load", "segment"]

#: How many of the most frequent web words the segmenter knows (rarer ones such as "ricin" are ~70,000th).
SEGMENT_WORDS = 200_000
#: How many of those count as known words for ``is_word`` (also in the English word list).
KNOWN_WORDS = 100_000
#: Words of one or two letters count as known only among the most frequent (not Scrabble's "oi", "ti").
SHORT_KNOWN = 1_000
NOT_ENGLISH = 1.5  # extra cost (natural log) of a word that is not in the English word list
MAX_WORD = 24  # longest word the segmenter tries (wordsegment's own limit)
_TOTAL = Segmenter.TOTAL  # words in the corpus the counts come from
_LOG10 = math.log(10)


@cache
def load() -> tuple[dict[str, float], frozenset[str]]:
    """The word costs for ``segment`` and the known words for ``is_word``, read once (about 0.3 s)."""
    with open(Segmenter.WORDS_FILENAME, encoding="utf-8") as f:
        english = set(f.read().split())
    costs: dict[str, float] = {}
    with open(Segmenter.UNIGRAMS_FILENAME, encoding="utf-8") as f:
        for _, line in zip(range(SEGMENT_WORDS), f):
            word, _, count = line.partition("\t")
            costs[word] = math.log(_TOTAL / int(count)) + (0.0 if word in english else NOT_ENGLISH)
    ranked = list(costs)
    short = set(ranked[:SHORT_KNOWN])
    known = {w for w in ranked[:KNOWN_WORDS] if w in english and (len(w) > 2 or w in short)}
    return costs, frozenset(known | {"a", "i"})


def is_word(word: str) -> bool:
    """Whether ``word`` (any case) is a common English word: "bomb", "the", "a"; not "ubj", "axa" or "ist"."""
    return word.lower() in load()[1]


def _unknown_cost(n: int) -> float:
    return math.log(_TOTAL / 10) + n * _LOG10


def segment(letters: str) -> list[str]:
    """Split a run of letters into the most probable words: "makeabomb" -> ["make", "a", "bomb"].

    Case is kept ("Ikill" -> ["I", "kill"]); a known word stays whole
    ("destruction"). Work is at most ``MAX_WORD`` look-ups per letter.
    """
    costs = load()[0]
    low = letters.lower()
    n = len(low)
    best = [0.0] * (n + 1)
    back = [0] * (n + 1)
    unknown = [_unknown_cost(k) for k in range(MAX_WORD + 1)]
    for i in range(1, n + 1):
        cost, length = math.inf, 1
        for k in range(1, min(MAX_WORD, i) + 1):
            c = best[i - k] + costs.get(low[i - k:i], unknown[k])
            if c < cost:
                cost, length = c, k
        best[i], back[i] = cost, length
    words = []
    i = n
    while i > 0:
        words.append(letters[i - back[i]:i])
        i -= back[i]
    return words[::-1]
