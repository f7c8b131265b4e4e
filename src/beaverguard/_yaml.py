"""Read a policy from YAML, and point every validation error at its file, line and key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from beaverguard._exceptions import PolicyError
from beaverguard._policy import Policy

__all__ = ["load_policy", "parse_policy"]


def _positions(node: Any, path: tuple = (), out: dict | None = None) -> dict[tuple, tuple[int, int]]:
    """Map each key path of a composed YAML node tree to its (line, column), 1-based."""
    import yaml

    out = {} if out is None else out
    out.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = (*path, key.value)
            out[sub] = (key.start_mark.line + 1, key.start_mark.column + 1)
            _positions(value, sub, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _positions(item, (*path, i), out)
    return out


def parse_policy(text: str, source: str = "<string>") -> Policy:
    """Validate YAML text into a :class:`Policy`; raise :class:`PolicyError` naming each bad key."""
    try:
        import yaml
    except ImportError as exc:  # pragma: no cover - PyYAML is a dependency
        raise PolicyError("reading a policy file needs PyYAML: pip install pyyaml") from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise PolicyError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(data, dict):
        raise PolicyError(f"{source}:1:1: a policy must be a mapping of keys, not {type(data).__name__}")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        positions = _positions(node) if node is not None else {}
        lines = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if p != "[key]")
            known = max((p for p in positions if loc[: len(p)] == p), key=len, default=())
            line, col = positions.get(known, (1, 1))
            key = ".".join(str(p) for p in loc) or "(top level)"
            lines.append(f"{source}:{line}:{col}: {key}: {err['msg']}")
        raise PolicyError("invalid policy\n  " + "\n  ".join(lines)) from None


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read policy file ({exc.strerror})") from exc
    policy = parse_policy(text, str(path))
    if policy.model is not None and not policy.model.is_absolute():  # relative to the policy file
        policy = policy.model_copy(update={"model": (path.parent / policy.model).resolve()})
    if policy.shadow is not None and not policy.shadow.is_absolute():
        policy = policy.model_copy(update={"shadow": (path.parent / policy.shadow).resolve()})
    if policy.audit.path is not None and not policy.audit.path.is_absolute():
        policy = policy.model_copy(update={"audit": policy.audit.model_copy(
            update={"path": (path.parent / policy.audit.path).resolve()})})
    return policy
