"""Plugins: classes found by entry point in the ``beaverguard.plugins`` group.

A policy names them (``plugins: [{name: pii, settings: {...}}]``). Validating
the policy builds each plugin with its settings as keyword arguments, so bad
settings are reported with the policy's other errors, and the categories a
plugin declares are registered before the rails that name them are validated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import entry_points
from typing import Any, Protocol

from beaverguard._categories import CATEGORY_KEYS, UNSAFE, Category, category
from beaverguard._exceptions import PolicyError
from beaverguard._types import Action, Exchange, Rail

__all__ = ["GROUP", "Plugin", "load_plugin", "check_provided", "with_plugins", "redactor", "register_category",
           "resolve_category", "describe"]

GROUP = "beaverguard.plugins"

_EXTRA: dict[str, Category] = {}  # key or alias -> category, for categories that plugins declare


class Plugin(Protocol):
    """What a plugin may provide. Every part is optional; the guard uses the parts it finds.

    * ``categories``: the :class:`Category` objects it scores that BeaverTails lacks,
      so policies can name them (by key or alias).
    * ``labels`` and ``score(exchanges)``: a :class:`~beaverguard.Scorer`. Its scores join
      the model's (the higher wins) before the policy decides, under the same rules.
    * ``default_thresholds(rail)``: thresholds for its labels where the policy sets none.
    * ``redact(text)``: masks what it finds; it is the ``redact`` action, and audit
      records pass through it too.
    * ``sink(record)``: receives each audit record (a dict).

    A plugin is built with its policy settings as keyword arguments; raise
    ValueError or TypeError on bad ones, and the policy error will name the plugin.
    """


def register_category(cat: Category) -> None:
    """Let policies name a category a plugin scores, by key or alias."""
    for name in (cat.key, cat.alias):
        if name == UNSAFE or _builtin(name):
            raise ValueError(f"category {name!r} is already defined by beaverguard; choose another key or alias")
        _EXTRA[name] = cat


def _builtin(name: str) -> bool:
    try:
        category(name)
    except KeyError:
        return False
    return True


def describe(name: str) -> Category:
    """The category a BeaverTails or plugin key or alias names; KeyError lists the valid names."""
    if name in _EXTRA:
        return _EXTRA[name]
    try:
        return category(name)
    except KeyError as exc:
        extra = f", {', '.join(sorted(_EXTRA))}" if _EXTRA else ""
        raise KeyError(f"{exc.args[0]}{extra}") from None


def resolve_category(name: str) -> str:
    """Map a policy's category name to its key; KeyError lists the valid names."""
    return UNSAFE if name == UNSAFE else describe(name).key


def load_plugin(name: str, settings: Mapping[str, Any]) -> Any:
    """Build the plugin registered under ``name`` and register its categories; PolicyError says what failed."""
    found = entry_points(group=GROUP, name=name)
    if not found:
        installed = sorted(ep.name for ep in entry_points(group=GROUP))
        raise PolicyError(f"plugin {name!r}: no entry point of that name in group {GROUP!r} "
                          f"(installed: {', '.join(installed) or 'none'}); pip install the plugin's package")
    ep = next(iter(found))
    try:
        cls = ep.load()
    except Exception as exc:
        raise PolicyError(f"plugin {name!r}: cannot import {ep.value} ({type(exc).__name__}: {exc})") from exc
    try:
        plugin = cls(**settings)
    except Exception as exc:
        raise PolicyError(f"plugin {name!r}: bad settings {dict(settings)!r} ({type(exc).__name__}: {exc})") from exc
    try:
        for cat in getattr(plugin, "categories", ()):
            register_category(cat)
    except ValueError as exc:
        raise PolicyError(f"plugin {name!r}: {exc}") from None
    return plugin


def check_provided(policy: Any) -> None:
    """Raise ValueError where a policy's rails need what none of its own plugins provides.

    Registered categories outlive the policy that loaded them, so this keeps a
    policy valid or invalid whatever was loaded before it in the process.
    """
    plugins = [spec.plugin for spec in policy.plugins]
    own = {c.key for p in plugins for c in getattr(p, "categories", ())}
    for name in ("input", "output"):
        rail = policy.rail(name)
        for key in rail.categories:
            if key not in CATEGORY_KEYS and key not in own:
                raise ValueError(f"{name}.categories.{key}: no plugin of this policy declares category {key!r}; "
                                 "add the plugin that does under plugins")
        actions = [r.action for r in (rail.default, rail.unsafe, *rail.categories.values())]
        if Action.REDACT in actions and redactor(plugins) is None:
            raise ValueError(f"{name}: action 'redact' needs a plugin that redacts "
                             "(e.g. beaverguard-pii: plugins: [{name: pii}])")


class _WithPlugins:
    """The model's scorer plus the plugins' scorers, as one scorer.

    The batcher runs it, so checks, streams and ``score_many`` all see plugin
    scores, and plugin scoring never runs on the event loop.
    """

    def __init__(self, model: Any, scorers: list[Any]) -> None:
        self.model, self.scorers = model, scorers
        self.labels = tuple(dict.fromkeys([*model.labels, *(label for s in scorers for label in s.labels)]))
        self.on_gpu = getattr(model, "on_gpu", False)
        self.batch_invariant = getattr(model, "batch_invariant", True)
        self.remote = getattr(model, "remote", False)
        if all(callable(getattr(model, m, None)) for m in ("encode", "run_windows", "finish")):
            # the batcher runs the model in steps (spreading a text's windows); plugins join at the last one
            self.encode, self.run_windows, self.finish = model.encode, model.run_windows, self._finish
            self.wide, self.estimate = getattr(model, "wide", None), getattr(model, "estimate", None)

    def score(self, exchanges: Sequence[Exchange]) -> list[dict[str, float]]:
        return self._merge(exchanges, [dict(s) for s in self.model.score(exchanges)])

    def _finish(self, exchange: Exchange, probs: Any) -> dict[str, float]:
        return self._merge([exchange], [self.model.finish(exchange, probs)])[0]

    def _merge(self, exchanges: Sequence[Exchange], out: list[dict[str, float]]) -> list[dict[str, float]]:
        for scorer in self.scorers:
            for merged, extra in zip(out, scorer.score(exchanges), strict=True):
                for key, value in extra.items():
                    merged[key] = max(value, merged.get(key, 0.0))
        return out

    def default_thresholds(self, rail: Rail) -> Mapping[str, float]:
        out: dict[str, float] = {}
        for part in (*self.scorers, self.model):  # the model's calibrated thresholds win on its own labels
            thresholds = getattr(part, "default_thresholds", None)
            if thresholds:
                out.update(thresholds(rail))
        return out


def with_plugins(scorer: Any, plugins: Sequence[Any]) -> Any:
    """``scorer``, joined by the plugins that score."""
    scorers = [p for p in plugins if callable(getattr(p, "score", None)) and hasattr(p, "labels")]
    return _WithPlugins(scorer, scorers) if scorers else scorer


def redactor(plugins: Sequence[Any]) -> Callable[[str], str] | None:
    """One function applying every plugin's ``redact`` in turn, or None when none redacts."""
    steps = [p.redact for p in plugins if callable(getattr(p, "redact", None))]
    if not steps:
        return None

    def redact(text: str) -> str:
        for step in steps:
            text = step(text)
        return text

    return redact
