"""beaverguard-pii: personal data in prompts and responses, scored as category ``pii``.

Finds e-mail addresses, phone numbers (``phonenumbers``), payment card numbers
(Luhn-checked) and IBANs (checksum-verified, both with ``python-stdnum``). Give
``pii`` the ``redact`` action to pass text on with each find masked; audit
records are masked whenever this plugin is loaded.

    plugins: [{name: pii, settings: {region: GB}}]
    input:  {categories: {pii: {action: redact}}}
    output: {categories: {pii: {action: redact}}}
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import phonenumbers
from stdnum import iban, luhn

from beaverguard import Category, Exchange

__all__ = ["PiiPlugin", "Find", "KINDS", "PII"]

PII = Category("pii", "pii", "Personal data",
               "E-mail addresses, phone numbers, payment card numbers or IBANs in the text.")
KINDS = ("iban", "card", "email", "phone")  # also the order of precedence where finds overlap

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")  # 13 to 19 digits
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,}\b")


def _ibans(text: str) -> Iterator[tuple[int, int]]:
    """Spans of valid IBANs. A candidate may end at any space, so the longest valid run of groups
    counts: ``DE89 3704 0044 0532 0130 00 BANK`` still yields the IBAN."""
    for m in _IBAN.finditer(text):
        ends = [i for i, ch in enumerate(m.group()) if ch == " "][::-1]
        for end in [len(m.group()), *ends]:
            if iban.is_valid(m.group()[:end]):
                yield m.start(), m.start() + end
                break


@dataclass(frozen=True)
class Find:
    kind: str
    start: int
    end: int


class PiiPlugin:
    """Scores ``pii`` 1.0 when the text holds any find, and masks finds as ``[EMAIL]``, ``[PHONE]``, ...

    ``region`` is the country whose national phone formats count (ISO 3166 code;
    numbers written with ``+`` are found whatever it is); ``kinds`` limits what is looked for.
    On the output rail the response is judged, on the input rail the prompt.
    """

    categories = (PII,)
    labels = (PII.key,)

    def __init__(self, region: str | None = "US", kinds: Sequence[str] = KINDS) -> None:
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown kinds {sorted(unknown)}; choose from {list(KINDS)}")
        if region is not None and region.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown phone region {region!r}; use an ISO 3166 code such as US or GB")
        self.region = region.upper() if region else None
        self.kinds = tuple(k for k in KINDS if k in kinds)

    def find(self, text: str) -> list[Find]:
        """Every find in ``text``, in order; where two overlap, the earlier kind in ``KINDS`` wins."""
        finds: list[Find] = []
        for kind in self.kinds:
            for start, end in self._spans(kind, text):
                if all(end <= f.start or start >= f.end for f in finds):
                    finds.append(Find(kind, start, end))
        return sorted(finds, key=lambda f: f.start)

    def _spans(self, kind: str, text: str) -> Iterable[tuple[int, int]]:
        if kind == "email":
            return (m.span() for m in _EMAIL.finditer(text))
        if kind == "card":
            return (m.span() for m in _CARD.finditer(text) if luhn.is_valid(re.sub(r"\D", "", m.group())))
        if kind == "iban":
            return _ibans(text)
        return ((m.start, m.end) for m in phonenumbers.PhoneNumberMatcher(
            text, self.region, leniency=phonenumbers.Leniency.VALID))

    def score(self, exchanges: Sequence[Exchange]) -> list[dict[str, float]]:
        return [{PII.key: 1.0 if self.find(e.prompt if e.response is None else e.response) else 0.0}
                for e in exchanges]

    def redact(self, text: str) -> str:
        """``text`` with each find replaced by its kind in capitals, e.g. ``[EMAIL]``."""
        for f in reversed(self.find(text)):
            text = f"{text[:f.start]}[{f.kind.upper()}]{text[f.end:]}"
        return text
