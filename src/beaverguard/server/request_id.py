"""``x-request-id`` on every answer: one id per request, made before anything else runs.

The id is the ``request_id`` of the request's audit records (a chat completion's
two rails, each input of a moderation), so an answer can be found in the audit
log; errors and refusals at the door carry one too. The client's own
``x-request-id`` is not taken: ids are the server's, unique per request.
"""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["RequestId", "request_id"]

_KEY = "beaverguard_request_id"


class RequestId:
    """ASGI middleware: give each HTTP request an id, and send it back as ``x-request-id``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = uuid.uuid4().hex
        scope.setdefault("state", {})[_KEY] = rid
        header = rid.encode()

        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", header)]}
            await send(message)

        await self.app(scope, receive, tagged)


def request_id(request: Request) -> str:
    """The id the middleware gave this request (a fresh one where it did not run: an app without it)."""
    return request.scope.get("state", {}).get(_KEY) or uuid.uuid4().hex
