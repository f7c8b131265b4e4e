r"""beaverguard-blocklist: exact terms and regular expressions mapped to categories.

A rule scores its category 1.0 when its pattern occurs (a term as a whole word
or phrase, case-insensitive unless ``case_sensitive``; a regular expression
anywhere). Categories are BeaverTails ones (by alias or key) or the plugin's
own, declared under ``categories``; the policy's rules for them apply as for
any category. On the output rail the response is judged, on the input rail the prompt.

    plugins:
      - name: blocklist
        settings:
          categories: [{key: competitors, name: Competitors, description: Rival products by name.}]
          rules:
            - {pattern: "acme corp", category: competitors}
            - {pattern: '\bnerve agents?\b', regex: true, category: violence}
    input: {categories: {competitors: {action: log}}}
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from beaverguard import CATEGORIES, Category, Exchange

__all__ = ["BlocklistPlugin", "BlockRule", "OwnCategory"]


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OwnCategory(_Settings):
    key: str
    alias: str | None = None
    name: str
    description: str = ""

    def category(self) -> Category:
        return Category(self.key, self.alias or self.key, self.name, self.description)


class BlockRule(_Settings):
    pattern: str = Field(min_length=1)
    category: str
    regex: bool = False
    case_sensitive: bool = False

    def compile(self) -> re.Pattern:
        flags = 0 if self.case_sensitive else re.IGNORECASE
        source = self.pattern if self.regex else rf"(?<!\w){re.escape(self.pattern)}(?!\w)"
        try:
            return re.compile(source, flags)
        except re.error as exc:
            raise ValueError(f"pattern {self.pattern!r} is not a valid regular expression ({exc})") from None


class BlocklistPlugin:
    """Scores each rule's category 1.0 when its pattern occurs in the judged text."""

    def __init__(self, rules: Sequence[dict], categories: Sequence[dict] = ()) -> None:
        own = [OwnCategory.model_validate(c).category() for c in categories]
        self.categories = tuple(own)
        names = {c.alias: c.key for c in CATEGORIES} | {c.key: c.key for c in CATEGORIES}
        names |= {n: c.key for c in own for n in (c.key, c.alias)}
        self.rules: list[tuple[re.Pattern, str]] = []
        for raw in rules:
            rule = BlockRule.model_validate(raw)
            if rule.category not in names:
                raise ValueError(f"rule {rule.pattern!r}: unknown category {rule.category!r}; use a BeaverTails "
                                 f"alias ({', '.join(c.alias for c in CATEGORIES)}) or declare it under categories")
            self.rules.append((rule.compile(), names[rule.category]))
        if not self.rules:
            raise ValueError("no rules: give rules: [{pattern: ..., category: ...}, ...]")
        self.labels = tuple(dict.fromkeys(key for _, key in self.rules))

    def score(self, exchanges: Sequence[Exchange]) -> list[dict[str, float]]:
        out = []
        for e in exchanges:
            text = e.prompt if e.response is None else e.response
            scores = dict.fromkeys(self.labels, 0.0)
            for pattern, key in self.rules:
                if scores[key] == 0.0 and pattern.search(text):
                    scores[key] = 1.0
            out.append(scores)
        return out
