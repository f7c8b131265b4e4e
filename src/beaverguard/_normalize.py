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
   What a run joins into is split into words again where it is made of words
   ("m a k e a b o m b" -> "make a bomb", "I k i l l" -> "I kill"; but
   "C u a n t a s" -> "Cuantas"), with the word frequencies of ``_words``;
   nothing else is ever split.
5. Leetspeak folded inside words only: a digit or symbol between letters
   ("k1ll", "h@ck", "n00b"), and then the digits at that word's ends
   ("5h00t"), where that makes words ("md5sum", "g4dn", "T1D" stay); leet
   digits at the start of a word (and maybe its end) where that makes a known
   word ("4bu53" -> "abuse", "3vil" -> "evil"). "2nd", "100%", "mp3", "win10",
   "net7", "7am", "4K", "4c74", "i18n", "k8s", numbers with a point, comma,
   colon or times ("3.14", "v1.2", "12:30", "4x4"), e-mail addresses and URLs
   stay as they are; "$" is an s at a word's ends where that makes a word
   ("l00k$", "$7up1d"), but "$and", "$HOME" and "$15" stay. In text where an
   eighth of the words or more were leet, any word with leet digits (or "$")
   that makes a known word is folded too ("70" -> "to", "4" -> "a", "7h3" ->
   "the", "1$" -> "is", "n31ghb0r'$" -> "neighbor's"; but "2024" and "100" stay).

