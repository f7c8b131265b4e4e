"""A guarded chat model: ``guard.wrap(chat_model)``, usable wherever LangChain wants a ``BaseChatModel``.

The guarded model is itself a LangChain chat model, so ``BaseChatModel`` gives it
callbacks, tags, metadata, run ids, message ids, batching and the
sync/async/stream contract. This module supplies only what a chat model
implements (``_generate``, ``_agenerate``, ``_stream``, ``_astream``), each of
which puts the wrapped model's call between the rails:

* the input rail judges the conversation before the wrapped model sees it; a
  block answers with the policy's message, and the wrapped model is not called.
  Tool results after the last user message are judged on the ``tool_result``
  channel (``Guard.admit_input``): a blocked one reaches the model as the
  policy's message;
* the output rail judges the answer with its tool calls; an answer it replaces
  becomes a plain ``AIMessage`` without tool calls, so no tool runs on it;
* a stream is released as the output rail passes it (``beaverguard._streaming``).
  Tool-call chunks are held back and judged whole when the stream ends: a tool
  call can only be acted on once complete, and its argument fragments read as
  nothing alone. A stream that is cut carries no tool call.

The wrapped model is called through its own ``_generate_with_cache`` and
``_stream`` (as LangChain's delegating chat models do), not as a child run: a
child run would hand its unguarded tokens to every callback handler
(``astream_events``, LangGraph's message stream) before the guard has judged
them. ``bind_tools`` binds the tools on the wrapped model and keeps the guard
around it; ``with_structured_output`` (by tool calling, so the rail reads the
arguments before the parser does) and ``with_config`` are LangChain's own,
built on it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import aclosing, closing
from typing import Any

from langchain_core.caches import BaseCache
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.outputs.chat_generation import merge_chat_generation_chunks
from langchain_core.runnables import Runnable, RunnableBinding
from pydantic import Field, model_validator

from beaverguard._guard import Guard
from beaverguard._messages import text_of
from beaverguard._streaming import aguard_stream, guard_stream
from beaverguard._types import Decision

__all__ = ["GuardedChatModel"]


class GuardedChatModel(BaseChatModel):
    """``inner`` with the guard's input rail before each call and its output rail after.

    Configure the wrapped model itself (temperature, tokens, keys): the guarded
    model takes only ``guard`` and ``inner``, and streams and formats its output
    as the wrapped model does unless told otherwise.
    """

    guard: Guard
    inner: BaseChatModel
    cache: BaseCache | bool | None = Field(default=False, exclude=True)
    """Guarded answers are never cached: every call is judged. The wrapped model's own cache still applies."""

    @model_validator(mode="before")
    @classmethod
    def _like_inner(cls, values: Any) -> Any:
        """Stream and format output as the wrapped model does, unless told otherwise."""
        if isinstance(values, dict) and isinstance(values.get("inner"), BaseChatModel):
            for key in ("disable_streaming", "output_version"):
                values.setdefault(key, getattr(values["inner"], key))
        return values

    # -- what LangChain reads of a chat model ---------------------------------------------

    @property
    def _llm_type(self) -> str:
        return f"guarded-{self.inner._llm_type}"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"inner": self.inner._llm_type, **self.inner._identifying_params}

    @property
    def model_name(self) -> str | None:
        """The wrapped model's name, for code that picks features by model name (``create_agent`` does)."""
        for attr in ("model_name", "model", "model_id"):
            name = getattr(self.inner, attr, None)
            if isinstance(name, str):
                return name
        return None

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        """The wrapped model's tracing parameters (provider, model name): it is the model that runs."""
        return self.inner._get_ls_params(stop=stop, **kwargs)

    def _resolve_model_profile(self) -> Any:
        """The wrapped model's profile: ``create_agent`` reads it to choose how to ask for structured output."""
        return self.inner.profile

    def get_name(self, suffix: str | None = None, *, name: str | None = None) -> str:
        return super().get_name(suffix, name=name or f"Guarded{self.inner.get_name()}")

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: str | None = None,
                   **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind ``tools`` on the wrapped model, as its provider formats them; the guard stays around it.

        Returns a binding of this guarded model with the wrapped model's tool
        arguments, so every call still passes both rails, and the output rail
        reads the tool calls.
        """
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        bound = self.inner.bind_tools(tools, **kwargs)
        if isinstance(bound, BaseChatModel):
            return self.model_copy(update={"inner": bound}).bind()
        if not (isinstance(bound, RunnableBinding) and isinstance(bound.bound, BaseChatModel)):
            raise TypeError(f"{type(self.inner).__name__}.bind_tools returned a {type(bound).__name__}, not a "
                            "binding of a chat model, so the guard cannot stay between it and its tools")
        guarded = self if bound.bound is self.inner else self.model_copy(update={"inner": bound.bound})
        binding = guarded.bind(**bound.kwargs)
        return binding.with_config(bound.config) if bound.config else binding

    # -- calls ------------------------------------------------------------------------------

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        rid = uuid.uuid4().hex
        verdict, sent = self.guard.admit_input_sync(messages, request_id=rid)
        if verdict.blocked:
            return _result(AIMessage(content=self.guard.blocked_reply(verdict)))
        result = self.inner._generate_with_cache(sent, stop=stop, **kwargs)
        return self._judged(result, [self.guard.check_output_sync(messages, g.message, request_id=rid)
                                     for g in result.generations])

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                         **kwargs: Any) -> ChatResult:
        rid = uuid.uuid4().hex
        verdict, sent = await self.guard.admit_input(messages, request_id=rid)
        if verdict.blocked:
            return _result(AIMessage(content=self.guard.blocked_reply(verdict)))
        result = await self.inner._agenerate_with_cache(sent, stop=stop, **kwargs)
        return self._judged(result, [await self.guard.check_output(messages, g.message, request_id=rid)
                                     for g in result.generations])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        rid = uuid.uuid4().hex
        verdict, sent = self.guard.admit_input_sync(messages, request_id=rid)
        if verdict.blocked:
            yield _last(AIMessageChunk(content=self.guard.blocked_reply(verdict)))
            return
        if type(self.inner)._stream is BaseChatModel._stream:  # the wrapped model does not stream: judged whole
            result = self.inner._generate_with_cache(sent, stop=stop, **kwargs)
            result = self._judged(result, [self.guard.check_output_sync(messages, g.message, request_id=rid)
                                           for g in result.generations])
            yield _last(_chunk_of(result.generations[0].message))
            return
        if self.inner.rate_limiter:
            self.inner.rate_limiter.acquire(blocking=True)
        parts = _Parts()
        chunks = self.inner._stream(sent, stop=stop, **kwargs)
        with closing(guard_stream(self.guard, messages, parts.rail_view(chunks), rid)) as guarded:
            for out in guarded:
                yield from parts.release(out)
        yield from parts.finish()

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        rid = uuid.uuid4().hex
        verdict, sent = await self.guard.admit_input(messages, request_id=rid)
        if verdict.blocked:
            yield _last(AIMessageChunk(content=self.guard.blocked_reply(verdict)))
            return
        inner = type(self.inner)
        if inner._stream is BaseChatModel._stream and inner._astream is BaseChatModel._astream:
            result = await self.inner._agenerate_with_cache(sent, stop=stop, **kwargs)
            result = self._judged(result, [await self.guard.check_output(messages, g.message, request_id=rid)
                                           for g in result.generations])
            yield _last(_chunk_of(result.generations[0].message))
            return
        if self.inner.rate_limiter:
            await self.inner.rate_limiter.aacquire(blocking=True)
        parts = _Parts()
        chunks = self.inner._astream(sent, stop=stop, **kwargs)
        async with aclosing(aguard_stream(self.guard, messages, parts.arail_view(chunks), rid)) as guarded:
            async for out in guarded:
                for chunk in parts.release(out):
                    yield chunk
        for chunk in parts.finish():
            yield chunk

    # -- output -----------------------------------------------------------------------------

    def _judged(self, result: ChatResult, decisions: list[Decision]) -> ChatResult:
        """``result`` with each answer the output rail replaced swapped for its replacement."""
        generations = []
        for generation, decision in zip(result.generations, decisions, strict=True):
            answer = self._answer(generation.message, decision)
            generations.append(generation if answer is generation.message else ChatGeneration(message=answer))
        return ChatResult(generations=generations, llm_output=result.llm_output)

    def _answer(self, reply: BaseMessage, decision: Decision) -> BaseMessage:
        """``reply``, or what replaces it: the rail's text alone, without tool calls (or GuardBlocked raised)."""
        out = self.guard.apply_output(reply, decision)
        if out is reply:
            return reply
        return AIMessage(content=text_of(out), id=reply.id, usage_metadata=getattr(reply, "usage_metadata", None))


