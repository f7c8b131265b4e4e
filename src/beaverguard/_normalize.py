"""Undo common obfuscation before scoring, so "b0mb", "b o m b" and "bоmb" (Cyrillic о) score as "bomb".

Only the scorer sees the normalized text; the prompt or response that passes on
to the model or the user is the original. Each step is conservative, because a
guard that mangles ordinary text raises false positives:

1. Unicode NFKC (full-width, ligatures, mathematical letters -> plain letters).
2. Invisible characters dropped: zero-width, bidi and other format characters,
   variation selectors, tag characters, control characters (not tab or newline),
   and lone surrogates.
3. Cyrillic and Greek look-alikes folded to Latin, only in words that mix them
   with Latin letters, or in words made of look-alikes alone when the text uses
   no other letters of that script (so Russian or Greek text is left alone).
4. Spaced-out letters joined: three or more single characters with the same
   separator between them ("b o m b", "k.i.l.l", "s-e-x"); in text that has
   such runs, pairs too ("t o"). Runs of mixed case or mostly digits stay.
5. Leetspeak folded inside words only: a digit or symbol between letters
   ("k1ll", "h@ck", "n00b"), and then the digits at that word's ends
   ("5h00t"). "2nd", "100%", "mp3", "win10", "i18n", "k8s" and e-mail
   addresses stay as they are. In text where a quarter of the words or more
   were leet, short digit words are folded too ("70" -> "to", "7h47" -> "that").
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["normalize"]

_INVISIBLE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f"
    "\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff9-\ufffb"
    "\ud800-\udfff\U0001d173-\U0001d17a\U000e0000-\U000e007f\U000e0100-\U000e01ef]")

_LOOKALIKES = {
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "ё": "e", "һ": "h", "і": "i", "ї": "i", "ј": "j", "к": "k", "м": "m",
    "н": "h", "о": "o", "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "ԁ": "d", "ӏ": "l",
    "ԛ": "q", "ԝ": "w", "ь": "b", "ү": "y", "ɡ": "g",
    "А": "A", "В": "B", "Е": "E", "Ё": "E", "Һ": "H", "І": "I", "Ї": "I", "Ј": "J", "К": "K", "М": "M",
    "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T", "У": "Y", "Х": "X", "Ѕ": "S", "Ԁ": "D", "Ӏ": "I",
    "Ԛ": "Q", "Ԝ": "W", "Ү": "Y",
    # Greek
    "α": "a", "β": "b", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u",
    "χ": "x", "γ": "y", "ω": "w",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O",
    "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    # Latin and other look-alikes NFKC keeps
    "ı": "i", "ȷ": "j", "ɑ": "a", "ɩ": "i", "ɪ": "i", "ʏ": "y", "ᴀ": "a", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e",
    "ᴋ": "k", "ᴍ": "m", "ᴏ": "o", "ᴘ": "p", "ᴛ": "t", "ᴜ": "u", "ᴠ": "v", "ᴡ": "w", "ᴢ": "z",
    "օ": "o", "ս": "u", "ց": "g", "հ": "h", "ո": "n",
}
_FOLD = str.maketrans(_LOOKALIKES)
_HAS_LOOKALIKE = re.compile("[" + "".join(_LOOKALIKES) + "]")
_WORD = re.compile(r"[^\W\d_]+")

_SPACED = re.compile(r"(?<![\w@$])[A-Za-z0-9@$]([ .\-_*])(?:[A-Za-z0-9@$]\1)+[A-Za-z0-9@$](?![\w@$])")
_SPACED_PAIR = re.compile(r"(?<![\w@$])[A-Za-z0-9@$]([ .\-_*])[A-Za-z0-9@$](?![\w@$])")

_LEET = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"}
_LEET_DIGITS = frozenset("013457")
_LEET_TABLE = str.maketrans(_LEET)
_LEET_UPPER_TABLE = str.maketrans({k: v.upper() for k, v in _LEET.items()})
# Words of leet digits, with at most one letter ("70", "15", "7h47"), for text written mostly in leet.
_LEET_WORD = re.compile(r"(?<![\w.,%$])(?:[013457]{1,3}|[013457]+[A-Za-z][013457]*|[A-Za-z][013457]+)(?![\w.,%])")
# An e-mail address or URL (left alone), or a run of letters, digits and leet symbols.
_LEET_TOKEN = re.compile(r"(\S+@\S+\.\w+|\w+://\S+|www\.\S+)|([A-Za-z0-9@$!]+)")
_NUMERONYM = re.compile(r"[A-Za-z][12]\d[A-Za-z]{1,2}")  # i18n, a11y, l10n (but not n00b, l33t)
_HEX = re.compile(r"(0x)?[0-9a-fA-F]{8,}")
# Cheap pre-check: leet needs a digit or symbol between two letters somewhere in the text.
_LEET_INSIDE = re.compile(r"[A-Za-z][0-9@$!]+[A-Za-z]")


def _script(ch: str) -> str:
    return unicodedata.name(ch, "").split(" ", 1)[0]


def _fold_lookalikes(text: str) -> str:
    if not _HAS_LOOKALIKE.search(text):
        return text
    # Scripts the text really uses: any of their letters that are no look-alike.
    genuine = {_script(ch) for ch in text if not ch.isascii() and ch.isalpha() and ch not in _LOOKALIKES}

    def fold(m: re.Match) -> str:
        word = m.group()
        if not _HAS_LOOKALIKE.search(word):
            return word
        if any(ch.isascii() for ch in word):  # mixed scripts in one word: an evasion
            return word.translate(_FOLD)
        if all(ch in _LOOKALIKES for ch in word) and not {_script(ch) for ch in word} & genuine:
            return word.translate(_FOLD)
        return word

    return _WORD.sub(fold, text)


def _join_spaced(m: re.Match) -> str:
    run = m.group()[::2]
    letters = [ch for ch in run[1:] if ch.isalpha()]
    one_case = all(ch.islower() for ch in letters) or all(ch.isupper() for ch in letters) and not run[0].islower()
    return run if one_case and len(letters) * 2 >= len(run) else m.group()  # not "a U S A", "1 2 3"


def _unleet(token: str) -> str:
    if _NUMERONYM.fullmatch(token) or _HEX.fullmatch(token):
        return token
    letters = [i for i, ch in enumerate(token) if ch.isalpha()]
    if len(letters) < 2:
        return token
    first, last = letters[0], letters[-1]
    if not any(token[i] in _LEET for i in range(first + 1, last)):
        return token  # nothing between letters: "2nd", "mp3", "win10", "@john", "wow!!!"
    table = _LEET_UPPER_TABLE if all(token[i].isupper() for i in letters) else _LEET_TABLE
    inner = token[first:last + 1].translate(table)
    # With leet inside, leet digits just outside belong to the word too ("5h00t", "h4ck3r5").
    head, tail = token[:first], token[last + 1:]
    if all(ch in _LEET_DIGITS for ch in head):
        head = head.translate(table)
    if all(ch in _LEET_DIGITS for ch in tail):
        tail = tail.translate(table)
    return head + inner + tail


def _fold_leet(text: str) -> str:
    if not _LEET_INSIDE.search(text):  # ordinary text: skip the per-word pass
        return text
    folded = 0

    def one(m: re.Match) -> str:
        nonlocal folded
        if m.group(2) is None:  # an e-mail address or URL
            return m.group()
        out = _unleet(m.group(2))
        folded += out != m.group(2)
        return out

    text = _LEET_TOKEN.sub(one, text)
    # Text written mostly in leet: short digit words are leet too ("70" for "to", "7h47" for "that").
    if folded >= 2 and folded * 4 >= len(text.split()):
        text = _LEET_WORD.sub(lambda m: m.group().translate(_LEET_TABLE), text)
    return text


def normalize(text: str) -> str:
    """The text as the scorer should see it (see the module docstring)."""
    text = unicodedata.normalize("NFKC", _INVISIBLE.sub("", text))
    text = _fold_lookalikes(text)
    spaced = _SPACED.sub(_join_spaced, text)
    if spaced != text:  # the text is spaced out: join two-letter words too ("t o")
        spaced = _SPACED_PAIR.sub(_join_spaced, spaced)
    text = spaced
    return _fold_leet(text)
