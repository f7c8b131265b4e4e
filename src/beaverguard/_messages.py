"""Find the text to judge in what chat code passes around, and put rewritten text back.

Accepted inputs: a string; a list of messages (LangChain messages, OpenAI-style
``{"role", "content"}`` dicts, or ``(role, text)`` tuples); a LangChain
``PromptValue``. Content may be a string or a list of content blocks; only the
text blocks are judged. A rewritten prompt keeps its other blocks (images); a
replaced reply keeps none, since they were not judged. Outputs: a string, a
message, a dict with ``content``.
"""

from __future__ import annotations

import json

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["prompt_of", "conversation_of", "with_prompt", "tool_results_of", "with_tool_result", "text_of", "with_text"]

_USER_ROLES = {"user", "human"}
_ROLE_NAMES = {"human": "user", "ai": "assistant", "developer": "system", "function": "tool"}


def _is_text(block: Any) -> bool:
    return isinstance(block, str) or (isinstance(block, Mapping) and block.get("type", "text") == "text"
                                      and "text" in block)


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence) and not isinstance(content, bytes | bytearray):  # bytes: not text blocks
        return "\n".join(b if isinstance(b, str) else str(b["text"]) for b in content if _is_text(b))
    raise TypeError(f"cannot read text from message content of type {type(content).__name__}")


def _role_and_content(message: Any) -> tuple[str, Any]:
    if isinstance(message, str):  # LangChain reads a bare string in a message list as a user message
        return "user", message
    if isinstance(message, Mapping):
        return str(message.get("role", "")), message.get("content")
    if isinstance(message, tuple) and len(message) == 2:
        return str(message[0]), message[1]
    if hasattr(message, "content") and hasattr(message, "type"):  # LangChain BaseMessage
        # ChatMessage keeps its role apart from its type ("chat").
        return str(getattr(message, "role", None) or message.type), message.content
    raise TypeError(f"not a chat message: {type(message).__name__}")


def _messages(value: Any) -> list | None:
    if hasattr(value, "to_messages"):  # LangChain PromptValue
        return list(value.to_messages())
    if isinstance(value, list | tuple) and not (isinstance(value, tuple) and len(value) == 2
                                                and isinstance(value[0], str)):
        return list(value)
    return None


def prompt_of(value: Any) -> str:
    """The text a user asked: the string itself, or the last user message of a conversation."""
    if isinstance(value, str):
        return value
    messages = _messages(value)
    if messages is None:
        if isinstance(value, Mapping) and "content" not in value:
            # e.g. a chain's input variables: judging "" would let anything through unseen
            raise TypeError(f"cannot find a prompt in a dict without 'content' (keys: {sorted(value)}); "
                            "pass a str, messages or a PromptValue")
        try:
            return _content_text(_role_and_content(value)[1])
        except TypeError:
            raise TypeError(f"cannot find a prompt in {type(value).__name__}; "
                            "pass a str, messages or a PromptValue") from None
    for message in reversed(messages):
        role, content = _role_and_content(message)
        if role in _USER_ROLES:
            return _content_text(content)
    if messages:  # no user message: judge the last one, whatever its role
        return _content_text(_role_and_content(messages[-1])[1])
    raise ValueError("empty message list: there is no prompt to judge")


def conversation_of(value: Any, turns: int | None = None) -> tuple[tuple[tuple[str, str], ...], str]:
    """(earlier turns, prompt): the last user message, and up to ``turns`` messages before it.

    Earlier turns are ``(role, text)`` pairs, oldest first, with roles named
    ``user``, ``assistant`` or ``tool``; an assistant turn's tool calls are part of
    its text. System messages are left out: they are the application's own
    instructions, not what a user asked, and a long one would crowd the user's
    turns out of the window. Messages after the last user message (an agent's
    tool calls and results) are not part of the prompt's context either: they are
    judged on their own rails. A string has no earlier turns.
    """
    prompt = prompt_of(value)
    messages = None if isinstance(value, str) else _messages(value)
    if not messages or turns == 0:
        return (), prompt
    last = max((i for i, m in enumerate(messages) if _role_and_content(m)[0] in _USER_ROLES), default=len(messages) - 1)
    context = []
    for message in messages[max(0, last - turns) if turns is not None else 0:last]:
        role, content = _role_and_content(message)
        role = _ROLE_NAMES.get(role, role) or "user"
        if role == "system":
            continue
        text = _content_text(content)
        if role != "user":
            calls = _tool_calls_text(message)
            text = f"{text}\n{calls}" if text and calls else text or calls
        if text:
            context.append((role, text))
    return tuple(context), prompt