class _Parts:
    """One stream's chunks on their way through the output rail.

    Text chunks go to the rail as they come. Tool-call chunks are held, and go to
    the rail as one piece when the stream ends: the text of the complete calls.
    The held chunks are released only if the rail passes that piece. What the
    rail lets through is mapped back to the wrapped model's own chunks (with their
    generation info); a chunk the guard made itself (masked text, or the message
    that ends a cut stream) waits one step, so that the final chunk of the stream
    can be marked as such.
    """

    def __init__(self) -> None:
        self.originals: dict[int, ChatGenerationChunk] = {}
        self.held: list[ChatGenerationChunk] = []
        self.piece: AIMessageChunk | None = None
        self.pending: ChatGenerationChunk | None = None

    def _admit(self, chunk: ChatGenerationChunk) -> BaseMessage | None:
        if getattr(chunk.message, "tool_call_chunks", None):
            self.held.append(chunk)
            return None
        self.originals[id(chunk.message)] = chunk
        return chunk.message

    def _end(self) -> AIMessageChunk | None:
        if not self.held:
            return None
        merged = merge_chat_generation_chunks(self.held).message  # parses the complete calls
        self.piece = AIMessageChunk(content=text_of(merged), id=merged.id)
        return self.piece

    def rail_view(self, chunks: Iterator[ChatGenerationChunk]) -> Iterator[BaseMessage]:
        """What the output rail reads of a synchronous stream."""
        try:
            for chunk in chunks:
                if (message := self._admit(chunk)) is not None:
                    yield message
            if (piece := self._end()) is not None:
                yield piece
        finally:
            if hasattr(chunks, "close"):
                chunks.close()

    async def arail_view(self, chunks: AsyncIterator[ChatGenerationChunk]) -> AsyncIterator[BaseMessage]:
        """What the output rail reads of an asynchronous stream."""
        try:
            async for chunk in chunks:
                if (message := self._admit(chunk)) is not None:
                    yield message
            if (piece := self._end()) is not None:
                yield piece
        finally:
            if hasattr(chunks, "aclose"):
                await chunks.aclose()

    def release(self, out: Any) -> list[ChatGenerationChunk]:
        """The chunks to emit now for ``out``, an item the rail let through."""
        ready = [self.pending] if self.pending is not None else []
        self.pending = None
        if out is self.piece:
            return ready + self.held
        original = self.originals.pop(id(out), None)
        if original is not None:
            return ready + [original]
        self.pending = ChatGenerationChunk(message=out)
        return ready

    def finish(self) -> list[ChatGenerationChunk]:
        """What is left when the rail is done: the guard's own last chunk, marked last."""
        if self.pending is None:
            return []
        return [_last(self.pending.message)]


def _last(message: BaseMessage) -> ChatGenerationChunk:
    """A chunk that ends a stream (so LangChain adds no empty one after it)."""
    if isinstance(message, AIMessageChunk) and not message.chunk_position:
        message = message.model_copy(update={"chunk_position": "last"})
    return ChatGenerationChunk(message=message)


def _chunk_of(message: BaseMessage) -> AIMessageChunk:
    """A whole (judged) answer as one stream chunk, tool calls included."""
    return AIMessageChunk(**message.model_dump(exclude={"type"}))


def _result(message: AIMessage) -> ChatResult:
    return ChatResult(generations=[ChatGeneration(message=message)])
