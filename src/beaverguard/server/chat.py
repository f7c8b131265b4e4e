"""``POST /v1/chat/completions``: input rail, upstream LLM, output rail, in OpenAI's schema.

The messages are judged as they came (the core reads OpenAI's dicts, content
parts and tool calls). A blocked request never reaches the upstream: it gets a
completion holding the policy's message with ``finish_reason: "content_filter"``
(or an error, where the policy says raise). A rewritten or redacted prompt goes
upstream rewritten. Each answer is judged with the conversation that asked for
it, tool-call arguments included, and an unsafe one is replaced.

A streamed answer goes through the core's streaming rail: the upstream's
chunks flow on as the policy's ``streaming.mode`` allows, and a stream cut at
an unsafe chunk ends with one chunk holding the policy's message and
``finish_reason: "content_filter"``, then ``data: [DONE]``, as OpenAI's clients
expect. The upstream's stream is closed at the cut. A chunk of the upstream
that carries a ``finish_reason`` (and any after it, such as usage) is held back
until the output rail has decided, so that under ``streaming.mode:
stream_first`` too the client's first finish reason is ``content_filter`` where
the stream was cut, never the upstream's ``stop``.

Capacity: the input rail is admitted together with a reservation for the
answer's output check (``admission``), held while the upstream works; the
answer then waits for room rather than be refused, so a request the upstream
answered is always judged and never gets a 429 after the LLM call.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import Any

from starlette.background import BackgroundTask
from starlette.responses import JSONResponse, Response, StreamingResponse

from beaverguard._exceptions import GuardBlocked
from beaverguard._messages import prompt_of, tool_results_of
from beaverguard._streaming import aguard_stream
from beaverguard._types import Action, Decision
from beaverguard.server.errors import ApiError, error_body
from beaverguard.server.guards import ServerGuard, refuse_if_overloaded
from beaverguard.server.metrics import Metrics
from beaverguard.server.openai_schema import ChatCompletionRequest
from beaverguard.server.upstream import Upstream, UpstreamFailure, events

__all__ = ["chat_completions"]

_REPLACED = (Action.BLOCK, Action.REWRITE)


async def chat_completions(guard: ServerGuard, upstream: Upstream, metrics: Metrics,
                           body: ChatCompletionRequest, client_authorization: str | None,
                           request_id: str) -> Response:
    payload = body.model_dump(exclude_unset=True)  # what the client sent, every unknown field kept
    messages = payload["messages"]
    stream = bool(payload.get("stream"))  # n > 1 with stream: true is refused by the schema (400)
    # both rails sized before anything runs: a prompt too long for timeout_s is a 413, the upstream never called
    planned = guard.plan_check("input", messages, param="messages")
    reserve = guard.reservation(messages, payload)
    verdict = await guard.checked(planned, request_id=request_id, reserve=reserve)
    refuse_if_overloaded(guard, verdict, metrics, "/v1/chat/completions")
    if verdict.blocked:
        text = _blocked_text(guard, verdict, "messages")
        if stream:
            return _sse([_chunk(request_id, body.model, text, role=True, finish="content_filter")], request_id)
        return JSONResponse(_completion(request_id, body.model, text), headers={"x-request-id": request_id})
    payload["messages"] = await _tool_results(guard, metrics, guard.apply_input(messages, verdict), request_id,
                                              reserve)
    call = _Call(guard, upstream, metrics, messages, request_id, client_authorization, reserve)
    return await (call.stream(payload) if stream else call.complete(payload))


async def _tool_results(guard: ServerGuard, metrics: Metrics, messages: list, request_id: str,
                        reserve: float) -> list:
    """``messages`` with each tool result after the last user message judged on the ``tool_result`` channel.

    An agent hands its tools' output back to the model: a result the policy blocks
    (by default, one carrying an injection) reaches the upstream as the policy's
    message, one it rewrites or redacts as its new text.
    """
    results = tool_results_of(messages)
    planned = [guard.plan_check("input", text, param=f"messages[{i}]") for i, text in results]
    decisions = await asyncio.gather(*(guard.checked(p, request_id=request_id, reserve=reserve,
                                                     channel="tool_result") for p in planned))
    for decision in decisions:
        refuse_if_overloaded(guard, decision, metrics, "/v1/chat/completions")
    try:
        return guard.apply_tool_results(messages, results, list(decisions))
    except GuardBlocked as exc:  # raise_on_block: a 400 naming the tool message
        index = next(i for (i, _), d in zip(results, decisions) if d is exc.decision)
        raise _blocked_error(exc, f"messages[{index}]") from None


def _blocked_text(guard: ServerGuard, decision: Decision, param: str | None) -> str:
    """The policy's message, or a 400 error where the policy says raise."""
    try:
        return guard.blocked_reply(decision)
    except GuardBlocked as exc:
        raise _blocked_error(exc, param) from None


