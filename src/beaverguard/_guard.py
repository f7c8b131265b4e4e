"""The guard: text in, scores, decision, action, audit record out.

Async methods are the primary API; their ``_sync`` twins share every step but
the wait, so code without an event loop gets the same decisions.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import string
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from beaverguard._audit import Auditor
from beaverguard._batching import Batcher, plan
from beaverguard._categories import category
from beaverguard._decision import decide
from beaverguard._exceptions import GuardBlocked
from beaverguard._messages import prompt_of, text_of, with_prompt, with_text
from beaverguard._model import OnnxScorer, Scorer
from beaverguard._policy import Policy
from beaverguard._types import Action, Decision, Exchange, Rail, Scores
from beaverguard._yaml import load_policy

__all__ = ["Guard", "DEFAULT_INPUT_REWRITE", "DEFAULT_OUTPUT_REWRITE"]

logger = logging.getLogger("beaverguard")
_TIMEOUTS = (TimeoutError, asyncio.TimeoutError, concurrent.futures.TimeoutError)  # distinct before 3.11
T = TypeVar("T")

DEFAULT_INPUT_REWRITE = (
    "{prompt}\n\n[Safety note: this request may involve {categories}. Answer helpfully, "
    "but do not give instructions or content that could cause harm.]")
DEFAULT_OUTPUT_REWRITE = "I can't share that answer because it may involve {categories}."


def _display(categories: tuple[str, ...]) -> str:
    names = []
    for key in categories:
        try:
            names.append(category(key).name.lower())
        except KeyError:  # a plugin's category
            names.append(key.replace("_", " "))
    return ", ".join(names) or "unsafe content"


class Guard:
    """Scores prompts and responses with one model and applies one policy.

    ``Guard()`` uses the default policy and the embedded default model. A guard
    is safe to share between threads, event loops and concurrent requests: it
    keeps no per-request state.
    """

    def __init__(self, policy: Policy | str | Path | None = None, *, model: str | Path | None = None,
                 scorer: Scorer | None = None) -> None:
        if isinstance(policy, str | Path):
            policy = load_policy(policy)
        self.policy = policy or Policy()
        ex = self.policy.execution
        if scorer is None:
            gpu_wanted = ex.provider == "cuda"
            probe = plan(ex, on_gpu=gpu_wanted)
            scorer = OnnxScorer(model or self.policy.model, provider=ex.provider, threads=probe.threads,
                                batch_size=probe.batch_size, max_tokens=ex.max_tokens)
        self.scorer = scorer
        self.plan = plan(ex, on_gpu=getattr(scorer, "on_gpu", False))
        self._batcher = Batcher(scorer, self.plan)
        self._auditor = Auditor(self.policy.audit)
        thresholds = getattr(scorer, "default_thresholds", None)
        self._defaults: dict[Rail, Mapping[str, float]] = {
            rail: thresholds(rail) if thresholds else {} for rail in ("input", "output")}

    @classmethod
    def from_yaml(cls, path: str | Path, **kwargs: Any) -> Guard:
        """Build a guard from a policy file."""
        return cls(load_policy(path), **kwargs)

    # -- checking ---------------------------------------------------------------------------

    async def check_input(self, prompt: Any, *, request_id: str | None = None) -> Decision:
        """Judge a prompt (a string, messages, or a PromptValue) on the input rail."""
        text = prompt_of(prompt)
        start = time.perf_counter()
        scores, error = await self._ascore("input", Exchange(text))
        return self._conclude("input", text, None, scores, error, start, request_id)

    async def check_output(self, prompt: Any, response: Any, *, request_id: str | None = None) -> Decision:
        """Judge a response together with its prompt (BeaverTails QA moderation)."""
        text, reply = prompt_of(prompt), text_of(response)
        start = time.perf_counter()
        scores, error = await self._ascore("output", Exchange(text, reply))
        return self._conclude("output", text, reply, scores, error, start, request_id)

    def check_input_sync(self, prompt: Any, *, request_id: str | None = None) -> Decision:
        text = prompt_of(prompt)
        start = time.perf_counter()
        scores, error = self._score_sync("input", Exchange(text))
        return self._conclude("input", text, None, scores, error, start, request_id)

    def check_output_sync(self, prompt: Any, response: Any, *, request_id: str | None = None) -> Decision:
        text, reply = prompt_of(prompt), text_of(response)
        start = time.perf_counter()
        scores, error = self._score_sync("output", Exchange(text, reply))
        return self._conclude("output", text, reply, scores, error, start, request_id)

    def score_many(self, exchanges: list[Exchange], *, progress: Callable[[int], None] | None = None,
                   chunk: int = 256) -> list[Scores]:
        """Score many exchanges through the batcher (for files and evaluation); no decisions, no audit."""
        out: list[Scores] = []
        for s in range(0, len(exchanges), chunk):
            out += self._batcher.score_sync(exchanges[s:s + chunk])
            if progress:
                progress(len(exchanges[s:s + chunk]))
        return out

    def judge(self, rail: Rail, scores: Scores) -> tuple[Action, tuple[str, ...]]:
        """The action and fired categories that this guard's policy gives ``scores`` (pure; no audit)."""
        return decide(scores, self.policy.rail(rail), self._defaults[rail])

    # -- wrapping ---------------------------------------------------------------------------

    async def run(self, llm_call: Callable[..., Any], prompt: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Guard one call of any sync or async callable that takes a prompt or messages."""
        request_id = uuid.uuid4().hex
        verdict = await self.check_input(prompt, request_id=request_id)
        if verdict.blocked:
            return self.blocked_reply(verdict)
        reply = llm_call(self.apply_input(prompt, verdict), *args, **kwargs)
        if inspect.isawaitable(reply):
            reply = await reply
        return self.apply_output(reply, await self.check_output(prompt, reply, request_id=request_id))

    def run_sync(self, llm_call: Callable[..., T], prompt: Any, /, *args: Any, **kwargs: Any) -> T | str:
        request_id = uuid.uuid4().hex
        verdict = self.check_input_sync(prompt, request_id=request_id)
        if verdict.blocked:
            return self.blocked_reply(verdict)
        reply = llm_call(self.apply_input(prompt, verdict), *args, **kwargs)
        return self.apply_output(reply, self.check_output_sync(prompt, reply, request_id=request_id))

    def wrap(self, runnable: Any) -> Any:
        """A LangChain ``Runnable`` that guards ``runnable`` (a chat model, chain or callable)."""
        from beaverguard.langchain import GuardedRunnable

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
        return with_prompt(prompt, decision.text) if decision.action is Action.REWRITE else prompt

    def apply_output(self, reply: T, decision: Decision) -> T | str:
        """The reply to return: unchanged, replaced, or the blocked message."""
        if decision.blocked:
            return self.blocked_reply(decision)
        if decision.action is Action.REWRITE:
            return with_text(reply, decision.text)
        return reply

    def close(self) -> None:
        """Stop the scoring threads and flush the audit log."""
        self._batcher.close()
        self._auditor.close()

    # -- internals --------------------------------------------------------------------------

    async def _ascore(self, rail: Rail, exchange: Exchange) -> tuple[Scores, str | None]:
        if not self.policy.rail(rail).enabled:
            return {}, None
        try:
            return (await asyncio.wait_for(self._batcher.score([exchange]), self.policy.timeout_s))[0], None
        except _TIMEOUTS:
            return {}, f"ScorerError: scoring took longer than {self.policy.timeout_s}s"
        except Exception as exc:  # the policy's on_error decides
            return {}, f"{type(exc).__name__}: {exc}"

    def _score_sync(self, rail: Rail, exchange: Exchange) -> tuple[Scores, str | None]:
        if not self.policy.rail(rail).enabled:
            return {}, None
        try:
            return self._batcher.score_sync([exchange], timeout=self.policy.timeout_s)[0], None
        except _TIMEOUTS:
            return {}, f"ScorerError: scoring took longer than {self.policy.timeout_s}s"
        except Exception as exc:
            return {}, f"{type(exc).__name__}: {exc}"

    def _conclude(self, rail: Rail, prompt: str, response: str | None, scores: Scores, error: str | None,
                  start: float, request_id: str | None, extra: Mapping[str, object] | None = None) -> Decision:
        rules = self.policy.rail(rail)
        if error is not None:
            logger.error("beaverguard %s rail failed (%s); on_error=%s", rail, error, self.policy.on_error)
            action = Action.BLOCK if self.policy.on_error == "block" else Action.ALLOW
            categories: tuple[str, ...] = ()
        else:
            action, categories = decide(scores, rules, self._defaults[rail])
        original = prompt if rail == "input" else response or ""
        if action is Action.BLOCK:
            text = self.policy.blocked_message
        elif action is Action.REWRITE:
            template = rules.rewrite or (DEFAULT_INPUT_REWRITE if rail == "input" else DEFAULT_OUTPUT_REWRITE)
            text = string.Formatter().vformat(template, (), {"prompt": prompt, "categories": _display(categories)})
        else:
            text = original
        decision = Decision(rail=rail, action=action, categories=categories, scores=dict(scores), text=text,
                            request_id=request_id or uuid.uuid4().hex,
                            latency_ms=(time.perf_counter() - start) * 1000, error=error, extra=extra or {})
        self._auditor.emit(decision, prompt, response)
        return decision


