"""Incremental output rail for streamed responses.

Every ``chunk_chars`` new characters, the newest text (with ``overlap_chars`` of
what came before, always paired with the prompt) is scored, so the work for a
response of length n is O(n). Two modes:

* ``buffer`` (default): a chunk of the stream is released only once the text it
  holds has passed a check, and the last ``overlap_chars`` of checked text wait
  for the next check, which sees them again with what follows (so a sentence or
  a phone number cut by a window's end is judged whole); the text of a failing
  check never goes out.
* ``stream_first``: chunks go out at once. A check starts before a chunk is
  handed over, so it runs while the consumer handles that chunk, and the next
  chunk is pulled only once it has passed. So at most ``chunk_chars`` plus one
  chunk of unchecked text ever reaches the consumer, however fast the producer.

A check whose action is ``redact`` lets the stream go on: in buffer mode the
text it covered goes out masked (as one chunk; what an earlier chunk already
released stays as it was), in ``stream_first`` mode it is already out, so it is
only recorded. When a check fails (block or rewrite), the stream stops right
there and the policy's message is emitted (or :class:`GuardBlocked` raised, where the policy says so). The one
audit record of the rail says in ``stream.stopped_at`` how many characters had
gone out when it stopped; a consumer that abandons the stream still gets its
record written, marked ``abandoned``.

The sync and async drivers differ only in how they wait for a check.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from beaverguard._messages import text_of, with_text
from beaverguard._types import Action, Decision, Exchange

if TYPE_CHECKING:
    from beaverguard._guard import Guard

__all__ = ["StreamCheck", "guard_stream", "aguard_stream"]


class StreamCheck:
    """State of one streamed response: what arrived, what was checked, what went out."""

    def __init__(self, guard: Guard, prompt: Any, request_id: str) -> None:
        self.guard = guard
        self._exchange = guard.exchange("output", prompt, "")  # the prompt, and its earlier turns
        self.prompt = self._exchange.prompt
        self.request_id = request_id
        self.settings = guard.policy.streaming
        self.enabled = guard.policy.output.enabled
        # A disabled rail checks nothing, so it has nothing to hold back.
        self.at_once = self.settings.mode == "stream_first" or not self.enabled
        self._parts: list[str] = []
        self.length = 0           # characters arrived
        self._tail = ""           # text the next check scores: overlap before `checked`, and all after
        self.checked = 0          # characters covered by passed checks
        self.released = 0         # characters handed to the consumer
        self.checks = 0
        self.stopped_at: int | None = None
        self.error: str | None = None
        self.peak: dict[str, float] = {}            # highest score per label over all checks
        self._worst: tuple[Action, dict[str, float]] = (Action.ALLOW, {})  # strictest check and its scores
        self._held: list[tuple[int, Any, str]] = []  # (end offset, chunk, its text) not yet released (buffer mode)
        self._mask_to = 0                           # held text up to here goes out redacted
        self.pending: tuple[int, Future] | None = None
        self.ended = False                          # the stream is complete: nothing more to wait for
        self.decision: Decision | None = None
        self.start = time.perf_counter()

    @property
    def stopped(self) -> bool:
        return self.stopped_at is not None

    def add(self, chunk: Any) -> list[Any]:
        """Take in a chunk, start a check if one is due; return what goes out before the check settles."""
        piece = text_of(chunk)
        self._parts.append(piece)
        self.length += len(piece)
        if self.enabled:
            self._tail += piece  # bounded by chunk_chars + overlap_chars + one chunk
            if self.length - self.checked >= self.settings.chunk_chars:
                self._submit()
        if self.at_once:
            self.released = self.length
            return [chunk]
        self._held.append((self.length, chunk, piece))
        return []

    def end(self) -> None:
        """The stream is complete: check what no check has covered yet."""
        self.ended = True
        if self.enabled and self.length > self.checked:
            self._submit()

    def _submit(self) -> None:
        # the same batcher as every check: admission control, spread windows; a refusal is a failed future
        future = self.guard._batcher.submit([Exchange(self.prompt, self._tail, self._exchange.context)])[0]
        self.pending = (self.length, future)

    def settle(self, scores: dict[str, float], error: str | None) -> None:
        """Take in the result of the pending check; a failed check stops the stream."""
        upto, _ = self.pending
        self.pending = None
        self.checks += 1
        if error is not None:
            self.error = self.error or error
            if self.guard._fails_closed(error):  # on_overload for a refused check, else on_error
                self.stopped_at = self.released
                return
        else:
            for k, v in scores.items():
                self.peak[k] = max(v, self.peak.get(k, 0.0))
            action, _ = self.guard.judge("output", scores)
            if action.severity > self._worst[0].severity:
                self._worst = (action, dict(scores))
            if action in (Action.BLOCK, Action.REWRITE):
                self.stopped_at = self.released
                return
            if action is Action.REDACT:
                self._mask_to = upto
        self.checked = upto
        keep = self.settings.overlap_chars + self.length - upto
        self._tail = self._tail[-keep:] if keep else ""

    def releasable(self) -> list[Any]:
        """Held chunks whose text has passed its checks (buffer mode).

        Until the stream ends, the last ``overlap_chars`` of checked text stay
        held: the next check sees them again with what follows, so something
        cut by a window's end (a phone number, a harmful sentence) is judged
        whole before any of it goes out.
        """
        limit = self.checked if self.ended else self.checked - self.settings.overlap_chars
        n = 0
        while n < len(self._held) and self._held[n][0] <= limit:
            n += 1
        if not n:
            return []
        out = [c for _, c, _ in self._held[:n]]
        redact = self.guard._redact  # set where a plugin redacts (a redact action needs one)
        if self._mask_to > self.released and redact is not None:
            text = "".join(piece for _, _, piece in self._held[:n])
            masked = redact(text)
            ahead = "".join(piece for end, _, piece in self._held[n:] if end <= self.checked)
            if not self.ended and not redact(text + ahead).startswith(masked):
                return []  # a find runs across the release point: hold it until it can go out masked
            # the masked text as one chunk; text-less chunks (tool calls, metadata) kept
            out = [with_text(out[0], masked), *(c for _, c, piece in self._held[1:n] if not piece)]
        self.released, self._held = self._held[n - 1][0], self._held[n:]
        return out

    def finish(self, abandoned: bool = False) -> Decision:
        """The rail's one decision (audited), with where the stream stopped.

        Its scores are those of the strictest check, so that the decision
        repeats what stopped the stream; with every check passed, the highest
        score per label.
        """
        action, scores = self._worst
        extra = {"stream": {"mode": self.settings.mode, "checks": self.checks, "chars": self.length,
                            "released": self.released, "stopped_at": self.stopped_at, "abandoned": abandoned}}
        text = "".join(self._parts)
        reading = self.guard.read("output", Exchange(self.prompt, text, self._exchange.context))
        self.decision = self.guard._conclude("output", self.prompt, text,
                                             scores if action is not Action.ALLOW else self.peak,
                                             self.error, self.start, self.request_id, extra, reading=reading)
        return self.decision

    def stop_chunk(self, like: Any) -> Any:
        """What goes out on a cut: the policy's message shaped like the stream's chunks (may raise GuardBlocked)."""
        out = self.guard.apply_output(like, self.decision)
        if isinstance(like, str):
            return out
        from langchain_core.messages import AIMessageChunk

        if isinstance(like, AIMessageChunk):  # same message id; none of the cut chunk's metadata or usage
            return AIMessageChunk(content=text_of(out), id=like.id)
        return out


def guard_stream(guard: Guard, prompt: Any, chunks: Iterable[Any], request_id: str) -> Iterator[Any]:
    """Check a synchronous stream of chunks (strings or message chunks) as it flows."""
    state = StreamCheck(guard, prompt, request_id)
    last = None
    iterator = iter(chunks)
    try:
        for chunk in iterator:
            last = chunk
            yield from state.add(chunk)
            if state.pending is not None:
                _settle_sync(state)
            if state.stopped:
                break
            yield from state.releasable()
        else:
            state.end()
            if state.pending is not None:
                _settle_sync(state)
            if not state.stopped:
                yield from state.releasable()
        state.finish()
    finally:
        _close(state, getattr(iterator, "close", None))
    if state.stopped:
        yield state.stop_chunk(last)


async def aguard_stream(guard: Guard, prompt: Any, chunks: AsyncIterable[Any], request_id: str) -> AsyncIterator[Any]:
    """Check an asynchronous stream of chunks as it flows (never blocking the event loop)."""
    state = StreamCheck(guard, prompt, request_id)
    last = None
    iterator = chunks.__aiter__()
    try:
        async for chunk in iterator:
            last = chunk
            for c in state.add(chunk):
                yield c
            if state.pending is not None:
                await _settle_async(state)
            if state.stopped:
                break
            for c in state.releasable():
                yield c
        else:
            state.end()
            if state.pending is not None:
                await _settle_async(state)
            if not state.stopped:
                for c in state.releasable():
                    yield c
        state.finish()
    finally:
        aclose = getattr(iterator, "aclose", None)
        try:
            if aclose is not None:
                await aclose()
        finally:
            _close(state, None)
    if state.stopped:
        yield state.stop_chunk(last)


def _close(state: StreamCheck, close: Any) -> None:
    """Close the source, drop a check no one will wait for, and audit an unfinished stream."""
    try:
        if close is not None:
            close()
    finally:
        if state.pending is not None:
            state.pending[1].cancel()
            state.pending = None
        if state.decision is None:  # abandoned by the consumer, or the source raised
            state.finish(abandoned=True)


def _settle_sync(state: StreamCheck) -> None:
    state.settle(*state.guard._wait(state.pending[1]))  # a timeout or failure: on_error decides


async def _settle_async(state: StreamCheck) -> None:
    state.settle(*await state.guard._await(state.pending[1]))
