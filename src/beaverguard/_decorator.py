"""``@guard.protect`` and ``@guarded(...)``: guard a chat handler by decorating it.

The prompt is found by parameter name (``prompt_arg``, else one of the usual
names), else the first string argument, else the first list of messages; names
and values inside ``**kwargs`` and ``*args`` count too. Sync
and async functions are checked on both rails; sync and async generators
stream through the incremental output rail.
"""

from __future__ import annotations

import functools
import inspect
import uuid
from collections.abc import Callable
from contextlib import aclosing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from beaverguard._messages import prompt_of
from beaverguard._streaming import aguard_stream, guard_stream

if TYPE_CHECKING:
    from beaverguard._guard import Guard
    from beaverguard._policy import Policy

__all__ = ["protect", "guarded"]

PROMPT_NAMES = ("prompt", "message", "messages", "query", "question", "text", "input", "user_input")


#: Where the prompt sits in a call: a parameter name, or (name, key) inside ``**kwargs`` / ``*args``.
_Path = tuple[str] | tuple[str, str | int]


def _arguments(bound: inspect.BoundArguments) -> list[tuple[_Path, Any]]:
    """Every argument of a call, with what ``*args`` and ``**kwargs`` hold spread out."""
    out: list[tuple[_Path, Any]] = []
    for name, value in bound.arguments.items():
        kind = bound.signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            out += [((name, key), v) for key, v in value.items()]
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            out += [((name, i), v) for i, v in enumerate(value)]
        else:
            out.append(((name,), value))
    return out


def _locate(bound: inspect.BoundArguments, prompt_arg: str | None) -> tuple[_Path, Any]:
    """Where the prompt is among a call's arguments, and its value."""
    arguments = _arguments(bound)
    names = {path[-1]: (path, value) for path, value in arguments}
    if prompt_arg is not None:
        if prompt_arg not in names:
            raise TypeError(f"guarded handler called without its prompt argument {prompt_arg!r}")
        return names[prompt_arg]
    for name in PROMPT_NAMES:
        if name in names:
            return names[name]
    for path, value in arguments:
        if isinstance(value, str):
            return path, value
    for path, value in arguments:
        if isinstance(value, list | tuple) and value:
            try:
                prompt_of(value)
                return path, value
            except (TypeError, ValueError):
                continue
    raise TypeError("cannot find the prompt among the handler's arguments; pass prompt_arg= to the decorator")


def _replace(bound: inspect.BoundArguments, path: _Path, value: Any) -> tuple[tuple, dict]:
    """The call's arguments with the prompt at ``path`` replaced by ``value``."""
    name = path[0]
    if len(path) == 1:
        bound.arguments[name] = value
    elif isinstance(path[1], int):
        held = list(bound.arguments[name])
        held[path[1]] = value
        bound.arguments[name] = tuple(held)
    else:
        bound.arguments[name] = {**bound.arguments[name], path[1]: value}
    return bound.args, bound.kwargs


def _kind(func: Callable) -> Callable:
    """What says whether a handler is async or a generator: itself (a function, method or
    ``functools.partial``), else a handler object's ``__call__``."""
    for candidate in (func, getattr(func, "__call__", func)):
        if (inspect.iscoroutinefunction(candidate) or inspect.isasyncgenfunction(candidate)
                or inspect.isgeneratorfunction(candidate)):
            return candidate
    return func


def protect(guard: Guard, func: Callable | None = None, *, prompt_arg: str | None = None) -> Any:
    """Guard ``func``; used as ``@guard.protect`` or ``@guard.protect(prompt_arg="q")``."""
    if func is None:
        return functools.partial(protect, guard, prompt_arg=prompt_arg)
    sig = inspect.signature(func)
    kind = _kind(func)

    def split(args: tuple, kwargs: dict) -> tuple[inspect.BoundArguments, _Path, Any]:
        bound = sig.bind(*args, **kwargs)
        return bound, *_locate(bound, prompt_arg)

    if inspect.isasyncgenfunction(kind):
        @functools.wraps(func)
        async def agen_wrapper(*args: Any, **kwargs: Any) -> Any:
            bound, where, prompt = split(args, kwargs)
            rid = uuid.uuid4().hex
            verdict, sent = await guard.admit_input(prompt, request_id=rid)
            if verdict.blocked:
                yield guard.blocked_reply(verdict)
                return
            a, k = _replace(bound, where, sent)
            # aclosing: a consumer that stops early closes the handler's stream and writes the record now
            async with aclosing(aguard_stream(guard, prompt, func(*a, **k), rid)) as chunks:
                async for chunk in chunks:
                    yield chunk
        return agen_wrapper

    if inspect.isgeneratorfunction(kind):
        @functools.wraps(func)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
            bound, where, prompt = split(args, kwargs)
            rid = uuid.uuid4().hex
            verdict, sent = guard.admit_input_sync(prompt, request_id=rid)
            if verdict.blocked:
                yield guard.blocked_reply(verdict)
                return
            a, k = _replace(bound, where, sent)
            yield from guard_stream(guard, prompt, func(*a, **k), rid)
        return gen_wrapper

    if inspect.iscoroutinefunction(kind):
        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            bound, where, prompt = split(args, kwargs)

            async def call(value: Any) -> Any:
                a, k = _replace(bound, where, value)
                return await func(*a, **k)

            return await guard.run(call, prompt)
        return async_wrapper

    @functools.wraps(func)
    def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
        bound, where, prompt = split(args, kwargs)

        def call(value: Any) -> Any:
            a, k = _replace(bound, where, value)
            return func(*a, **k)

        return guard.run_sync(call, prompt)
    return sync_wrapper


def guarded(func: Callable | None = None, *, policy: Policy | str | Path | None = None,
            model: str | Path | None = None, prompt_arg: str | None = None, guard: Guard | None = None) -> Any:
    """Decorator that builds a :class:`Guard` from ``policy`` (or uses ``guard``) and protects a handler."""
    from beaverguard._guard import Guard

    g = guard or Guard(policy, model=model)
    if func is None:
        return functools.partial(protect, g, prompt_arg=prompt_arg)
    return protect(g, func, prompt_arg=prompt_arg)
