"""Incremental output rail for streamed responses.

Every ``chunk_chars`` new characters, the newest text (with ``overlap_chars`` of
what came before, always paired with the prompt) is scored, so the work for a
response of length n is O(n). Two modes:

* ``buffer`` (default): a chunk of the stream is released only once the text it
  holds has passed a check.
* ``stream_first``: chunks go out at once and are checked in the background; a
  failed check stops the stream at the next chunk.

When a check fails, the stream stops and the policy's message is emitted; the
one audit record of the rail says where it stopped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from beaverguard._decision import decide
from beaverguard._messages import text_of, with_text
from beaverguard._types import Action, Decision, Exchange

if TYPE_CHECKING:
    from beaverguard._guard import Guard

__all__ = ["StreamCheck", "guard_stream", "aguard_stream"]


class StreamCheck:
    """State of one streamed response: what arrived, what was checked, what was released."""

    def __init__(self, guard: Guard, prompt: str, request_id: str) -> None:
        self.guard = guard
        self.prompt = prompt
        self.request_id = request_id
        self.settings = guard.policy.streaming
        self.text = ""
        self.checked = 0          # characters covered by finished checks
        self.scores: dict[str, float] = {}
        self.error: str | None = None
        self.checks = 0
        self.stopped_at: int | None = None
        self.start = time.perf_counter()
        self._pending: tuple[int, Future] | None = None
        self._held: list[tuple[int, Any]] = []  # (end offset, chunk) not yet released (buffer mode)
        self.decision: Decision | None = None

    @property
    def stopped(self) -> bool:
        return self.stopped_at is not None

    def due(self) -> bool:
        return self._pending is None and len(self.text) - self.checked >= self.settings.chunk_chars

    def submit(self) -> None:
        """Start scoring the text from the last check (minus overlap) to the end."""
        upto = len(self.text)
        window = self.text[max(0, self.checked - self.settings.overlap_chars):upto]
        self._pending = (upto, self.guard._batcher.submit([Exchange(self.prompt, window)])[0])

    def settle(self, scores: dict[str, float] | None, error: str | None) -> None:
        """Take in the result of the pending check."""
        upto, _ = self._pending
        self._pending = None
        self.checks += 1
        if error is not None:
            self.error = self.error or error
            if self.guard.policy.on_error == "block":
                self.stopped_at = self.checked
                return
        else:
            for k, v in scores.items():
                self.scores[k] = max(v, self.scores.get(k, 0.0))
            action, _ = decide(scores, self.guard.policy.output, self.guard._defaults["output"])
            if action in (Action.BLOCK, Action.REWRITE):
                self.stopped_at = self.checked
                return
        self.checked = upto

    def hold(self, chunk: Any) -> list[Any]:
        """Add a chunk; return the chunks that may go out now."""
        self.text += text_of(chunk)
        if self.settings.mode == "stream_first":
            return [chunk]
        self._held.append((len(self.text), chunk))
        return []

    def releasable(self) -> list[Any]:
        out = [c for end, c in self._held if end <= self.checked]
        self._held = [(end, c) for end, c in self._held if end > self.checked]
        return out

    def finish(self, abandoned: bool = False) -> Decision:
        """The rail's one decision (audited), with where the stream stopped."""
        extra = {"stream": {"mode": self.settings.mode, "checks": self.checks, "chars": len(self.text),
                            "stopped_at": self.stopped_at, "abandoned": abandoned}}
        self.decision = self.guard._conclude("output", self.prompt, self.text, self.scores, self.error,
                                             self.start, self.request_id, extra)
        return self.decision

    def stop_chunk(self, decision: Decision, like: Any) -> Any:
        """The message to emit on a cut, shaped like the stream's chunks."""
        return with_text(like, decision.text) if like is not None else decision.text


def _timeout(guard: Guard) -> float:
    return guard.policy.timeout_s


def guard_stream(guard: Guard, prompt: str, chunks: Iterable[Any], request_id: str) -> Iterator[Any]:
    """Check a synchronous stream of chunks (strings or message chunks) as it flows."""
    state = StreamCheck(guard, prompt, request_id)
    last = None
    iterator = iter(chunks)
    try:
        for chunk in iterator:
            last = chunk
            yield from state.hold(chunk)
            if state._pending is not None and (state.settings.mode == "buffer" or state._pending[1].done()):
                _settle_sync(state)
            if not state.stopped and state.due():
                state.submit()
                if state.settings.mode == "buffer":
                    _settle_sync(state)
            if state.stopped:
                break
            yield from state.releasable()
        if not state.stopped:
            if state._pending is not None:
                _settle_sync(state)
            if not state.stopped and len(state.text) > state.checked:
                state.submit()
                _settle_sync(state)
        if not state.stopped:
            state.checked = len(state.text)
            yield from state.releasable()
        decision = state.finish()
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
        if state._pending is not None:
            state._pending[1].cancel()
        if state.decision is None:  # abandoned by the consumer, or the stream raised
            state.finish(abandoned=True)
    if state.stopped:
        yield state.stop_chunk(decision, last)


def _settle_sync(state: StreamCheck) -> None:
    fut = state._pending[1]
    try:
        state.settle(fut.result(timeout=_timeout(state.guard)), None)
    except Exception as exc:  # timeout or scorer failure: on_error decides
        fut.cancel()
        state.settle(None, f"{type(exc).__name__}: {exc or 'timed out'}")


async def _settle_async(state: StreamCheck) -> None:
    fut = state._pending[1]
    try:
        state.settle(await asyncio.wait_for(asyncio.wrap_future(fut), _timeout(state.guard)), None)
    except Exception as exc:
        fut.cancel()
        state.settle(None, f"{type(exc).__name__}: {exc or 'timed out'}")


async def aguard_stream(guard: Guard, prompt: str, chunks: AsyncIterable[Any], request_id: str) -> AsyncIterator[Any]:
    """Check an asynchronous stream of chunks as it flows (never blocking the event loop)."""
    state = StreamCheck(guard, prompt, request_id)
    last = None
    iterator = chunks.__aiter__()
    try:
        async for chunk in iterator:
            last = chunk
            for c in state.hold(chunk):
                yield c
            if state._pending is not None and (state.settings.mode == "buffer" or state._pending[1].done()):
                await _settle_async(state)
            if not state.stopped and state.due():
                state.submit()
                if state.settings.mode == "buffer":
                    await _settle_async(state)
            if state.stopped:
                break
            for c in state.releasable():
                yield c
        if not state.stopped:
            if state._pending is not None:
                await _settle_async(state)
            if not state.stopped and len(state.text) > state.checked:
                state.submit()
                await _settle_async(state)
        if not state.stopped:
            state.checked = len(state.text)
            for c in state.releasable():
                yield c
        decision = state.finish()
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()
        if state._pending is not None:
            state._pending[1].cancel()
        if state.decision is None:  # abandoned by the consumer, or the stream raised
            state.finish(abandoned=True)
    if state.stopped:
        yield state.stop_chunk(decision, last)