def _blocked_error(exc: GuardBlocked, param: str | None) -> ApiError:
    return ApiError(400, f"blocked by the guard's policy ({exc})", code="content_filter", param=param)


class _Call:
    """One request's trip to the upstream and back through the output rail."""

    def __init__(self, guard: ServerGuard, upstream: Upstream, metrics: Metrics, messages: list,
                 request_id: str, client_authorization: str | None, reserve: float = 0.0) -> None:
        self.guard, self.upstream, self.metrics = guard, upstream, metrics
        self.messages = messages  # as the user sent them: every answer is judged against these
        self.request_id = request_id
        self.client_authorization = client_authorization
        self.reserve = reserve  # the answers' output checks, reserved while the upstream works
        self.start = time.perf_counter()

    async def complete(self, payload: dict[str, Any]) -> Response:
        try:
            with self.guard.reserving(self.reserve):
                response = await self._timed(self.upstream.complete(payload, self.client_authorization))
        except UpstreamFailure as failure:
            return self._failed(failure)
        if response.status_code >= 400:  # the upstream's own answer (unknown model, bad option): as it came
            return _passed_on(response)
        try:
            data = response.json()
            choices = data["choices"]
            # an answer that was paid for waits for room rather than be refused: never a 429 from here on
            planned = [self.guard.plan_answer(self.messages, c["message"]) for c in choices]
        except (ValueError, KeyError, TypeError, AttributeError):
            return self._failed(UpstreamFailure(502, "invalid", "sent a completion that is not OpenAI's schema"))
        decisions = await asyncio.gather(*(self.guard.checked_answer(p, request_id=self.request_id)
                                           for p in planned))
        for choice, decision in zip(choices, decisions):
            if decision.action in _REPLACED or decision.action is Action.REDACT:
                try:
                    choice["message"] = self.guard.apply_output(choice["message"], decision)
                except GuardBlocked as exc:
                    raise ApiError(400, f"the answer was blocked by the guard's policy ({exc})",
                                   code="content_filter") from None
            if decision.action in _REPLACED:
                choice["finish_reason"] = "content_filter"
        return JSONResponse(data, headers={"x-request-id": self.request_id})

    async def stream(self, payload: dict[str, Any]) -> Response:
        try:
            with self.guard.reserving(self.reserve):  # the stream's checks begin as it arrives
                response = await self._timed(self.upstream.open_stream(payload, self.client_authorization))
        except UpstreamFailure as failure:
            return self._failed(failure)
        if response.status_code >= 400:
            return _passed_on(response)
        guarded = aguard_stream(self.guard, self.messages, _pieces(events(response)), self.request_id)
        return StreamingResponse(self._events(guarded), media_type="text/event-stream",
                                 headers={"x-request-id": self.request_id}, background=BackgroundTask(response.aclose))

    async def _events(self, guarded: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
        """The guarded stream as server-sent events; failures midway end it with an error event.

        The upstream's chunk with a ``finish_reason``, and what follows it, are
        held until the rail has decided: on a cut they are dropped and the cut's
        chunk is the first to finish; otherwise they go out as they came.
        """
        streams = self.guard.streams
        streams[self.request_id] = None
        held: list[dict[str, Any]] = []
        try:
            async with aclosing(guarded) as pieces:
                async for piece in pieces:
                    if streams.get(self.request_id) is not None:
                        # A piece that comes after the stream's decision is the one that ends a cut stream.
                        held.clear()
                        yield _data(_render(piece, cut=True))
                    elif held or _finishes(piece["chunk"]):
                        held.append(piece)
                    else:
                        yield _data(_render(piece, cut=False))
            for piece in held:  # not cut: the upstream's ending, as it came
                yield _data(_render(piece, cut=False))
        except GuardBlocked as exc:  # the policy says raise: the cut becomes an error event
            yield _data(error_body(f"the answer was blocked by the guard's policy ({exc})",
                                   "invalid_request_error", "content_filter"))
        except UpstreamFailure as failure:  # audited by the streaming rail as an abandoned stream
            self.metrics.upstream_errors.labels(failure.kind).inc()
            yield _data(error_body(f"the upstream LLM {failure.message}", "upstream_error",
                                   f"upstream_{failure.kind}"))
        finally:
            streams.pop(self.request_id, None)
        yield "data: [DONE]\n\n"

    async def _timed(self, call: Any) -> Any:
        start = time.perf_counter()
        try:
            return await call
        finally:
            self.metrics.upstream_seconds.observe(time.perf_counter() - start)

    def _failed(self, failure: UpstreamFailure) -> Response:
        """An upstream failure, audited; the policy's ``on_error`` says 502/504 or the upstream's own answer."""
        self.metrics.upstream_errors.labels(failure.kind).inc()
        status = failure.response.status_code if failure.response is not None else None
        decision = self.guard.audit_failure(prompt_of(self.messages), f"UpstreamError: the upstream {failure.message}",
                                            self.request_id, self.start,
                                            {"upstream": {"kind": failure.kind, "status": status}})
        if decision.action is Action.ALLOW and failure.response is not None:  # fail open: its answer, as it came
            return _passed_on(failure.response)
        raise ApiError(failure.status, f"the upstream LLM {failure.message}", type="upstream_error",
                       code=f"upstream_{failure.kind}")


def _passed_on(response: Any) -> Response:
    return Response(response.content, status_code=response.status_code,
                    media_type=response.headers.get("content-type", "application/json"))


# -- stream pieces ---------------------------------------------------------------------------------
# The streaming rail reads a chunk's text through the core's text_of (a dict's "content") and replaces
# it through with_text; a piece is a dict it can read, carrying the upstream's chunk along unchanged.

def _finishes(chunk: Mapping[str, Any]) -> bool:
    """Whether an upstream chunk ends an answer (a choice with a finish_reason)."""
    return any(isinstance(c, Mapping) and c.get("finish_reason") for c in chunk.get("choices") or ())


def _piece_text(chunk: Mapping[str, Any]) -> str:
    """The text a chunk adds: its content, and its tool calls' names and argument fragments (judged too)."""
    parts: list[str] = []
    for choice in chunk.get("choices") or ():
        delta = (choice.get("delta") or {}) if isinstance(choice, Mapping) else {}
        if not isinstance(delta, Mapping):
            continue
        if isinstance(delta.get("content"), str):
            parts.append(delta["content"])
        for call in delta.get("tool_calls") or ():
            fn = (call.get("function") or {}) if isinstance(call, Mapping) else {}
            if isinstance(fn, Mapping):
                parts += [f" {fn['name']}(" if fn.get("name") else "", str(fn.get("arguments") or "")]
    return "".join(parts)


async def _pieces(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    async with aclosing(chunks) as source:
        async for chunk in source:
            text = _piece_text(chunk)
            yield {"content": text, "text": text, "chunk": chunk}


def _render(piece: Mapping[str, Any], *, cut: bool) -> dict[str, Any]:
    """The chunk to send: the upstream's own, or one holding the rail's text (a cut, or masked text)."""
    chunk = piece["chunk"]
    if not cut and piece.get("content") == piece.get("text"):
        return chunk
    head = {k: v for k, v in chunk.items() if k not in ("choices", "usage")}
    delta: dict[str, Any] = {"role": "assistant", "content": piece.get("content", "")} if cut else \
        {"content": piece.get("content", "")}
    finish = "content_filter" if cut else next(
        (c.get("finish_reason") for c in chunk.get("choices") or () if isinstance(c, Mapping)), None)
    return {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}


# -- the guard's own answers -----------------------------------------------------------------------

def _completion(request_id: str, model: str, text: str) -> dict[str, Any]:
    return {"id": f"chatcmpl-{request_id}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "system_fingerprint": None,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                         "logprobs": None, "finish_reason": "content_filter"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}


def _chunk(request_id: str, model: str, text: str, *, role: bool, finish: str | None) -> dict[str, Any]:
    delta = {"role": "assistant", "content": text} if role else {"content": text}
    return {"id": f"chatcmpl-{request_id}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


def _data(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def _sse(chunks: list[dict[str, Any]], request_id: str) -> StreamingResponse:
    async def body() -> AsyncIterator[str]:
        for chunk in chunks:
            yield _data(chunk)
        yield "data: [DONE]\n\n"
    return StreamingResponse(body(), media_type="text/event-stream", headers={"x-request-id": request_id})
