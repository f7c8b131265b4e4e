"""Request and response bodies: OpenAI's where the endpoint is OpenAI's, ours for ``/v1/guard/*``.

OpenAI's request models check only what the guard reads (roles, content,
tool calls, ``stream``, ``n``) and keep every other field as it came, so
options the guard knows nothing about (``temperature``, ``tools``,
``response_format``, ...) reach the upstream unchanged and the upstream's own
validation answers for them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ChatMessage", "ChatCompletionRequest", "ChatCompletion", "ModerationRequest", "ModerationResponse",
    "CheckRequest", "CheckResult", "ScoreRequest", "ScoreResponse", "ModelInfo", "ErrorResponse",
]

#: Most inputs in one moderation request, and most exchanges in one score request.
MAX_INPUTS = 256


class _Open(BaseModel):
    """An OpenAI object: the fields the guard reads are checked, the others kept as they came."""

    model_config = ConfigDict(extra="allow")


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- chat completions ---------------------------------------------------------------------------

class ContentPart(_Open):
    """One part of a message's content; ``text`` parts are judged, others (images, audio) pass on."""

    type: str
    text: str | None = None


class FunctionCall(_Open):
    name: str | None = None
    arguments: str | None = None


class ToolCall(_Open):
    """A tool call the model asked for: its arguments are output too, and are judged."""

    id: str | None = None
    type: str | None = None
    function: FunctionCall | None = None


class ChatMessage(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class ChatCompletionRequest(_Open):
    """OpenAI's chat completion request (the fields not listed pass on to the upstream)."""

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = None
    n: int | None = Field(None, ge=1, le=128)


class ChatCompletion(_Open):
    """OpenAI's chat completion, as the upstream sent it, with unsafe answers replaced.

    A replaced answer has ``finish_reason: "content_filter"``. With ``stream: true``
    the answer is a ``text/event-stream`` of ``chat.completion.chunk`` objects
    ending ``data: [DONE]``; a cut stream's last chunk carries the policy's
    message and ``finish_reason: "content_filter"``.
    """

    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[dict[str, Any]]


# -- moderations --------------------------------------------------------------------------------

class ModerationPart(_Open):
    """A part of a multi-modal input: ``text`` parts are judged, ``image_url`` parts are not (the model reads text)."""

    type: Literal["text", "image_url"]
    text: str | None = None


class ModerationRequest(_Closed):
    """OpenAI's moderation request: one text, a list of texts, or one input made of parts."""

    input: (str | Annotated[list[str], Field(min_length=1, max_length=MAX_INPUTS)]
            | Annotated[list[ModerationPart], Field(min_length=1, max_length=MAX_INPUTS)])
    model: str | None = Field(None, description="Ignored: the server's model answers (named in the response).")


class ModerationResult(_Closed):
    flagged: bool = Field(description="The input rail's policy acts on it (any action but allow).")
    categories: dict[str, bool] = Field(description=(
        "Per category: its score reached its threshold. beaverguard's 14 categories by alias, and OpenAI's "
        "category names mapped from them (see the README's table)."))
    category_scores: dict[str, float]
    category_applied_input_types: dict[str, list[str]]


class ModerationResponse(_Closed):
    id: str
    model: str
    results: list[ModerationResult]


# -- beaverguard's own ----------------------------------------------------------------------------

class CheckRequest(_Closed):
    """One judgement, as ``beaverguard check`` makes it."""

    rail: Literal["input", "output"] | None = Field(
        None, description="input judges the prompt; output the response with its prompt. Default: output when "
                          "a response is given, else input.")
    prompt: str | Annotated[list[ChatMessage], Field(min_length=1)] = Field(
        description="A prompt, or a conversation (OpenAI messages).")
    response: str | ChatMessage | None = Field(None, description="The response to judge (output rail).")


class CheckResult(_Closed):
    """The decision, as ``beaverguard check`` prints it."""

    rail: Literal["input", "output"]
    action: Literal["allow", "log", "redact", "rewrite", "block"]
    flagged: bool
    categories: list[str]
    text: str
    error: str | None
    latency_ms: float
    scores: dict[str, float]


class ScoreExchange(_Closed):
    prompt: str
    response: str | None = None
    context: list[tuple[str, str]] = Field(
        default_factory=list, description="(role, text) turns before the prompt, oldest first.")


class ScoreRequest(_Closed):
    exchanges: list[ScoreExchange] = Field(min_length=1, max_length=MAX_INPUTS)


class ScoreResult(_Closed):
    scores: dict[str, float]


class ScoreResponse(_Closed):
    """Raw scores of the server's model: no decision, the caller's own policy decides."""

    model: str
    labels: list[str]
    results: list[ScoreResult]


class ModelInfo(_Closed):
    name: str
    labels: list[str]
    max_length: int
    batch_invariant: bool
    thresholds: dict[Literal["input", "output"], dict[str, float]] = Field(
        description="The score at which each label fires on each rail, under the policy of the caller's key.")
    default_thresholds: dict[Literal["input", "output"], dict[str, float]] = Field(
        description="The model's calibrated thresholds, what a policy's null threshold means: a remote "
                    "scorer's own policy decides with these (RemoteScorer).")


class ErrorDetail(_Closed):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(_Closed):
    """OpenAI's error body."""

    error: ErrorDetail
