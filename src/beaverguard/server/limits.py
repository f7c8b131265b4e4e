"""The body-size limit: a request over it is refused with 413 and OpenAI's error body, unread.

A declared ``Content-Length`` over the limit is refused before any of the body
is read; a chunked body is counted as it arrives and refused once it passes
the limit (the route never sees it).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from beaverguard.server.errors import ApiError

__all__ = ["BodyLimit"]


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