def _new_content(content: Any, text: str) -> Any:
    """``text`` in place of the text blocks of ``content``; other blocks (images, files) stay in order."""
    if isinstance(content, str) or not isinstance(content, Sequence):
        return text
    first = next((i for i, b in enumerate(content) if _is_text(b)), 0)
    others = [b for b in content if not _is_text(b)]
    others.insert(sum(not _is_text(b) for b in content[:first]), {"type": "text", "text": text})
    return others


def _replace_content(message: Any, text: str, *, keep_blocks: bool = True) -> Any:
    """``message`` with its text replaced; ``keep_blocks`` keeps its non-text blocks."""
    if isinstance(message, str):
        return text
    content = _role_and_content(message)[1]
    new = _new_content(content, text) if keep_blocks else text
    if isinstance(message, Mapping):
        return {**message, "content": new}
    if isinstance(message, tuple):
        return (message[0], new)
    return message.model_copy(update={"content": new})


def with_prompt(value: Any, text: str) -> Any:
    """``value`` with its prompt replaced by ``text`` (same shape as given)."""
    if isinstance(value, str):
        return text
    messages = _messages(value)
    if messages is None:
        return _replace_content(value, text)
    for i in range(len(messages) - 1, -1, -1):
        if _role_and_content(messages[i])[0] in _USER_ROLES:
            break
    else:
        i = len(messages) - 1
    messages[i] = _replace_content(messages[i], text)
    if hasattr(value, "to_messages"):  # keep a PromptValue a PromptValue
        if hasattr(value, "messages"):
            return value.model_copy(update={"messages": messages})
        if hasattr(value, "text"):
            return value.model_copy(update={"text": text})
    return messages


def tool_results_of(value: Any) -> list[tuple[int, str]]:
    """(index, text) of each tool result after the last user message: what an agent's tools handed back.

    They are the text of the tools, not of the user, and are judged on their own channel.
    A string, or messages without a user message, has none.
    """
    messages = None if isinstance(value, str) else _messages(value)
    if not messages:
        return []
    roles = [_ROLE_NAMES.get(r, r) for r, _ in map(_role_and_content, messages)]
    last = max((i for i, r in enumerate(roles) if r == "user"), default=None)
    if last is None:
        return []
    results = [(i, _content_text(_role_and_content(messages[i])[1]))
               for i in range(last + 1, len(messages)) if roles[i] == "tool"]
    return [(i, text) for i, text in results if text.strip()]  # an empty result carries nothing to judge


def with_tool_result(value: Any, index: int, text: str) -> Any:
    """``value`` (messages or a PromptValue) with the message at ``index`` holding ``text`` alone."""
    messages = _messages(value)
    messages[index] = _replace_content(messages[index], text, keep_blocks=False)
    if hasattr(value, "to_messages") and hasattr(value, "messages"):
        return value.model_copy(update={"messages": messages})
    return messages


def _tool_calls_text(reply: Any) -> str:
    """Tool calls a reply asks for, as text: their arguments are output too, and are judged."""
    calls = reply.get("tool_calls") if isinstance(reply, Mapping) else getattr(reply, "tool_calls", None)
    lines = []
    for call in calls or ():
        fn = call.get("function", call) if isinstance(call, Mapping) else call
        name = fn.get("name", "") if isinstance(fn, Mapping) else getattr(fn, "name", "")
        args = fn.get("arguments", fn.get("args", "")) if isinstance(fn, Mapping) else getattr(fn, "args", "")
        lines.append(f"{name}({args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)})")
    return "\n".join(lines)


def text_of(reply: Any) -> str:
    """The text of a model's reply (a string, a message, a chunk or a dict), tool-call arguments included."""
    if isinstance(reply, str):
        return reply
    if isinstance(reply, Mapping):
        text = _content_text(reply.get("content"))
    elif hasattr(reply, "content"):
        text = _content_text(reply.content)
    else:
        raise TypeError(f"cannot read the text of a reply of type {type(reply).__name__}")
    calls = _tool_calls_text(reply)
    return f"{text}\n{calls}" if text and calls else text or calls


def with_text(reply: Any, text: str) -> Any:
    """``reply`` with its content replaced (a string stays a string, a message stays a message).

    The whole content goes, images and tool calls included: a replaced reply was
    judged unsafe as a whole, so nothing of it may pass.
    """
    if isinstance(reply, str):
        return text
    replaced = _replace_content(reply, text, keep_blocks=False)
    if isinstance(replaced, Mapping) and "tool_calls" in replaced:
        return {k: v for k, v in replaced.items() if k != "tool_calls"}
    if getattr(replaced, "tool_calls", None):
        extra = {"tool_call_chunks": []} if hasattr(replaced, "tool_call_chunks") else {}
        return replaced.model_copy(update={"tool_calls": [], **extra})
    return replaced
