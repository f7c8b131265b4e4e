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
          405: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error"}


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


def _where(loc: tuple) -> str:
    return ".".join(str(part) for part in loc if part != "body")


def validation_error(exc: RequestValidationError) -> ApiError:
    """The first problem pydantic found, by place and reason (the value itself is left out)."""
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    if first.get("type") == "json_invalid":
        return ApiError(400, f"the body is not valid JSON ({first.get('ctx', {}).get('error', 'malformed')})",
                        code="invalid_json")
    where = _where(tuple(first.get("loc", ())))
    if not where and first.get("type") in ("model_attributes_type", "dict_type", "missing"):
        return ApiError(400, "the body must be a JSON object (sent as Content-Type: application/json)",
                        code="invalid_json")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    message = f"{where}: {first.get('msg', 'invalid')}{more}" if where else f"{first.get('msg', 'invalid')}{more}"
    return ApiError(400, message, code="invalid_value", param=where or None)


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