Each step is linear in the text: regular expressions that start only where a
run starts, a Python call only for words with a digit or symbol or for
spaced-out runs, and a word split of a few look-ups per joined letter.
"""

from __future__ import annotations

import re
import unicodedata

from beaverguard._words import MAX_WORD, is_word, words_in

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
_LEET_ENDS = _LEET_DIGITS | {"$"}  # "l00k$", "$7up1d": the s of a plural or a first letter
_LEET_TABLE = str.maketrans(_LEET)
_LEET_UPPER_TABLE = str.maketrans({k: v.upper() for k, v in _LEET.items()})
# Left alone: an e-mail address, a URL, or a number with a point, comma, colon or times ("3.14", "v1.2",
# "12:30", "4x4", "1e5"), a percentage or a price ("50%", "$15"). Otherwise a run of letters, digits and
# leet symbols with a digit or symbol in it (plain words never reach Python). Each alternative starts only
# where a run starts, so a megabyte without a space stays linear.
_LEET_TOKEN = re.compile(r"((?<!\S)\S+@\S+\.\w+|(?<!\w)\w+://\S+|(?<![\w.])www\.\S+"
                         r"|(?<![\w.,:])(?:[vV]?\d+(?:[.,:xX]\d+)+|\d+(?:\.\d+)?[eE][+-]?\d+|\d+%)|[$€£]\d+(?!\w))"
                         r"|((?<![A-Za-z0-9@$!])[A-Za-z0-9@$!]*[0-9@$!][A-Za-z0-9@$!]*)")
_NUMERONYM = re.compile(r"[A-Za-z][12]\d[A-Za-z]{1,2}")  # i18n, a11y, l10n (but not n00b, l33t)
_HEX = re.compile(r"(0x)?[0-9a-fA-F]{8,}")
_HEXISH = re.compile(r"[0-9a-fA-F]+")
# A number with a unit or a name with a number: "7am", "3rd", "4K", "mp3", "v2" (not "7h3", "4bu53").
_UNIT = re.compile(r"\d+[A-Za-z]{1,2}|[A-Za-z]{1,2}\d+")
# Cheap pre-check: leet needs a digit or symbol between two letters, or a leet digit beside a letter.
_LEET_NEAR = re.compile(r"[A-Za-z][0-9@$!]+[A-Za-z]|[A-Za-z][013457]|[013457][A-Za-z]")
_LETTERS = re.compile(r"[A-Za-z]{2,}")
_POSSESSIVE_S = re.compile(r"(?<=[A-Za-z]')\$(?![\w$])")  # "n31ghb0r'$" in text written in leet


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
    # One case after the first letter, but for capitals that start a word ("H o w c a n I", "x E a s t"):
    # not "a U S A", "C o C", "a K x 1" or "1 2 3".
    one_case = (all(ch.isupper() for ch in letters) and not run[0].islower()
                or all(ch.islower() or ch == "I" or run[j + 1:j + 3].isalpha() and run[j + 1:j + 3].islower()
                       for j, ch in enumerate(run[1:], 1) if ch.isalpha()))
    if not one_case or len(letters) * 2 < len(run):
        return m.group()
    run = _unleet(run, heavy=False)
    if any(ch in _LEET_DIGITS for ch in run) and all(ch.isalpha() or ch in _LEET_DIGITS for ch in run):
        # Digits left in a spelled-out run are leet where that makes words: "4 p r o f i t" -> "a profit".
        words = words_in(run.translate(_LEET_TABLE))
        if words:
            return " ".join(words)
    if len(run) <= 3 and not words_in(run):
        return m.group()  # short runs join only into words ("t o", "s-e-x"; not "i.e.", "a+b-a-b", "b i j")
    if run.isupper():  # capitals may be initials or a list ("A B C D"): joined only into words ("K I L L")
        words = words_in(run)
        return " ".join(words) if words and all(map(is_word, words)) else m.group()
    return _LETTERS.sub(_words_of, run)  # "m a k e a b o m b" -> "make a bomb"


def _words_of(m: re.Match) -> str:
    """A run of letters that spaced-out text joined into, split into words if it is made of words."""
    return " ".join(words_in(m.group()) or [m.group()])


def _unleet(token: str, heavy: bool) -> str:
    if len(token) > MAX_WORD or _HEX.fullmatch(token):  # a key or a hash, not a word
        return token
    letters = [i for i, ch in enumerate(token) if ch.isalpha()]
    table = _LEET_UPPER_TABLE if letters and all(token[i].isupper() for i in letters) else _LEET_TABLE
    if _NUMERONYM.fullmatch(token):  # "i18n", "l10n"; in text written in leet, "w17h" is "with"
        folded = token.translate(table)
        return folded if heavy and is_word(folded) else token
    if len(letters) >= 2 and any(token[i] in _LEET for i in range(letters[0] + 1, letters[-1])):
        # Leet between letters ("k1ll", "h@ck"); then leet digits just outside belong to the word too
        # ("5h00t", "h4ck3r5").
        first, last = letters[0], letters[-1]
        inner = token[first:last + 1].translate(table)
        head, tail = token[:first], token[last + 1:]
        if all(ch in _LEET_ENDS for ch in head):
            head = head.translate(table)
        if all(ch in _LEET_ENDS for ch in tail):
            tail = tail.translate(table)
        folded = head + inner + tail
        if any(ch in "2689" for ch in token):  # digits no leet uses: a name ("cs231n", "AW3423DW")
            return token
        # Only into words ("k1ll", "n00b", "r4n50mw4r3"; not "md5sum" or "g4dn"), and into a common English
        # word where it could be a name: capitals inside ("K1LL", not "T1D" or "KRAS4B"), hex ("c0de", not
        # "0a0a"), a symbol ("h@ck", not "pkg@latest").
        name = (any(token[i].isupper() for i in letters[1:]) or _HEXISH.fullmatch(token)
                or any(ch in "@$!" for ch in token))
        return folded if is_word(folded) or not name and words_in(folded) else token
    # Leet digits only at the ends: folded where that makes a known word. Outside text written mostly in
    # leet, not where it could be a name with a number ("net7", "COC4", "ipv4": one digit at the end),
    # hex ("4c74"), a unit ("7am", "4K") or a short word of one letter ("4w3", "u53"): "4bu53", "3vil",
    # "5734l" and "Cr3473" fold.
    # In text written mostly in leet, "$" is an s here too ("b3$7", "1$"); elsewhere a "$and" or "$in" of
    # code stays.
    leet = _LEET_ENDS if heavy else _LEET_DIGITS
    if not any(ch in leet for ch in token) or not all(ch.isalpha() or ch in leet for ch in token):
        return token  # nothing to fold, or other digits: "2024", "covid19", "mp4"
    folded = token.translate(table)
    if heavy:
        return folded if is_word(folded) else token
    if (not letters or _HEXISH.fullmatch(token) or _UNIT.fullmatch(token) and len(token) < 5
            or letters[0] == 0 and len(token) - letters[-1] < 3 or len(letters) == 1 and len(token) < 4):
        return token
    return folded if len(folded) >= 3 and is_word(folded) else token


def _fold_leet(text: str) -> str:
    if not _LEET_NEAR.search(text):  # ordinary text: skip the per-word pass
        return text
    folded = 0

    def one(m: re.Match, heavy: bool) -> str:
        nonlocal folded
        if m.group(2) is None:  # an e-mail address, URL or number
            return m.group()
        out = _unleet(m.group(2), heavy)
        folded += out != m.group(2)
        return out

    out = _LEET_TOKEN.sub(lambda m: one(m, False), text)
    # Text written mostly in leet: words of leet digits are leet too ("70" for "to", "1" for "I").
    if folded >= 2 and folded * 8 >= len(text.split()):
        out = _POSSESSIVE_S.sub("s", _LEET_TOKEN.sub(lambda m: one(m, True), out))
    return out


def normalize(text: str) -> str:
    """The text as the scorer should see it (see the module docstring)."""
    text = unicodedata.normalize("NFKC", _INVISIBLE.sub("", text))
    text = _fold_lookalikes(text)
    spaced = _SPACED.sub(_join_spaced, text)
    if spaced != text:  # the text is spaced out: join two-letter words too ("t o")
        spaced = _SPACED_PAIR.sub(_join_spaced, spaced)
    text = spaced
    return _fold_leet(text)
