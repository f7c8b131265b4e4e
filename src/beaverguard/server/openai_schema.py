"""Request and response bodies: OpenAI's where the endpoint is OpenAI's, ours for ``/v1/guard/*``.

OpenAI's request models check only what the guard reads (roles, content,
tool calls, ``stream``, ``n``) and keep every other field as it came, so
options the guard knows nothing about (``temperature``, ``tools``,
``response_format``, ...) reach the upstream unchanged and the upstream's own
validation answers for them.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

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


#: A UTF-16 surrogate code point (U+D800-U+DFFF): in a Python string only where JSON sent a lone one
#: (``"\\udc00"``, what JavaScript's JSON.stringify writes for half of an emoji). No text encoding can carry it.
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def lone_surrogate_at(value: Any) -> str | None:
    """The JSON path (``messages.0.content``) of the first string in ``value`` holding a lone surrogate, else None.

    Iterative (a deeply nested body cannot exhaust the stack); keys are checked too.
    """
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and _SURROGATE.search(item):
                return path
        elif isinstance(item, dict):
            children = []
            for key, child in item.items():
                where = f"{path}.{key}" if path else str(key)
                if isinstance(key, str) and not key.isascii() and _SURROGATE.search(key):
                    return path or "(a key)"
                children.append((child, where))
            stack.extend(reversed(children))  # depth first, in the body's order
        elif isinstance(item, list):
            stack.extend(reversed([(child, f"{path}.{i}" if path else str(i)) for i, child in enumerate(item)]))
    return None


class _Request(BaseModel):
    """A request body: before anything else, text that no encoding can carry is refused (400 naming the field).

    A lone surrogate would pass the rails and then fail wherever the text is
    encoded (the upstream call, the audit file): it is refused here, before any
    rail runs, rather than repaired, so the client learns its text was cut.
    """

    @model_validator(mode="before")
    @classmethod
    def _encodable(cls, data: Any) -> Any:
        where = lone_surrogate_at(data)
        if where is not None:
            raise PydanticCustomError(
                "invalid_text", "text that is not valid Unicode: a lone UTF-16 surrogate (U+D800-U+DFFF), as "
                "left by cutting a string inside an emoji; send whole characters", {"path": where})
        return data


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


class ChatCompletionRequest(_Open, _Request):
    """OpenAI's chat completion request (the fields not listed pass on to the upstream).

    ``n`` above 1 cannot be streamed through the guard (each answer is judged as one stream).
    """

    model_config = ConfigDict(extra="allow", json_schema_extra={
        "not": {"required": ["stream", "n"],
                "properties": {"stream": {"const": True}, "n": {"type": "integer", "minimum": 2}}}})

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = None
    n: int | None = Field(None, ge=1, le=128, description="Answers to generate; 1 with stream: true.")

    @field_validator("n")
    @classmethod
    def _one_stream(cls, n: int | None, info: ValidationInfo) -> int | None:
        if n is not None and n > 1 and info.data.get("stream"):
            raise PydanticCustomError("stream_n", "n > 1 cannot be streamed through the guard: each answer is "
                                                  "judged as one stream (send n: 1, or stream: false)")
        return n


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


class ModerationRequest(_Closed, _Request):
    """OpenAI's moderation request: one text, a list of texts, or one input made of parts."""

    input: (str | Annotated[list[str], Field(min_length=1, max_length=MAX_INPUTS)]
            | Annotated[list[ModerationPart], Field(min_length=1, max_length=MAX_INPUTS)])
    model: str | None = Field(None, description="Ignored: the server's model answers (named in the response).")


class ModerationExtra(_Closed):
    injection: bool | None = Field(description=(
        "The injection rule fired (the input judged as the user's own message); null: the model has no "
        "injection output. Not an OpenAI category, so not in categories."))
    injection_score: float | None
    language: str | None = Field(description="The language most of the input is in (ISO 639-1).")
    unverified: bool = Field(description="Most of the input is in a language the model does not read.")


class ModerationResult(_Closed):
    flagged: bool = Field(description="The input rail's policy acts on it (any action but allow).")
    categories: dict[str, bool] = Field(description=(
        "Per category: its score reached its threshold. beaverguard's 14 categories by alias, and OpenAI's "
        "category names mapped from them (see the README's table)."))
    category_scores: dict[str, float]
    category_applied_input_types: dict[str, list[str]]
    beaverguard: ModerationExtra = Field(description=(
        "What OpenAI's schema has no place for: prompt injection, and the language of the input."))


class ModerationResponse(_Closed):
    id: str
    model: str
    results: list[ModerationResult]


# -- beaverguard's own ----------------------------------------------------------------------------

class CheckRequest(_Closed, _Request):
    """One judgement, as ``beaverguard check`` makes it. ``rail: "output"`` needs a ``response``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "if": {"required": ["rail"], "properties": {"rail": {"const": "output"}}},
        "then": {"required": ["response"], "properties": {"response": {"not": {"type": "null"}}}}})

    rail: Literal["input", "output"] | None = Field(
        None, description="input judges the prompt; output the response with its prompt. Default: output when "
                          "a response is given, else input.")
    prompt: str | Annotated[list[ChatMessage], Field(min_length=1)] = Field(
        description="A prompt, or a conversation (OpenAI messages).")
    response: str | ChatMessage | None = Field(None, validate_default=True,
                                               description="The response to judge (output rail).")
    channel: Literal["user", "tool_result", "document"] = Field("user", description=(
        "Where the prompt comes from (input rail): the user, a tool's output, or a document handed to the model. "
        "The policy's injection rules differ by it."))

    @field_validator("response")
    @classmethod
    def _output_needs_a_response(cls, response: Any, info: ValidationInfo) -> Any:
        if response is None and info.data.get("rail") == "output":
            raise PydanticCustomError("missing_response", "the output rail judges a response: give one")
        return response


class CheckResult(_Closed):
    """The decision, as ``beaverguard check`` prints it."""

    rail: Literal["input", "output"]
    channel: Literal["user", "tool_result", "document"] = Field(
        "user", description="Where the judged text came from (the request's channel).")
    action: Literal["allow", "log", "redact", "rewrite", "block"]
    flagged: bool
    categories: list[str]
    text: str
    error: str | None
    latency_ms: float
    scores: dict[str, float] = Field(description="Every label of the model: the categories, unsafe, and "
                                                 "injection for models that have it.")
    language: str | None = Field(description="The language most of the judged text is in (ISO 639-1); null: "
                                             "too little text, or identification is off.")
    unverified: bool = Field(description="Most of the text is in a language the model does not read: the "
                                         "scores do not vouch for it (the policy's languages section acts).")


class ScoreExchange(_Closed):
    prompt: str
    response: str | None = None
    context: list[tuple[str, str]] = Field(
        default_factory=list, description="(role, text) turns before the prompt, oldest first.")


class ScoreRequest(_Closed, _Request):
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
