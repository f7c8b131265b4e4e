"""The policy reference, rendered from the pydantic schema so the README cannot drift from it.

One table per model; its heading lists the key paths where the model sits
(``input``, ``output``), each row a key with its type, default and description.
``beaverguard policy docs`` prints it; a test compares it with the README.
"""

from __future__ import annotations

import enum
import json
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from beaverguard._policy import CategoryName, Policy

__all__ = ["policy_reference", "models"]

_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path", Any: "any"}


def models(root: type[BaseModel] = Policy) -> dict[type[BaseModel], list[str]]:
    """Every model in the schema, in reading order, with the key paths where it sits."""
    found: dict[type[BaseModel], list[str]] = {root: []}

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            for sub, suffix in _nested(field.annotation):
                path = f"{prefix}{name}{suffix}"
                found.setdefault(sub, []).append(path)
                walk(sub, path + ".")

    walk(root, "")
    return found


def _nested(tp: Any) -> list[tuple[type[BaseModel], str]]:
    """Models inside a type, each with the path suffix that reaches it (``[]``, ``.<category>``)."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [(tp, "")]
    origin, args = get_origin(tp), get_args(tp)
    if origin is list:
        return [(m, "[]" + s) for m, s in _nested(args[0])]
    if origin is dict:
        return [(m, f".<{_type(args[0]).strip('`')}>" + s) for m, s in _nested(args[1])]
    if origin is Annotated:
        return _nested(args[0])
    if origin in (Union, types.UnionType):
        return [n for a in args for n in _nested(a)]
    return []


def _type(tp: Any) -> str:
    if tp is CategoryName:
        return "category"
    if tp in _SCALARS:
        return _SCALARS[tp]
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return " \\| ".join(f"`{m.value}`" for m in tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return f"[{_title(tp)}](#{_anchor(tp)})"
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        return " \\| ".join(f"`{json.dumps(a)}`" for a in args)
    if origin is Annotated:
        return _type(args[0])
    if origin in (Union, types.UnionType):
        parts = [_type(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or `null`" if type(None) in args else "")
    if origin is list:
        return f"list of {_type(args[0])}"
    if origin is dict:
        return f"map of {_type(args[0])} to {_type(args[1])}"
    raise TypeError(f"no rendering for type {tp!r}; extend _policy_docs._type")


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "see its table"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, Path):
        value = str(value)
    return f"`{json.dumps(value)}`"


def _title(model: type[BaseModel]) -> str:
    return model.__name__


def _anchor(model: type[BaseModel]) -> str:
    return model.__name__.lower()


def _cell(text: str) -> str:
    """One table cell: one line, pipes escaped, reST ``code`` as Markdown `code`."""
    return " ".join(text.split()).replace("|", "\\|").replace("``", "`")


def policy_reference() -> str:
    """The policy reference as Markdown."""
    out = [("Generated from the schema by `beaverguard policy docs`; edit the schema "
            "(`src/beaverguard/_policy.py`), not this text."), ""]
    for model, paths in models().items():
        where = ", ".join(f"`{p}`" for p in paths) if paths else "the top level"
        doc = (model.__doc__ or "").strip().split("\n\n")[0]
        out += [f"### {_title(model)}", "", f"{_cell(doc)} Keys at {where}:", "",
                "| Key | Type | Default | Description |", "| --- | --- | --- | --- |"]
        for name, field in model.model_fields.items():
            out.append(f"| `{name}` | {_type(field.annotation)} | {_default(field)} | "
                       f"{_cell(field.description or '')} |")
        out.append("")
    return "\n".join(out)
