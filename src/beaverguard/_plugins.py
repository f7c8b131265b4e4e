"""Plugin discovery: entry points in the ``beaverguard.plugins`` group, and plugin categories."""

from __future__ import annotations

from beaverguard._categories import UNSAFE, category

__all__ = ["resolve_category", "register_category"]

_EXTRA: dict[str, str] = {}  # name -> key, for categories that plugins declare


def register_category(key: str, *aliases: str) -> None:
    """Let policies name a category a plugin scores."""
    for name in (key, *aliases):
        _EXTRA[name] = key


def resolve_category(name: str) -> str:
    """Map a policy's category name to its key; KeyError lists the valid names."""
    if name == UNSAFE:
        return UNSAFE
    if name in _EXTRA:
        return _EXTRA[name]
    try:
        return category(name).key
    except KeyError as exc:
        extra = f", {', '.join(sorted(_EXTRA))}" if _EXTRA else ""
        raise KeyError(f"{exc.args[0]}{extra}") from None
