"""The upstream LLM: one pooled async HTTP client, with timeouts, speaking OpenAI's wire format.

Failures are sorted into what the server answers for them: the upstream cannot
be reached or answers 5xx or nonsense (502), or it is too slow (504). Its 4xx
answers are not failures: they are the upstream's own answer to the client
(an unknown model, a bad option) and go back as they came.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

__all__ = ["Upstream", "UpstreamFailure", "events"]


class UpstreamFailure(Exception):
    """The upstream could not give an answer: ``status`` is what the server answers instead (502 or 504)."""

    def __init__(self, status: int, kind: str, message: str, response: httpx.Response | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind            # "unreachable" | "timeout" | "status" | "invalid"
        self.message = message
        self.response = response    # the upstream's own 5xx answer, which fail-open passes through


class Upstream:
    """An OpenAI-compatible ``/chat/completions`` behind ``base_url``."""

    def __init__(self, base_url: str, *, api_key: str | None = None, passthrough: bool = False,
                 timeout_s: float = 60.0, connect_timeout_s: float = 5.0, max_connections: int = 256) -> None:
        self.api_key = api_key
        self.passthrough = passthrough
        self.client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    def headers(self, client_authorization: str | None) -> dict[str, str]:
        """The upstream's credentials: the configured key, or the client's own header passed through."""
        if self.passthrough:
            return {"authorization": client_authorization} if client_authorization else {}
        return {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    async def complete(self, payload: Mapping[str, Any], client_authorization: str | None) -> httpx.Response:
        """POST a (non-streamed) completion request; a 5xx is an :class:`UpstreamFailure`."""
        request = self.client.build_request("POST", "chat/completions", json=payload,
                                            headers=self.headers(client_authorization))
        response = await self._send(request, stream=False)
        return response

    async def open_stream(self, payload: Mapping[str, Any], client_authorization: str | None) -> httpx.Response:
        """POST a streamed request and return once the headers are in (the body is read by :func:`events`).

        A 4xx answer comes back read and closed; the caller passes it on.
        """
        request = self.client.build_request("POST", "chat/completions", json=payload,
                                            headers=self.headers(client_authorization))
        response = await self._send(request, stream=True)
        if response.status_code >= 400:
            await response.aread()
            await response.aclose()
        elif "text/event-stream" not in response.headers.get("content-type", ""):
            await response.aclose()
            raise UpstreamFailure(502, "invalid", "did not stream (no text/event-stream answer to stream: true)")
        return response

    async def _send(self, request: httpx.Request, *, stream: bool) -> httpx.Response:
        try:
            response = await self.client.send(request, stream=stream)
        except httpx.TimeoutException:
            raise UpstreamFailure(504, "timeout", "did not answer in time") from None
        except httpx.HTTPError as exc:
            raise UpstreamFailure(502, "unreachable", f"could not be reached ({type(exc).__name__})") from None
        if response.status_code >= 500:
            if stream:
                await response.aread()
                await response.aclose()
            raise UpstreamFailure(502, "status", f"answered {response.status_code}", response)
        return response

    async def aclose(self) -> None:
        await self.client.aclose()


async def events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The JSON events of an OpenAI server-sent-event stream, up to ``data: [DONE]``; closes the response.

    An ``error`` event, a line that is not JSON, or the connection failing
    midway is an :class:`UpstreamFailure`.
    """
    try:
        data: list[str] = []
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
            elif not line and data:  # a blank line ends an event; comments and other fields are skipped
                event, data = _event(data), []
                if event is None:
                    return
                yield event
        if data:  # the last event, without its blank line
            event = _event(data)
            if event is not None:
                yield event
    except httpx.TimeoutException:
        raise UpstreamFailure(504, "timeout", "stopped sending in the middle of its stream") from None
    except httpx.HTTPError as exc:
        raise UpstreamFailure(502, "unreachable", f"broke off its stream ({type(exc).__name__})") from None
    finally:
        await response.aclose()


def _event(data: list[str]) -> dict[str, Any] | None:
    """One event's JSON object; None for ``[DONE]``."""
    text = "\n".join(data)
    if text.strip() == "[DONE]":
        return None
    try:
        event = json.loads(text)
    except ValueError:
        raise UpstreamFailure(502, "invalid", "sent an event that is not JSON") from None
    if not isinstance(event, dict):
        raise UpstreamFailure(502, "invalid", "sent an event that is not a JSON object")
    if event.get("error"):
        raise UpstreamFailure(502, "status", "sent an error event in its stream")
    return event
