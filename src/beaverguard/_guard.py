"""The guard: text in, scores, decision, action, audit record out.

Async methods are the primary API; their ``_sync`` twins share every step but
the wait, so code without an event loop gets the same decisions.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import gc
import inspect
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from beaverguard._audit import Auditor
from beaverguard._batching import Batcher, close_all, plan
from beaverguard._decision import decide, threshold
from beaverguard._exceptions import (BeaverguardError, GuardBlocked, ModelError, PolicyError, ScorerError,
                                     ScorerOverloaded)
from beaverguard._language import LanguageCheck, Reading
from beaverguard._messages import (conversation_of, text_of, tool_results_of, with_prompt, with_text,
                                  with_tool_result)
from beaverguard._model import LABELS, OnnxScorer, Scorer
from beaverguard._plugins import describe, redactor, with_plugins
from beaverguard._policy import Policy, RemotePolicy
from beaverguard._types import CHANNELS, Action, Channel, Decision, Exchange, Rail, Scores
from beaverguard._views import decoded_text
from beaverguard._yaml import load_policy

__all__ = ["Guard", "DEFAULT_INPUT_REWRITE", "DEFAULT_OUTPUT_REWRITE"]

logger = logging.getLogger("beaverguard")
_TIMEOUTS = (TimeoutError, asyncio.TimeoutError, concurrent.futures.TimeoutError)  # distinct before 3.11
_guards: weakref.WeakSet[Guard] = weakref.WeakSet()  # closed at interpreter exit
T = TypeVar("T")
_CHANGES_TEXT = (Action.REWRITE, Action.REDACT)

DEFAULT_INPUT_REWRITE = (
    "{prompt}\n\n[Safety note: this request may involve {categories}. Answer helpfully, "
    "but do not give instructions or content that could cause harm.]")
DEFAULT_OUTPUT_REWRITE = "I can't share that answer because it may involve {categories}."


def _display(categories: tuple[str, ...]) -> str:
    names = []
    for key in categories:
        try:
            names.append(describe(key).name.lower())
        except KeyError:  # a plugin's category
            names.append(key.replace("_", " "))
    return ", ".join(names) or "unsafe content"


class _Unavailable:
    """Stands in for a model that failed to load, under ``on_error: allow``: every score fails."""

    labels = LABELS

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def score(self, exchanges: list[Exchange]) -> list[dict[str, float]]:
        raise ScorerError(f"the model failed to load: {self.reason}")


class Guard:
    """Scores prompts and responses with one model and applies one policy.

    ``Guard()`` uses the default policy and the embedded default model. A guard
    is safe to share between threads, event loops and concurrent requests: it
    keeps no per-request state.
    """

    def __init__(self, policy: Policy | str | Path | None = None, *, model: str | Path | None = None,
                 scorer: Scorer | None = None, watch: bool = False, shadow: str | Path | None = None) -> None:
        # What reload() rebuilds from: the policy file, and the model, scorer or shadow policy given here. These
        # attributes (and the count of callers) outlive a reload (its `keep` set); every other one is rebuilt.
        self._policy_path = Path(policy) if isinstance(policy, str | Path) else None
        self._model_arg, self._scorer_arg, self._shadow_arg = model, scorer, shadow
        self._reload_lock = threading.Lock()
        self._retiring: list[threading.Thread] = []
        self._watch_stop: threading.Event | None = None
        if isinstance(policy, str | Path):
            policy = load_policy(policy)
        self.policy = policy or Policy()
        if shadow is not None:  # given here (`beaverguard serve --shadow-policy`), it overrides the file's
            self.policy = self.policy.model_copy(update={"shadow": Path(shadow).resolve()})
        ex = self.policy.execution
        if scorer is None:
            probe = plan(ex, on_gpu=ex.provider == "cuda")
            try:
                if self.policy.remote is not None and model is None:
                    scorer = _remote_scorer(self.policy.remote)
                else:
                    scorer = OnnxScorer(model or self.policy.model, provider=ex.provider, threads=probe.threads,
                                        batch_size=ex.batch_size, max_tokens=ex.max_tokens,
                                        normalize=ex.normalize, run_tokens=probe.run_tokens,
                                        wide_threads=probe.wide_threads, decode=ex.decode,
                                        answer_alone=ex.answer_alone)
            except ModelError as exc:
                if self.policy.on_error != "allow":  # fail closed: nothing runs unguarded
                    raise
                logger.error("beaverguard: the model failed to load and on_error=allow, so every request "
                             "passes unscored (and is audited) until it is fixed: %s", exc)
                scorer = _Unavailable(str(exc))
        self.scorer = scorer
        self._owns_scorer = self._scorer_arg is None  # what it built, it closes (a remote scorer's connections)
        _freeze_startup()
        self.plugins = [spec.plugin for spec in self.policy.plugins]
        scorer = with_plugins(scorer, self.plugins)
        self.plan = plan(ex, on_gpu=getattr(scorer, "on_gpu", False),
                         batch_invariant=getattr(scorer, "batch_invariant", True),
                         remote=getattr(scorer, "remote", False))
        self._batcher = Batcher(scorer, self.plan, self.policy.timeout_s)
        self._callers = _Callers()
        self._auditor = Auditor(self.policy.audit)
        self._redact = self._auditor.redact = redactor(self.plugins)
        self._auditor.sinks += [p.sink for p in self.plugins if callable(getattr(p, "sink", None))]
        thresholds = getattr(scorer, "default_thresholds", None)
        self._defaults: dict[Rail, Mapping[str, float]] = {
            rail: thresholds(rail) if thresholds else {} for rail in ("input", "output")}
        self.shadow = _shadow_policy(self.policy)
        self._shadow_id = self.shadow.fingerprint() if self.shadow is not None else None
        spec = getattr(self.scorer, "spec", None)
        # What each audit record names: the policy it was decided under, and the model that scored.
        self.lineage = {"policy": self.policy.fingerprint(),
                        "model": spec.name if spec is not None else type(self.scorer).__name__}
        self._auditor.lineage = self.lineage
        langs = self.policy.languages
        self._language = None
        if langs.enabled:
            self._language = LanguageCheck(spec.languages if spec is not None else ("en",), langs.min_chars)
            self._language.load()
        if watch:
            self.watch()
        _guards.add(self)

    @classmethod
    def from_yaml(cls, path: str | Path, **kwargs: Any) -> Guard:
        """Build a guard from a policy file (which :meth:`reload` and :meth:`watch` re-read)."""
        return cls(Path(path), **kwargs)

    # -- reloading --------------------------------------------------------------------------

    def reload(self, source: Policy | str | Path | None = None) -> Policy:
        """Swap in a new policy; the next requests use it, and none in flight is dropped.

        ``source`` is a policy or a policy file; by default the file this guard was
        built from. A new scorer and batcher are built first where the model or the
        execution settings changed, then swapped in; the old batcher finishes what it
        was given, then closes. Requests in flight keep their scores and are decided
        by the policy current when their scores arrive. A policy that does not
        validate, or whose model cannot load, leaves the guard as it was: the error
        is logged and raised (:class:`PolicyError`, :class:`ModelError`).
        """
        with self._reload_lock:
            path = Path(source) if isinstance(source, str | Path) else None
            try:
                if isinstance(source, Policy):
                    policy = source
                elif path is None and self._policy_path is None:
                    raise PolicyError("this guard was not built from a policy file; pass reload() a path or a Policy")
                else:
                    policy = load_policy(path or self._policy_path)
                old = self.policy
                same_model = (policy.model, policy.remote, policy.execution) == (old.model, old.remote, old.execution)
                reuse = self._scorer_arg or (self.scorer if same_model else None)
                fresh = Guard(policy, model=self._model_arg, scorer=reuse, shadow=self._shadow_arg)
                if isinstance(fresh.scorer, _Unavailable):  # a reload never swaps a working model for none
                    fresh.close()
                    raise ModelError(fresh.scorer.reason)
            except BeaverguardError as exc:
                logger.error("beaverguard: policy reload failed; keeping the current policy: %s", exc)
                raise
            keep = {"_policy_path", "_model_arg", "_scorer_arg", "_shadow_arg", "_reload_lock", "_retiring",
                    "_watch_stop", "_callers"}
            batcher, auditor = self._batcher, self._auditor
            kept = self.scorer is reuse
            done_with = self.scorer if self._owns_scorer and not kept else None  # closed once its batcher retires
            owns = self._owns_scorer if kept else fresh._owns_scorer
            self.__dict__.update({k: v for k, v in vars(fresh).items() if k not in keep})
            self._owns_scorer = owns
            if path is not None:
                self._policy_path = path
            retire = threading.Thread(target=_retire, args=(batcher, fresh._batcher, auditor, done_with),
                                      name="beaverguard-retire", daemon=True)
            retire.start()
            self._retiring = [t for t in self._retiring if t.is_alive()] + [retire]
        logger.info("beaverguard: policy reloaded%s", f" from {self._policy_path}" if self._policy_path else "")
        return policy

    def watch(self, interval_s: float = 1.0) -> None:
        """Reload whenever the policy file changes (polls its mtime in a daemon thread).

        A broken file is logged and skipped: the guard keeps its policy until the
        file changes again. :meth:`close` stops the watch.
        """
        if self._policy_path is None:
            raise PolicyError("this guard was not built from a policy file, so there is nothing to watch")
        if self._watch_stop is not None:
            return
        stop = self._watch_stop = threading.Event()
        seen = self._stamp()  # taken here, so a change right after watch() returns is seen
        threading.Thread(target=self._watch, args=(stop, interval_s, seen), name="beaverguard-watch",
                         daemon=True).start()

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self._policy_path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def _watch(self, stop: threading.Event, interval_s: float, seen: tuple[int, int] | None) -> None:
        while not stop.wait(interval_s):
            now = self._stamp()
            if now is None or now == seen:
                continue
            seen = now
            try:
                self.reload()
            except BeaverguardError:
                pass  # logged by reload; the old policy stays

    # -- checking ---------------------------------------------------------------------------

    async def check_input(self, prompt: Any, *, channel: Channel = "user", request_id: str | None = None) -> Decision:
        """Judge a prompt (a string, messages, or a PromptValue) on the input rail.

        For messages, the conversation is judged: the last user message with up to
        the rail's ``context_turns`` earlier turns. ``channel`` says where the text
        comes from: the user (``"user"``), a tool's output (``"tool_result"``) or data
        handed over with the task (``"document"``); the policy's injection rules differ by it.
        """
        _check_channel(channel)
        exchange = self.exchange("input", prompt)
        start = time.perf_counter()
        scores, error, reading = await self._ascore("input", exchange)
        return self._conclude("input", exchange.prompt, None, scores, error, start, request_id, channel=channel,
                              reading=reading)

    async def check_output(self, prompt: Any, response: Any, *, request_id: str | None = None) -> Decision:
        """Judge a response together with its prompt and the turns before it (BeaverTails QA moderation)."""
        exchange = self.exchange("output", prompt, response)
        start = time.perf_counter()
        scores, error, reading = await self._ascore("output", exchange)
        return self._conclude("output", exchange.prompt, exchange.response, scores, error, start, request_id,
                              reading=reading)

    def check_input_sync(self, prompt: Any, *, channel: Channel = "user", request_id: str | None = None) -> Decision:
        """Sync twin of :meth:`check_input`, for code without an event loop."""
        _check_channel(channel)
        exchange = self.exchange("input", prompt)
        start = time.perf_counter()
        reading = self.read("input", exchange)
        scores, error = self._score_sync("input", exchange)
        return self._conclude("input", exchange.prompt, None, scores, error, start, request_id, channel=channel,
                              reading=reading)

    def check_output_sync(self, prompt: Any, response: Any, *, request_id: str | None = None) -> Decision:
        """Sync twin of :meth:`check_output`."""
        exchange = self.exchange("output", prompt, response)
        start = time.perf_counter()
        reading = self.read("output", exchange)
        scores, error = self._score_sync("output", exchange)
        return self._conclude("output", exchange.prompt, exchange.response, scores, error, start, request_id,
                              reading=reading)

    async def admit_input(self, prompt: Any, *, request_id: str | None = None) -> tuple[Decision, Any]:
        """The input rail's decision on ``prompt``, and the prompt to pass on if it is not blocked.

        Besides the user's message, each tool result after it (an agent's loop hands
        them back to the model) is judged as what it is, on the ``tool_result``
        channel: one the policy blocks reaches the model as the policy's message, one
        it rewrites or redacts as its new text. Every tool result after the last user
        message is judged on every call, since the caller's history keeps the original.
        """
        verdict = await self.check_input(prompt, request_id=request_id)
        results = tool_results_of(prompt) if not verdict.blocked else []
        decisions = await asyncio.gather(
            *(self.check_input(text, channel="tool_result", request_id=request_id) for _, text in results))
        return verdict, self._pass_on(prompt, verdict, results, list(decisions))

    def admit_input_sync(self, prompt: Any, *, request_id: str | None = None) -> tuple[Decision, Any]:
        """Sync twin of :meth:`admit_input`."""
        verdict = self.check_input_sync(prompt, request_id=request_id)
        results = tool_results_of(prompt) if not verdict.blocked else []
        decisions = [self.check_input_sync(text, channel="tool_result", request_id=request_id) for _, text in results]
        return verdict, self._pass_on(prompt, verdict, results, decisions)

    def _pass_on(self, prompt: Any, verdict: Decision, results: list[tuple[int, str]],
                 decisions: list[Decision]) -> Any:
        if verdict.blocked:
            return prompt
        return self.apply_tool_results(self.apply_input(prompt, verdict), results, decisions)

    def exchange(self, rail: Rail, prompt: Any, response: Any = None) -> Exchange:
        """What a rail scores: the last user message, its earlier turns (up to ``context_turns``), the reply."""
        context, text = conversation_of(prompt, self.policy.rail(rail).context_turns)
        return Exchange(text, None if rail == "input" else text_of(response), context)

    def read(self, rail: Rail, exchange: Exchange) -> Reading | None:
        """The language of what ``rail`` judges of ``exchange`` (None when the policy turns identification off).

        Every text counts: the prompt, its earlier turns, the response, and what their base64,
        hex and URL-encoded parts decode to.
        """
        if self._language is None or not self.policy.rail(rail).enabled:
            return None
        texts = [exchange.prompt, *(t for _, t in exchange.context)]
        if exchange.response is not None:
            texts.append(exchange.response)
        return self._language.read([*texts, *(d for t in texts for d in decoded_text(t))])

    def score_many(self, exchanges: list[Exchange], *, progress: Callable[[int], None] | None = None,
                   chunk: int = 256) -> list[Scores]:
        """Score many exchanges through the batcher (for files and evaluation); no decisions, no audit.

        They are bulk work: no timeout and no admission control, and checks that arrive meanwhile go first.
        """
        out: list[Scores] = []
        for s in range(0, len(exchanges), chunk):
            out += self._batcher.score_sync(exchanges[s:s + chunk])
            if progress:
                progress(len(exchanges[s:s + chunk]))
        return out

    def thresholds(self, rail: Rail) -> dict[str, float]:
        """The score at which each of the model's labels fires on ``rail`` under this guard's policy."""
        rules, defaults = self.policy.rail(rail), self._defaults[rail]
        return {key: float(threshold(rules.rule(key), key, defaults)) for key in self.scorer.labels}

    def judge(self, rail: Rail, scores: Scores, channel: Channel = "user") -> tuple[Action, tuple[str, ...]]:
        """The action and fired categories that this guard's policy gives ``scores`` (pure; no audit)."""
        return decide(scores, self.policy.rail(rail), self._defaults[rail], channel)

    # -- wrapping ---------------------------------------------------------------------------

    async def run(self, llm_call: Callable[..., Any], prompt: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Guard one call of any sync or async callable that takes a prompt or messages."""
        request_id = uuid.uuid4().hex
        verdict, sent = await self.admit_input(prompt, request_id=request_id)
        if verdict.blocked:
            return self.blocked_reply(verdict)
        reply = llm_call(sent, *args, **kwargs)
        if inspect.isawaitable(reply):
            reply = await reply
        return self.apply_output(reply, await self.check_output(prompt, reply, request_id=request_id))

    def run_sync(self, llm_call: Callable[..., T], prompt: Any, /, *args: Any, **kwargs: Any) -> T | str:
        """Sync twin of :meth:`run`: guard one call of a sync callable."""
        request_id = uuid.uuid4().hex
        verdict, sent = self.admit_input_sync(prompt, request_id=request_id)
        if verdict.blocked:
            return self.blocked_reply(verdict)
        reply = llm_call(sent, *args, **kwargs)
        return self.apply_output(reply, self.check_output_sync(prompt, reply, request_id=request_id))

    def wrap(self, runnable: Any) -> Any:
        """Guard ``runnable`` for LangChain: a chat model, a chain or a callable.

        A chat model comes back as a guarded chat model (a ``BaseChatModel`` that
        binds tools, for agents); anything else as a guarded ``Runnable``.
        """
        from langchain_core.language_models import BaseChatModel

        from beaverguard.langchain import GuardedChatModel, GuardedRunnable

        if isinstance(runnable, BaseChatModel):
            return GuardedChatModel(guard=self, inner=runnable)
        return GuardedRunnable(guard=self, inner=runnable)

    def protect(self, func: Callable | None = None, *, prompt_arg: str | None = None) -> Any:
        """Decorate a sync, async or generator chat handler; see :func:`beaverguard.guarded`."""
        from beaverguard._decorator import protect

        return protect(self, func, prompt_arg=prompt_arg)

    # -- actions ----------------------------------------------------------------------------

    def blocked_reply(self, decision: Decision) -> str:
        """The blocked message, or raise :class:`GuardBlocked` where the policy says so."""
        if self.policy.raise_on_block:
            raise GuardBlocked(decision)
        return decision.text

    def apply_input(self, prompt: Any, decision: Decision) -> Any:
        """The prompt to pass on: unchanged, or rewritten in the shape it came in."""
        return with_prompt(prompt, decision.text) if decision.action in _CHANGES_TEXT else prompt

    def apply_tool_results(self, messages: Any, results: list[tuple[int, str]], decisions: list[Decision]) -> Any:
        """``messages`` with each judged tool result (``(index, text)``, its decision) blocked or rewritten.

        A blocked result becomes the policy's message (or :class:`GuardBlocked` is raised, by policy).
        """
        for (index, _), decision in zip(results, decisions, strict=True):
            if decision.blocked:
                messages = with_tool_result(messages, index, self.blocked_reply(decision))
            elif decision.action in _CHANGES_TEXT:
                messages = with_tool_result(messages, index, decision.text)
        return messages

    def apply_output(self, reply: T, decision: Decision) -> T | str:
        """The reply to return: unchanged, replaced, or the blocked message (in the reply's shape)."""
        if decision.blocked:
            return with_text(reply, self.blocked_reply(decision))
        if decision.action in _CHANGES_TEXT:
            return with_text(reply, decision.text)
        return reply

    def close(self) -> None:
        """Stop the file watch and the scoring threads, and flush the audit log.

        Checks still queued are refused (:class:`ScorerError`, so ``on_error`` decides and
        they are audited); checks being scored finish. Runs at interpreter exit too, for
        every guard not closed by then, so a process that exits mid-burst exits cleanly
        and with its audit log complete.
        """
        if self._watch_stop is not None:
            self._watch_stop.set()
        for thread in self._retiring:
            thread.join()
        self._batcher.close(timeout=self.policy.timeout_s + 5)
        # callers that were waiting (now scored or refused) write their decisions before the log closes;
        # a decision that comes later still gets its record, written at once
        self._callers.wait_for_current(timeout=self.policy.timeout_s)
        self._auditor.close()
        if self._owns_scorer:
            _close_scorer(self.scorer)

    # -- internals --------------------------------------------------------------------------

    async def _ascore(self, rail: Rail, exchange: Exchange) -> tuple[Scores, str | None, Reading | None]:
        if not self.policy.rail(rail).enabled:
            return {}, None, None
        (future,) = self._batcher.submit([exchange])  # an overload or a closed guard: a future that has failed
        reading = self.read(rail, exchange)  # while the workers score
        return (*await self._await(future), reading)

    def _score_sync(self, rail: Rail, exchange: Exchange) -> tuple[Scores, str | None]:
        if not self.policy.rail(rail).enabled:
            return {}, None
        return self._wait(self._batcher.check_here(exchange))  # scored on this thread when it is alone

    async def _await(self, future: concurrent.futures.Future) -> tuple[Scores, str | None]:
        """The scores of one submitted exchange, or the error that the policy judges.

        A refused check (already failed) is not awaited at all. A check that fails,
        times out or whose caller is cancelled is cancelled, which frees its place in
        the queue.
        """
        with self._callers.waiting():
            try:
                if future.done():
                    return future.result(), None
                return await _result(future, self.policy.timeout_s), None
            except Exception as exc:
                future.cancel()
                return {}, self._failure(exc)

    def _wait(self, future: concurrent.futures.Future) -> tuple[Scores, str | None]:
        """Sync twin of :meth:`_await`."""
        with self._callers.waiting():
            try:
                return future.result(timeout=self.policy.timeout_s), None
            except Exception as exc:
                future.cancel()
                return {}, self._failure(exc)

    def _failure(self, exc: Exception) -> str:
        """The decision's ``error``: ``"<exception class>: <message>"`` (its ``error_type`` is the class).

        A refusal's message carries the refusal's ``retry_after_s`` along (:class:`_Refusal`), through
        the rails and the streams, to the decision.
        """
        if isinstance(exc, _TIMEOUTS):
            return f"TimeoutError: scoring took longer than {self.policy.timeout_s}s"
        if isinstance(exc, ScorerOverloaded):
            return _Refusal(f"{type(exc).__name__}: {exc}", exc.retry_after_s)
        return f"{type(exc).__name__}: {exc}"

    def _fails_closed(self, error: str) -> bool:
        """Whether a check that failed with ``error`` is blocked: ``on_overload`` for a refusal, else ``on_error``."""
        choice = self.policy.on_overload if _error_type(error) == "ScorerOverloaded" else None
        return (choice or self.policy.on_error) == "block"

    def _conclude(self, rail: Rail, prompt: str, response: str | None, scores: Scores, error: str | None,
                  start: float, request_id: str | None, extra: Mapping[str, object] | None = None,
                  channel: Channel = "user", reading: Reading | None = None) -> Decision:
        rules = self.policy.rail(rail)
        error_type = None if error is None else _error_type(error)
        if error is not None:
            action = Action.BLOCK if self._fails_closed(error) else Action.ALLOW
            if error_type == "ScorerOverloaded":
                logger.warning("beaverguard %s rail refused unscored (%s); %s", rail, error, action.value)
            else:
                logger.error("beaverguard %s rail failed (%s); on_error=%s", rail, error, self.policy.on_error)
            categories: tuple[str, ...] = ()
        else:
            action, categories = decide(scores, rules, self._defaults[rail], channel)
        unverified = reading is not None and reading.unverified
        if unverified:
            language_action = self.policy.languages.action(rail)
            if language_action.severity > action.severity:
                action = language_action
            logger.info("beaverguard %s rail: text mostly in %s, which the model does not read (unverified); %s",
                        rail, reading.language, action.value)
        original = prompt if rail == "input" else response or ""
        if action is Action.BLOCK:
            text = self.policy.blocked_message
        elif action is Action.REWRITE:
            template = rules.rewrite or (DEFAULT_INPUT_REWRITE if rail == "input" else DEFAULT_OUTPUT_REWRITE)
            what = _display(categories) if categories or not unverified else f"text the guard cannot read ({reading.language})"
            text = template.format(prompt=prompt, categories=what)
        elif action is Action.REDACT:
            text = self._redact(original)
        else:
            text = original
        shadow = None
        if self.shadow is not None and error is None:
            s_action, s_fired = decide(scores, self.shadow.rail(rail), self._defaults[rail], channel)
            if unverified and self.shadow.languages.enabled:
                s_action = max(s_action, self.shadow.languages.action(rail), key=lambda a: a.severity)
            shadow = {"policy": self._shadow_id, "action": s_action.value, "categories": list(s_fired)}
        decision = Decision(rail=rail, action=action, categories=categories, scores=dict(scores), text=text,
                            request_id=request_id or uuid.uuid4().hex,
                            latency_ms=(time.perf_counter() - start) * 1000, error=error, extra=extra or {},
                            error_type=error_type, retry_after_s=getattr(error, "retry_after_s", None),
                            channel=channel, shadow=shadow, language=reading.language if reading else None,
                            unverified=unverified)
        self._auditor.emit(decision, prompt, response)
        return decision


async def _result(future: concurrent.futures.Future, timeout: float) -> Scores:
    """The result of a worker's ``future``, awaited on the running loop for at most ``timeout`` seconds.

    One loop future and one timer: ``asyncio.wait_for(asyncio.wrap_future(...))``
    makes two more futures and takes two more turns of the loop to hand the result
    over, about 0.1 ms of a lone check's ~5. The worker's callback only schedules
    the wake-up; the result is read here, on the loop.
    """
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()

    def done(_: concurrent.futures.Future) -> None:  # on the worker's thread
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: no one waits any more
            loop.call_soon_threadsafe(_wake, waiter)

    timer = loop.call_later(timeout, _wake, waiter)
    future.add_done_callback(done)
    try:
        await waiter
    finally:
        timer.cancel()
        future.cancel()  # no-op once it is done; otherwise it timed out or its caller was cancelled
    if not future.done() or future.cancelled():
        raise TimeoutError
    return future.result()


def _wake(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _Refusal(str):
    """The ``error`` of a check admission control refused: its message, with the refusal's ``retry_after_s``.

    A str, so that everything that passes errors on (the streaming rail, the server) keeps working on it.
    """

    retry_after_s: float

    def __new__(cls, message: str, retry_after_s: float) -> _Refusal:
        self = super().__new__(cls, message)
        self.retry_after_s = retry_after_s
        return self


def _shadow_policy(policy: Policy) -> Policy | None:
    """The policy's shadow candidate, loaded; it must score with the same model, so it costs no model run."""
    if policy.shadow is None:
        return None
    shadow = load_policy(policy.shadow)
    if (shadow.model, shadow.remote) != (policy.model, policy.remote):
        raise PolicyError(f"shadow policy {policy.shadow}: it scores with model {shadow.model or '(default)'} / "
                          f"remote {shadow.remote}, the enforced policy with {policy.model or '(default)'} / "
                          f"{policy.remote}; a shadow policy must use the same model (compare models with "
                          "`beaverguard replay --rescore`)")
    if shadow.shadow is not None:
        raise PolicyError(f"shadow policy {policy.shadow} names a shadow of its own ({shadow.shadow}); one level only")
    return shadow


def _check_channel(channel: str) -> None:
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}; use one of {', '.join(CHANNELS)}")


def _error_type(error: str) -> str:
    """The exception class named by an ``error`` that :meth:`Guard._failure` wrote."""
    return error.partition(":")[0]


class _Callers:
    """Callers waiting on scores, so that :meth:`Guard.close` can let those waiting when it began conclude.

    Counted by epoch: callers that keep calling a closed guard (and are refused at
    once) do not keep close() waiting.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._epoch = 0
        self._waiting: dict[int, int] = {}  # epoch -> callers waiting that entered in it

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        with self._cond:
            epoch = self._epoch
            self._waiting[epoch] = self._waiting.get(epoch, 0) + 1
        try:
            yield
        finally:
            with self._cond:
                self._waiting[epoch] -= 1
                if not self._waiting[epoch]:
                    del self._waiting[epoch]
                    self._cond.notify_all()

    def wait_for_current(self, timeout: float) -> bool:
        """Wait until every caller waiting now has stopped waiting; False if ``timeout`` passed first."""
        with self._cond:
            epoch, self._epoch = self._epoch, self._epoch + 1
            return self._cond.wait_for(lambda: all(e > epoch for e in self._waiting), timeout)


_frozen = False


def _freeze_startup() -> None:
    """Take what the process has built so far out of the cyclic collector's walks (once, at the first guard).

    A full collection walks every tracked object, and with beaverguard's imports and
    model loaded one takes 30-45 ms on a 2-core CPU, holding the GIL: the event loop
    stops, and in a burst (whose thousands of pending checks are what trigger one) a
    refusal that should take well under a millisecond took 90 ms
    (``benchmarks/bench_latency.py``). Modules, the model and the word lists live as
    long as the process, so ``gc.freeze()`` moves them to the permanent generation,
    which later collections skip; garbage that exists now is collected first, and
    objects made later are collected as usual. (What is frozen is still freed when
    its last reference goes; only a reference cycle among frozen objects would stay.)
    """
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()


@atexit.register
def _close_at_exit() -> None:
    """Close every guard at interpreter exit: queued checks refused, running ones finished, logs flushed.

    Without it, worker threads still inside onnxruntime when the interpreter tears
    down abort the process (``terminate called without an active exception``).
    Runs before the audit module's own flush (atexit runs handlers last-in, first-out).
    """
    for guard in list(_guards):
        try:
            guard.close()
        except Exception:  # noqa: BLE001 - one guard's failure must not keep the others' logs unflushed
            logger.exception("beaverguard: closing a guard at exit failed")
    close_all(timeout=10)  # batchers of guards already collected
    time.sleep(0.02)  # a caller between its refusal and its record: a moment to write it, before threads stop


def _retire(batcher: Batcher, successor: Batcher, auditor: Auditor, scorer: Scorer | None = None) -> None:
    """Close a swapped-out batcher once its requests are scored (later ones go to ``successor``), then flush its
    audit log, and close the scorer it alone used (a remote scorer's connections)."""
    batcher.retire(successor)
    auditor.close()
    _close_scorer(scorer)


def _close_scorer(scorer: object) -> None:
    close = getattr(scorer, "close", None)
    if callable(close):
        close()


def _remote_scorer(remote: RemotePolicy) -> Scorer:
    """The policy's ``remote`` tier as a scorer; its key comes from the environment variable the policy names."""
    from beaverguard.remote import RemoteScorer

    key = None
    if remote.api_key_env is not None:
        key = os.environ.get(remote.api_key_env)
        if not key:
            raise ModelError(f"remote.api_key_env names {remote.api_key_env}, which is not set: export the tier's "
                             "API key in it")
    return RemoteScorer(remote.url, api_key=key, timeout=remote.timeout_s)
