"""Errors in OpenAI's shape, so that OpenAI's clients raise their usual exceptions.

Every 4xx and 5xx the server sends has this body (the one OpenAI's API sends)::

    {"error": {"message": str, "type": str, "param": str | null, "code": str | null}}

Messages name what was wrong and where (``messages.0.content``), never the
user's text: validation errors are rebuilt from pydantic's location and message,
without the rejected value.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ApiError", "CatchAll", "error_body", "install_handlers"]

logger = logging.getLogger("beaverguard.server")

#: The error ``type`` of a status when the raiser names none (OpenAI's own names where it has them).
_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
          405: "invalid_request_error", 408: "invalid_request_error", 413: "invalid_request_error",
          429: "rate_limit_error"}


class ApiError(HTTPException):
    """An error answer: status, message, and OpenAI's ``type``, ``code`` and ``param``."""

    def __init__(self, status: int, message: str, *, type: str | None = None, code: str | None = None,
                 param: str | None = None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status, message, dict(headers) if headers else None)
        self.message = message
        self.type = type or _TYPES.get(status, "server_error")
        self.code = code
        self.param = param

    def response(self) -> JSONResponse:
        return JSONResponse(error_body(self.message, self.type, self.code, self.param),
                            status_code=self.status_code, headers=self.headers)


def error_body(message: str, type: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


#: Error types that say only "not this type": in a union, each branch the value is not reports one.
_TYPE_ERRORS = {"model_attributes_type", "model_type", "dict_type", "list_type", "string_type", "int_type",
                "int_parsing", "bool_type", "bool_parsing", "float_type", "none_required", "is_instance_of",
                "union_tag_invalid", "tuple_type"}


def _path(loc: tuple, body: Any) -> str:
    """The JSON path of an error's location: its keys and indexes in the body, without pydantic's union tags.

    Pydantic puts the union branch it tried in the location (``input.list[str]``,
    ``messages.0.content.str``); those are not in the body, so they are left out
    by walking the body along the location.
    """
    if loc[:1] == ("body",):
        loc = loc[1:]
    parts, value = [], body
    for part in loc:
        if isinstance(value, dict) and isinstance(part, str) and part in value:
            value = value[part]
        elif isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value):
            value = value[part]
        elif isinstance(part, str) and _is_tag(part):
            continue
        else:  # a missing field, or one not in the schema: still its name
            value = None
        parts.append(str(part))
    return ".".join(parts)


def _is_tag(part: str) -> bool:
    """A pydantic union tag (``str``, ``list[str]``, ``ModerationPart``), not a key of the body."""
    return "[" in part or part in ("str", "int", "float", "bool", "none") or part[:1].isupper()


def _first(errors: list[dict[str, Any]], body: Any) -> tuple[dict[str, Any], str]:
    """The error that says most: one other than "not this type" where there is one, the deepest first."""
    located = [(e, _path(tuple(e.get("loc", ())), body)) for e in errors]
    telling = [pair for pair in located if pair[0].get("type") not in _TYPE_ERRORS] or located
    return max(telling, key=lambda pair: len(pair[1].split(".")) if pair[1] else 0)


def validation_error(exc: RequestValidationError) -> ApiError:
    """The first problem pydantic found, by place and reason (the value itself is left out)."""
    errors = list(exc.errors())
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    if first.get("type") == "json_invalid":
        return ApiError(400, f"the body is not valid JSON ({first.get('ctx', {}).get('error', 'malformed')})",
                        code="invalid_json")
    body = getattr(exc, "body", None)
    if errors:
        first, where = _first(errors, body)
    else:
        where = ""
    kind, ctx = first.get("type"), first.get("ctx") or {}
    if kind == "invalid_text":  # a lone surrogate, found before validation: the path is in the context
        where = str(ctx.get("path", ""))
        return ApiError(400, f"{where}: {first.get('msg')}", code="invalid_text", param=where or None)
    if not where and kind in ("model_attributes_type", "dict_type", "missing", "model_type"):
        return ApiError(400, "the body must be a JSON object (sent as Content-Type: application/json)",
                        code="invalid_json")
    message = first.get("msg", "invalid")
    if kind == "too_long" and "max_length" in ctx:
        limit = " in one request (the server's limit)" if "." not in where else ""
        message = f"at most {ctx['max_length']} items{limit}, not {ctx.get('actual_length')}"
    elif kind == "too_short" and "min_length" in ctx:
        items = "item" if ctx["min_length"] == 1 else "items"
        message = f"at least {ctx['min_length']} {items}, not {ctx.get('actual_length')}"
    # other places; not the places above this one (there, a union's other branches did not fit either)
    others = {p for p in (_path(tuple(e.get("loc", ())), body) for e in errors)
              if p != where and not where.startswith(f"{p}.") and not (p == "" and where)}
    more = f" (and {len(others)} more)" if others else ""
    return ApiError(400, f"{where}: {message}{more}" if where else f"{message}{more}", code="invalid_value",
                    param=where or None)


def install_handlers(app: FastAPI) -> None:
    """Answer every error, ours, FastAPI's and Starlette's, with OpenAI's error body."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error(exc).response()

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:  # 404, 405, 413 from the framework
        return ApiError(exc.status_code, str(exc.detail), headers=exc.headers).response()



class CatchAll:
    """ASGI middleware: an unexpected exception becomes a 500 in OpenAI's shape, logged without its message.

    It sits inside Starlette's own error middleware, which would log the
    exception's message (it may hold the user's text) and re-raise it to the server.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:  # noqa: BLE001 - the last place to turn a bug into an answer
            # Where it failed goes to the log, but not the exception's message: it may hold the user's text.
            logger.error("beaverguard server: unexpected %s on %s %s\n%s", type(exc).__name__, scope.get("method"),
                         scope.get("path"), "".join(traceback.format_tb(exc.__traceback__)))
            if not started:
                await ApiError(500, "internal error in the guard server (logged)").response()(scope, receive, send)
