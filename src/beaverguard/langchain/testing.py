"""A scripted tool-calling chat model, for tests and offline examples of guarded agents.

LangChain's own fake chat models neither bind tools nor stream tool calls, so an
agent cannot run on them. :class:`ScriptedChatModel` answers from a script (text
or ``AIMessage`` with tool calls), streams each answer in pieces (tool-call
arguments too, as providers do), and records what it was asked, so a test can
tell whether, and with what, the model was called.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import PrivateAttr

__all__ = ["ScriptedChatModel", "tool_call"]


def tool_call(name: str, args: dict[str, Any], id: str | None = None) -> dict[str, Any]:
    """A tool call for a scripted reply: ``AIMessage("", tool_calls=[tool_call("search", {"q": "rome"})])``."""
    return {"name": name, "args": args, "id": id or f"call-{uuid.uuid4().hex[:12]}", "type": "tool_call"}


class ScriptedChatModel(BaseChatModel):
    """Answers with ``replies`` in turn; raises once they run out (so an unexpected call fails loudly)."""

    replies: list[Any]  # str or AIMessage (pydantic would feed a str to AIMessage's validators)
    model_name: str = "scripted"
    piece_chars: int = 8  # tool-call arguments stream in pieces of this many characters
    _next: int = PrivateAttr(default=0)
    _calls: list[dict[str, Any]] = PrivateAttr(default_factory=list)

    @property
    def calls(self) -> list[dict[str, Any]]:
        """What each call was given: ``{"messages": [...], "tools": [names]}``, oldest first."""
        return self._calls

    @property
    def _llm_type(self) -> str:
        return "scripted-chat-model"

    def bind_tools(self, tools: Sequence[dict[str, Any] | type | Callable | BaseTool], *,
                   tool_choice: str | None = None, **kwargs: Any) -> Runnable[Any, AIMessage]:
        """Bind tools the way provider models do: OpenAI tool schemas in the call's ``tools``."""
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _reply(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        self._calls.append({"messages": list(messages),
                            "tools": [t["function"]["name"] for t in kwargs.get("tools", ())]})
        if self._next >= len(self.replies):
            raise RuntimeError(f"ScriptedChatModel was called {self._next + 1} times; "
                               f"its script has {len(self.replies)} replies")
        reply = self.replies[self._next]
        self._next += 1
        return AIMessage(content=reply) if isinstance(reply, str) else reply.model_copy()

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._reply(messages, kwargs))])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        reply = self._reply(messages, kwargs)
        text = reply.content if isinstance(reply.content, str) else reply.text
        pieces = [AIMessageChunk(content=word, id=reply.id) for word in re.split(r"(\s)", text) if word]
        for index, call in enumerate(reply.tool_calls):
            args = json.dumps(call["args"])
            for start in range(0, max(len(args), 1), self.piece_chars):
                first = start == 0
                pieces.append(AIMessageChunk(content="", id=reply.id, tool_call_chunks=[{
                    "name": call["name"] if first else None, "id": call["id"] if first else None,
                    "args": args[start:start + self.piece_chars], "index": index, "type": "tool_call_chunk"}]))
        if not pieces:
            pieces = [AIMessageChunk(content="", id=reply.id)]
        pieces[-1].chunk_position = "last"
        for piece in pieces:
            yield ChatGenerationChunk(message=piece)
