"""A guarded LangChain runnable around a chain, a callable or any runnable.

It accepts what chat models accept (a string, messages, a ``PromptValue``) and
returns what the wrapped runnable returns. invoke/ainvoke, batch/abatch and
stream/astream are all guarded; ``config`` and callbacks pass through to the
wrapped runnable as a child run. Streaming releases text only after the output
rail has passed it (policy ``streaming.mode: buffer``), or at once and checked
right after (``stream_first``). ``guard.wrap(chat_model)`` returns the guarded
chat model instead (:mod:`beaverguard.langchain.chat_model`).
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from langchain_core.runnables.config import patch_config

from beaverguard._guard import Guard
from beaverguard._streaming import aguard_stream, guard_stream
from beaverguard._types import Decision

__all__ = ["GuardedRunnable"]


class GuardedRunnable(Runnable[Any, Any]):
    """``inner`` with the guard's input rail before it and output rail after it."""

    def __init__(self, guard: Guard, inner: Any) -> None:
        self.guard = guard
        self.inner: Runnable = inner if isinstance(inner, Runnable) else RunnableLambda(inner)
        self.name = f"Guarded{self.inner.get_name()}"

    @property
    def InputType(self) -> Any:  # noqa: N802 - LangChain's name
        return self.inner.InputType

    @property
    def OutputType(self) -> Any:  # noqa: N802
        return self.inner.OutputType

    def _blocked(self, decision: Decision, chunk: bool = False) -> Any:
        text = self.guard.blocked_reply(decision)  # raises GuardBlocked where the policy says so
        if isinstance(self.inner, BaseChatModel):
            return AIMessageChunk(content=text) if chunk else AIMessage(content=text)
        return text

    # invoke / ainvoke -------------------------------------------------------------------

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Check the input, call the wrapped runnable as a child run, check its output."""
        return self._call_with_config(self._invoke, input, config, **kwargs)

    def _invoke(self, input: Any, run_manager: Any, config: RunnableConfig, **kwargs: Any) -> Any:
        rid = uuid.uuid4().hex
        verdict, sent = self.guard.admit_input_sync(input, request_id=rid)
        if verdict.blocked:
            return self._blocked(verdict)
        child = patch_config(config, callbacks=run_manager.get_child())
        reply = self.inner.invoke(sent, child, **kwargs)
        return self.guard.apply_output(reply, self.guard.check_output_sync(input, reply, request_id=rid))

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Async :meth:`invoke`; scoring never blocks the event loop."""
        return await self._acall_with_config(self._ainvoke, input, config, **kwargs)

    async def _ainvoke(self, input: Any, run_manager: Any, config: RunnableConfig, **kwargs: Any) -> Any:
        rid = uuid.uuid4().hex
        verdict, sent = await self.guard.admit_input(input, request_id=rid)
        if verdict.blocked:
            return self._blocked(verdict)
        child = patch_config(config, callbacks=run_manager.get_child())
        reply = await self.inner.ainvoke(sent, child, **kwargs)
        return self.guard.apply_output(reply, await self.guard.check_output(input, reply, request_id=rid))

    # stream / astream -------------------------------------------------------------------

    def transform(self, input: Iterator[Any], config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[Any]:
        """Guard a stream of inputs (judged whole) and stream the checked output."""
        yield from self._transform_stream_with_config(input, self._transform, config, **kwargs)

    def stream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[Any]:
        """Stream the wrapped runnable's output, released as the output rail passes it."""
        return self.transform(iter([input]), config, **kwargs)

    def _transform(self, inputs: Iterator[Any], run_manager: Any, config: RunnableConfig,
                   **kwargs: Any) -> Iterator[Any]:
        input = _last(inputs)
        rid = uuid.uuid4().hex
        verdict, sent = self.guard.admit_input_sync(input, request_id=rid)
        if verdict.blocked:
            yield self._blocked(verdict, chunk=True)
            return
        child = patch_config(config, callbacks=run_manager.get_child())
        chunks = self.inner.stream(sent, child, **kwargs)
        yield from guard_stream(self.guard, input, chunks, rid)

    async def atransform(self, input: AsyncIterator[Any], config: RunnableConfig | None = None,
                         **kwargs: Any) -> AsyncIterator[Any]:
        """Async :meth:`transform`."""
        async with aclosing(self._atransform_stream_with_config(input, self._atransform, config, **kwargs)) as it:
            async for chunk in it:
                yield chunk

    def astream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> AsyncIterator[Any]:
        """Async :meth:`stream`."""
        async def once() -> AsyncIterator[Any]:
            yield input

        return self.atransform(once(), config, **kwargs)

    async def _atransform(self, inputs: AsyncIterator[Any], run_manager: Any, config: RunnableConfig,
                          **kwargs: Any) -> AsyncIterator[Any]:
        input = None
        async for item in inputs:
            input = item
        rid = uuid.uuid4().hex
        verdict, sent = await self.guard.admit_input(input, request_id=rid)
        if verdict.blocked:
            yield self._blocked(verdict, chunk=True)
            return
        child = patch_config(config, callbacks=run_manager.get_child())
        chunks = self.inner.astream(sent, child, **kwargs)
        # Close the guarded stream as soon as this one closes, so an abandoned stream's record
        # is written and its model stream stopped now, not whenever the garbage collector runs.
        async with aclosing(aguard_stream(self.guard, input, chunks, rid)) as guarded:
            async for chunk in guarded:
                yield chunk


def _last(inputs: Iterator[Any]) -> Any:
    """A transform receives its input as a stream; a prompt is judged whole, so take the last."""
    last = deque(inputs, maxlen=1)
    return last[0] if last else None
