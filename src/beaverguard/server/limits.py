"""Limits on request bodies: their size (413) and the time they take to arrive (408), with OpenAI's error body.

A declared ``Content-Length`` over the size limit is refused before any of the
body is read; a chunked body is counted as it arrives and refused once it
passes the limit (the route never sees it).

A body must arrive whole within ``timeout_s`` of its request's headers: a
client that declares a body and sends it slowly, or never, gets 408 and its
connection is closed, instead of holding it open with no answer (uvicorn's own
timeouts cover idle keep-alive connections, not a body that stops arriving).
"""

from __future__ import annotations

import asyncio
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from beaverguard.server.errors import ApiError

__all__ = ["BodyLimit", "BodyTimeout"]


class BodyTimeout:
    """ASGI middleware: a request body not received whole within ``timeout_s`` of the request is answered 408.

    Only reading the body is timed: once its last part is in, ``receive`` is the
    app's own again (a streamed answer waits on it for the client to go away).
    """

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        has_body = headers.get(b"content-length", b"0").strip() not in (b"0", b"") or b"transfer-encoding" in headers
        if not has_body:
            await self.app(scope, receive, send)
            return
        deadline = time.monotonic() + self.timeout_s
        done = False

        async def timed() -> Message:
            nonlocal done
            if done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise ApiError(408, f"the request body did not arrive whole within {self.timeout_s:g} s "
                                    "(the server's body timeout)", code="request_timeout",
                               headers={"connection": "close"}) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                done = True
            return message

        await self.app(scope, timed, send)


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> ApiError:
        return ApiError(413, f"the request body is over the server's limit of {self.max_bytes} bytes",
                        code="request_too_large")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await ApiError(400, "Content-Length is not a number", code="invalid_header").response()(
                    scope, receive, send)
                return
            if length > self.max_bytes:
                await self._too_large().response()(scope, receive, send)
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise self._too_large()  # an HTTPException: FastAPI re-raises it to the error handlers
            return message

        await self.app(scope, counted, send)
