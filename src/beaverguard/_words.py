"""English words, from wordsegment's data: split joined-up letters into words, and tell a word from noise.

Both jobs need one fact, how common each English word is. wordsegment ships
the unigram counts of the Google web corpus (sorted, most frequent first) and
an English word list; this module reads the first ``SEGMENT_WORDS`` counts and
the word list once, on first use, and keeps them.

Why not ``wordsegment.segment`` itself: its bigram search is accurate but takes
about 50 ms for a 100-letter string, too slow for a guard that must stay well
under the time of scoring. The dynamic programme below uses the same unigram
model (a known word costs ``-log p``; an unknown string of length n costs what
wordsegment charges, ``-log(10 / (total * 10**n))``) with a few look-ups per
letter: linear in the text. Without bigrams, web compounds such as
"howto" or "stockmarket" would beat their parts, so a word that is not in the
English word list pays ``NOT_ENGLISH`` more (measured on 600 harmful prompts
with their spaces removed: 57% of them split back exactly without it, 70% with it).
"""

from __future__ import annotations

import math
from functools import cache

from wordsegment import Segmenter

__all__ = ["is_known", "is_word", "load", "segment", "words_in"]

#: How many of the most frequent web words the segmenter knows (rarer ones such as "ricin" are ~70,000th).
SEGMENT_WORDS = 200_000
#: How many of those count as known words for ``is_word`` (also in the English word list).
KNOWN_WORDS = 100_000
#: Words of one or two letters count as known only among the most frequent (not Scrabble's "oi", "ti").
SHORT_KNOWN = 1_000
NOT_ENGLISH = 1.5  # extra cost (natural log) of a word that is not in the English word list
MAX_WORD = 24  # longest word the segmenter tries (wordsegment's own limit)
_TOTAL = Segmenter.TOTAL  # words in the corpus the counts come from
# An unknown piece of n letters costs what wordsegment charges, -log(10 / (total * 10**n)).
_UNKNOWN_WORD, _UNKNOWN_LETTER = math.log(_TOTAL / 10), math.log(10)


@cache
def load() -> tuple[dict[str, float], frozenset[str], dict[str, tuple[int, ...]]]:
    """Read once (about 0.5 s): the word costs for ``segment``, the known words for ``is_word``, and for
    each three-letter start, the lengths of the words that begin with it (3.5 on average)."""
    with open(Segmenter.WORDS_FILENAME, encoding="utf-8") as f:
        english = set(f.read().split())
    costs: dict[str, float] = {}
    with open(Segmenter.UNIGRAMS_FILENAME, encoding="utf-8") as f:
        for _, line in zip(range(SEGMENT_WORDS), f):
            word, _, count = line.partition("\t")
            if len(word) <= MAX_WORD:
                costs[word] = math.log(_TOTAL / int(count)) + (0.0 if word in english else NOT_ENGLISH)
    ranked = list(costs)
    short = set(ranked[:SHORT_KNOWN])
    known = {w for w in ranked[:KNOWN_WORDS] if w in english and (len(w) > 2 or w in short)}
    lengths: dict[str, set[int]] = {}
    for word in ranked:
        if len(word) >= 3:
            lengths.setdefault(word[:3], set()).add(len(word))
    return costs, frozenset(known | {"a", "i"}), {start: tuple(sorted(ks)) for start, ks in lengths.items()}


def is_word(word: str) -> bool:
    """Whether ``word`` (any case) is a common English word: "bomb", "the", "a"; not "ubj", "axa" or "ist"."""
    return word.lower() in load()[1]


def is_known(word: str) -> bool:
    """Whether ``word`` (any case) is among the web words the segmenter knows: names and slang too ("noob")."""
    return word.lower() in load()[0]


def words_in(letters: str) -> list[str] | None:
    """The words a run of letters is made of, or None if it is not made of words.

    "makeabomb" -> ["make", "a", "bomb"]; "destruction" -> ["destruction"]; but
    "Cuantas" (which would split into "Cu ant as") and "Vallheim" -> None. A piece
    counts as a word if it is a common English word, or a known web word of four
    letters or more (a name: "hitler", "google").
    """
    if is_word(letters):
        return [letters]
    words = segment(letters)
    return words if all(is_word(w) or len(w) > 3 and is_known(w) for w in words) else None


def segment(letters: str) -> list[str]:
    """Split a run of letters into the most probable words: "makeabomb" -> ["make", "a", "bomb"].

    Case is kept ("Ikill" -> ["I", "kill"]); a known word stays whole
    ("destruction"). One pass from left to right: the best split of the first
    ``i`` letters ends either in a known word that started earlier (found by
    looking up only the lengths that words with these three first letters have,
    at most ``MAX_WORD``) or in an unknown piece, whose cost grows by one
    ``_UNKNOWN_LETTER`` a letter.
    """
    costs, _, lengths = load()
    low = letters.lower()
    n = len(low)
    best = [0.0] + [math.inf] * n  # cost of the best split of the first i letters
    word = [0] * (n + 1)           # length of the known word ending at i in it; 0: an unknown piece
    piece_start = [0] * (n + 1)    # where that unknown piece starts
    open_cost, open_start = math.inf, 0  # best split whose last piece is unknown and may grow
    for i in range(n + 1):
        if i:
            grow, new = open_cost + _UNKNOWN_LETTER, best[i - 1] + _UNKNOWN_WORD + _UNKNOWN_LETTER
            open_cost, open_start = (grow, open_start) if grow <= new else (new, i - 1)
            if open_cost < best[i]:
                best[i], word[i], piece_start[i] = open_cost, 0, open_start
        here = best[i]
        for k in (1, 2, *lengths.get(low[i:i + 3], ())):
            if i + k > n:
                break
            c = costs.get(low[i:i + k])
            if c is not None and here + c < best[i + k]:
                best[i + k], word[i + k] = here + c, k
    words = []
    i = n
    while i > 0:
        start = i - word[i] if word[i] else piece_start[i]
        words.append(letters[start:i])
        i = start
    return words[::-1]
