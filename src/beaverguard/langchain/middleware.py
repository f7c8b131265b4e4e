"""Middleware for ``langchain.agents.create_agent``: the rails around every model call and tool result.

    agent = create_agent(model, tools, middleware=[GuardMiddleware(guard)])

* ``before_model``: the input rail judges the conversation before each model
  call. A block ends the run (``jump_to: "end"``) with the policy's message as
  the agent's answer; a rewrite or redaction replaces the user's last message.
* ``wrap_model_call``: the output rail judges each answer with its tool calls
  as the model returns it, before it enters the agent's state. An answer it
  replaces becomes the rail's text without tool calls, which ends the loop: no
  tool runs on it, and no structured response is kept from it. (Judging here
  rather than in ``after_model`` keeps the unsafe answer out of the state, the
  checkpoints and the ``updates`` stream altogether.)
* ``wrap_tool_call`` (off by default): the input rail judges each tool result as
  what it is, text handed to the model from the ``tool_result`` channel (harm,
  and injection where the model scores it: by default an injection in a tool
  result is blocked), before the model sees it; a blocked result reaches the
  model as the policy's message, marked as a tool error.

Each hook takes ``True`` (the middleware's guard), ``False`` (off) or a
``Guard`` of its own, with its own policy. Every decision writes one audit
record, which carries ``agent: {thread_id, hook, ...}``.

Tokens streamed with ``stream_mode="messages"`` leave as the model makes them,
before the output rail has the whole answer; for streams that carry only
checked text, give the agent ``guard.wrap(model)`` as its model.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any

from langchain.agents.middleware import AgentMiddleware, AgentState, ModelRequest, ModelResponse, hook_config
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.runtime import Runtime
from langgraph.types import Command

from beaverguard._audit import audit_context
from beaverguard._guard import Guard
from beaverguard._messages import text_of
from beaverguard._types import Action, Decision

__all__ = ["GuardMiddleware"]

_MARK = "beaverguard"  # additional_kwargs key on a user message the input rail rewrote


class GuardMiddleware(AgentMiddleware):
    """The guard's rails around an agent's model calls (and, optionally, its tool results)."""

    def __init__(self, guard: Guard, *, input: bool | Guard = True, output: bool | Guard = True,
                 tool_results: bool | Guard = False) -> None:
        super().__init__()
        self.input_guard = _pick(guard, input)
        self.output_guard = _pick(guard, output)
        self.tool_guard = _pick(guard, tool_results)

    # -- before each model call: the input rail ---------------------------------------------

    @hook_config(can_jump_to=["end"])
    def before_model(self, state: AgentState, runtime: Runtime) -> dict[str, Any] | None:
        messages = state["messages"]
        if self.input_guard is None or not messages:
            return None
        with self._audit("before_model", runtime, messages):
            decision = self.input_guard.check_input_sync(messages)
        return _input_update(self.input_guard, messages, decision)

    @hook_config(can_jump_to=["end"])
    async def abefore_model(self, state: AgentState, runtime: Runtime) -> dict[str, Any] | None:
        messages = state["messages"]
        if self.input_guard is None or not messages:
            return None
        with self._audit("before_model", runtime, messages):
            decision = await self.input_guard.check_input(messages)
        return _input_update(self.input_guard, messages, decision)

    # -- each model call: the output rail ---------------------------------------------------

    def wrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]) -> Any:
        response = handler(request)
        answer = _answer_of(response)
        if self.output_guard is None or answer is None:
            return response
        with self._audit("model", request.runtime, request.state["messages"]):
            decision = self.output_guard.check_output_sync(request.messages, answer)
        return _output_response(self.output_guard, response, answer, decision)

    async def awrap_model_call(self, request: ModelRequest,
                               handler: Callable[[ModelRequest], Awaitable[ModelResponse]]) -> Any:
        response = await handler(request)
        answer = _answer_of(response)
        if self.output_guard is None or answer is None:
            return response
        with self._audit("model", request.runtime, request.state["messages"]):
            decision = await self.output_guard.check_output(request.messages, answer)
        return _output_response(self.output_guard, response, answer, decision)

    # -- each tool call: its result ---------------------------------------------------------

    def wrap_tool_call(self, request: ToolCallRequest,
                       handler: Callable[[ToolCallRequest], ToolMessage | Command]) -> ToolMessage | Command:
        result = handler(request)
        if self.tool_guard is None or not isinstance(result, ToolMessage):
            return result
        with self._audit("tool", request.runtime, None, tool=request.tool_call["name"]):
            decision = self.tool_guard.check_input_sync(text_of(result), channel="tool_result")
        return _tool_result(self.tool_guard, result, decision)

    async def awrap_tool_call(self, request: ToolCallRequest,
                              handler: Callable[[ToolCallRequest], Awaitable[ToolMessage | Command]]
                              ) -> ToolMessage | Command:
        result = await handler(request)
        if self.tool_guard is None or not isinstance(result, ToolMessage):
            return result
        with self._audit("tool", request.runtime, None, tool=request.tool_call["name"]):
            decision = await self.tool_guard.check_input(text_of(result), channel="tool_result")
        return _tool_result(self.tool_guard, result, decision)

    # -- audit ------------------------------------------------------------------------------

    def _audit(self, hook: str, runtime: Any, messages: list[AnyMessage] | None,
               **more: Any) -> AbstractContextManager[None]:
        """Fields for the audit record: the thread, the hook, and which model call of the thread it is."""
        fields: dict[str, Any] = {"thread_id": _thread_id(runtime), "hook": hook, **more}
        if messages is not None:  # the model call this is: how many answers the thread had before it
            fields["model_call"] = sum(isinstance(m, AIMessage) for m in messages)
        return audit_context(agent=fields)


def _pick(guard: Guard, setting: bool | Guard) -> Guard | None:
    if isinstance(setting, Guard):
        return setting
    if isinstance(setting, bool):
        return guard if setting else None
    raise TypeError(f"a hook setting is True, False or a Guard, not {type(setting).__name__}")


def _thread_id(runtime: Any) -> str | None:
    info = getattr(runtime, "execution_info", None)
    if info is not None and info.thread_id is not None:
        return info.thread_id
    config = getattr(runtime, "config", None) or {}  # a tool's runtime carries its config
    return (config.get("configurable") or {}).get("thread_id")


def _input_update(guard: Guard, messages: list[AnyMessage], decision: Decision) -> dict[str, Any] | None:
    """The state update for the input rail's decision: end the run, replace the user's message, or none."""
    if decision.blocked:
        return {"messages": [AIMessage(content=guard.blocked_reply(decision))], "jump_to": "end"}
    if decision.action not in (Action.REWRITE, Action.REDACT):
        return None
    last_user = next((m for m in reversed(messages) if isinstance(m, HumanMessage)), None)
    rewritten = last_user is not None and last_user.additional_kwargs.get(_MARK) == Action.REWRITE.value
    if decision.action is Action.REWRITE and rewritten:
        return None  # rewritten at this turn's first model call: its safety note is there already
    changed = [m for old, m in zip(messages, guard.apply_input(messages, decision), strict=True) if m is not old]
    if not changed:
        return None
    return {"messages": [_marked(m, decision.action) for m in changed]}  # same ids: replaced in place


def _marked(message: AnyMessage, action: Action) -> AnyMessage:
    """``message`` marked with what the input rail did to it."""
    return message.model_copy(update={"additional_kwargs": {**message.additional_kwargs, _MARK: action.value}})


def _answer_of(response: ModelResponse) -> AIMessage | None:
    return next((m for m in response.result if isinstance(m, AIMessage)), None)


def _output_response(guard: Guard, response: ModelResponse, answer: AIMessage, decision: Decision) -> ModelResponse:
    """``response``, or one whose answer is the rail's text alone: no tool calls, no structured response."""
    out = guard.apply_output(answer, decision)  # raises GuardBlocked where the policy says so
    if out is answer:
        return response
    replaced = AIMessage(content=text_of(out), id=answer.id, name=answer.name, usage_metadata=answer.usage_metadata)
    return ModelResponse(result=[replaced], structured_response=None)


def _tool_result(guard: Guard, result: ToolMessage, decision: Decision) -> ToolMessage:
    if decision.blocked:
        guard.blocked_reply(decision)  # raises GuardBlocked where the policy says so
    out = guard.apply_output(result, decision)
    if out is result:
        return result
    return result.model_copy(update={"content": text_of(out), "artifact": None,
                                     "status": "error" if decision.blocked else result.status})
