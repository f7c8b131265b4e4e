"""The policy: one pydantic model that is the single source of truth for its YAML keys.

It also produces its own reference (``beaverguard policy docs``) so the README
cannot drift from the schema.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from beaverguard._categories import INJECTION, UNSAFE
from beaverguard._types import Action, Channel

__all__ = ["Policy", "RailPolicy", "Rule", "InjectionRules", "LanguagesPolicy", "AuditPolicy", "ExecutionPolicy", "StreamingPolicy", "PluginSpec"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rule(_Strict):
    """What happens when one score crosses its threshold."""

    threshold: float | None = Field(None, ge=0.0, le=1.0,
                                    description="Score at or above which the rule fires; null: the model's calibrated default.")
    action: Action = Field(Action.BLOCK, description=(
        "allow, log, redact (mask what a plugin finds, e.g. beaverguard-pii), rewrite or block."))


def _category_key(name: str) -> str:
    from beaverguard._plugins import resolve_category

    if name == INJECTION:
        raise ValueError("'injection' is set per channel under the rail's 'injection' key")
    try:
        key = resolve_category(name)
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    if key == UNSAFE:
        raise ValueError("'unsafe' is the overall score: set it under the rail's 'unsafe' key")
    return key


CategoryName = Annotated[str, AfterValidator(_category_key)]


def _rule(action: Action) -> Any:
    return lambda: Rule(action=action)


class InjectionRules(_Strict):
    """What the ``injection`` score does, by where the judged text came from (models that have that output).

    A user who asks the assistant to ignore its instructions is the app's business; a web page, an
    e-mail or a tool's output that does is an attack on the app.
    """

    user: Rule = Field(default_factory=_rule(Action.LOG), description="The user's own message (default: log).")
    tool_result: Rule = Field(default_factory=_rule(Action.BLOCK),
                              description="A tool's output handed back to the model (default: block).")
    document: Rule = Field(default_factory=_rule(Action.BLOCK), description=(
        "Data handed over with the task: a retrieved document, an e-mail, a web page (default: block)."))

    def rule(self, channel: Channel) -> Rule:
        return getattr(self, channel)


#: The output rail judges the assistant's own answer with its prompt: the injection score there mostly
#: repeats the prompt's, which the input rail has judged, so by default it does nothing.
OUTPUT_INJECTION = {"user": {"action": "allow"}, "tool_result": {"action": "allow"}, "document": {"action": "allow"}}


class RailPolicy(_Strict):
    """Rules of one rail: ``input`` judges the prompt, ``output`` the response with its prompt."""

    enabled: bool = Field(True, description="Score this rail at all.")
    default: Rule = Field(default_factory=Rule, description="Rule for every category not listed under categories.")
    unsafe: Rule = Field(default_factory=Rule, description="Rule for the overall unsafe score.")
    categories: dict[CategoryName, Rule] = Field(
        default_factory=dict, description="Per-category rules, keyed by alias (violence) or dataset key.")
    rewrite: str | None = Field(None, description=(
        "Rewrite template. Input: what the prompt becomes ({prompt}, {categories}). "
        "Output: the reply that replaces the response ({categories})."))
    injection: InjectionRules = Field(default_factory=InjectionRules, description=(
        "Rules for the injection score per channel (user, tool_result, document). Input rail default: log on "
        "user, block on tool_result and document; output rail default: allow on all three."))
    context_turns: int = Field(6, ge=0, description=(
        "Earlier turns of a conversation scored with the last user message (as many as fit the "
        "model's window, newest first); 0: the last user message alone."))

    @field_validator("rewrite")
    @classmethod
    def _known_placeholders(cls, value: str | None) -> str | None:
        if value is not None:
            names = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
            unknown = names - {"prompt", "categories"}
            if unknown:
                raise ValueError(f"unknown placeholder(s) {sorted(unknown)}; use {{prompt}} and {{categories}}")
        return value

    def rule(self, key: str, channel: Channel = "user") -> Rule:
        if key == UNSAFE:
            return self.unsafe
        if key == INJECTION:
            return self.injection.rule(channel)
        return self.categories.get(key, self.default)


class AuditPolicy(_Strict):
    """One audit record per decision, to a JSON Lines file and/or stdlib logging."""

    path: Path | None = Field(None, description="JSON Lines file to append records to; null: no file.")
    log: bool = Field(True, description="Also emit each record on the 'beaverguard.audit' logger.")
    content: Literal["full", "hash", "none"] = Field(
        "hash", description="How user text appears in records: verbatim, as a SHA-256 digest, or not at all.")
    include_allowed: bool = Field(True, description="Record decisions whose action is allow.")


class ExecutionPolicy(_Strict):
    """Where and how scoring runs. Unset values follow the provider and the core count."""

    provider: Literal["auto", "cpu", "cuda"] = Field("auto", description=(
        "cpu, cuda, or auto (CUDA when onnxruntime-gpu offers it). cuda fails at start when the CUDA "
        "provider does not come up, instead of onnxruntime's silent fallback to the CPU; auto falls "
        "back with a warning."))
    threads: int | None = Field(None, ge=0, description=(
        "onnxruntime intra-op threads per run. Unset on a CPU: one per run under load, and a run that "
        "finds the other workers idle and nothing waiting uses all their cores (scores are the same either way)."))
    workers: int | None = Field(None, ge=1, description=(
        "Runs in parallel (CPU default: one per core). The windows of one long text are spread over them."))
    batch_size: int | None = Field(None, ge=1, description=(
        "Most exchanges in one run (CPU default 8, GPU 64). Unset on a CPU, runs also stay "
        "under about 128 tokens; set, only this caps them. Unset with a model that is not batch-invariant "
        "(the default int8 model), each exchange runs alone, so its scores never depend on other requests."))
    max_wait_ms: float = Field(0.0, ge=0.0, description="How long a lone request waits for company; 0: never.")
    max_tokens: int | None = Field(8192, ge=16, description="Cap on tokens scored per text; null: score it all.")
    normalize: bool = Field(True, description=(
        "Undo obfuscation before scoring: Unicode look-alikes, invisible characters, spaced-out letters "
        "(b o m b) and leetspeak (k1ll). Only the scorer sees it; the original text passes on."))
    decode: bool = Field(True, description=(
        "Also score what encoded parts of a text say once decoded (base64, hex, URL-encoding, ROT13, "
        "reversed text), and take the highest score. Only the scorer sees them; the original text passes on."))
    answer_alone: bool = Field(True, description=(
        "On the output rail, also score the response without its prompt, and take the highest score: a harmful "
        "answer to a harmless question is as harmful as one to a harmful question. A harmful question with a "
        "harmless answer stays safe. Costs one more window per response."))


class StreamingPolicy(_Strict):
    """How streamed responses are checked as they arrive."""

    mode: Literal["buffer", "stream_first"] = Field(
        "buffer", description="buffer: release text once checked; stream_first: release at once, check right after.")
    chunk_chars: int = Field(400, ge=16, description="Check after this many new characters.")
    overlap_chars: int = Field(200, ge=0, description="Characters of earlier text scored again with each chunk.")


class PluginSpec(_Strict):
    """A plugin named by its entry point in the ``beaverguard.plugins`` group.

    Validating the spec builds the plugin: bad settings are reported with the
    policy's other errors, and the plugin's categories become valid names.
    """

    name: str = Field(description="Entry point name in the beaverguard.plugins group (e.g. pii, blocklist, otel).")
    settings: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for the plugin.")
    _plugin: Any = PrivateAttr(None)

    @model_validator(mode="after")
    def _build(self) -> PluginSpec:
        from beaverguard._plugins import load_plugin

        self._plugin = load_plugin(self.name, self.settings)
        return self

    @property
    def plugin(self) -> Any:
        """The plugin object built from this spec."""
        return self._plugin


class LanguagesPolicy(_Strict):
    """Text mostly in a language the model does not read (its ``beaverguard.json``: ``languages``).

    The model cannot judge it, so such a decision is marked ``unverified`` whatever happens; the
    action here applies on top of what the scores decided (the stricter wins).
    """

    enabled: bool = Field(True, description="Identify the language of every text a rail judges.")
    input: Literal["allow", "log", "rewrite", "block"] = Field(
        "log", description="What the input rail does with a prompt (and earlier turns) it cannot read.")
    output: Literal["allow", "log", "rewrite", "block"] = Field(
        "log", description="What the output rail does with an exchange it cannot read.")
    min_chars: int = Field(24, ge=1, description=(
        "Fewer letters than this in a text and it counts as readable: identification is not trusted on "
        "names, short replies and single words."))

    def action(self, rail: str) -> Action:
        return Action(self.input if rail == "input" else self.output)


class RemotePolicy(_Strict):
    """A shared scoring tier (``beaverguard serve`` or its Ray Serve deployment) that scores instead of a local model.

    This process still decides, audits and times out by its own policy; the tier only scores.
    """

    url: str = Field(pattern=r"^https?://", description="The tier's base URL (http:// or https://).")
    api_key_env: str | None = Field(None, description=(
        "Name of the environment variable that holds the tier's API key (the key itself never goes in the file)."))
    timeout_s: float = Field(10.0, gt=0, description="Most seconds one HTTP request to the tier may take.")


class Policy(_Strict):
    """A guard policy. Every key is optional; the defaults block what the model flags."""

    version: Literal[1] = Field(1, description="Schema version.")
    # Plugins come before the rails: validating them registers the categories the rails may name.
    plugins: list[PluginSpec] = Field(default_factory=list, description="Plugins to load (entry points).")
    model: Path | None = Field(None, description="Model directory; null: the embedded default model.")
    remote: RemotePolicy | None = Field(None, description=(
        "Score on a shared tier over HTTP instead of loading a model here; null: score locally."))
    input: RailPolicy = Field(default_factory=RailPolicy, description="Input rail.")
    output: RailPolicy = Field(default_factory=lambda: RailPolicy(injection=OUTPUT_INJECTION),
                               description="Output rail.")
    blocked_message: str = Field("Sorry, I can't help with that.", description="What a blocked request gets back.")
    raise_on_block: bool = Field(False, description="Raise GuardBlocked instead of returning blocked_message.")
    on_error: Literal["block", "allow"] = Field(
        "block", description="When scoring fails or times out: block (fail closed) or allow (fail open).")
    on_overload: Literal["block", "allow"] | None = Field(None, description=(
        "When admission control refuses a check because it could not be scored within timeout_s "
        "(ScorerOverloaded; a server answers 429): block or allow; null: follow on_error."))
    timeout_s: float = Field(5.0, gt=0, description=(
        "Most seconds a rail may take to score. A check that the queue ahead of it would keep past "
        "this is refused at once (see on_overload) instead of waiting for it to run out."))
    audit: AuditPolicy = Field(default_factory=AuditPolicy, description="Audit records.")
    shadow: Path | None = Field(None, description=(
        "A candidate policy file decided alongside this one on every check, from the same scores, and never "
        "enforced: its decision goes into the audit record (`shadow`) and the server's metrics. It must score "
        "with the same model (or tier); a relative path is relative to this file."))
    execution: ExecutionPolicy = Field(default_factory=ExecutionPolicy, description="Scoring execution.")
    streaming: StreamingPolicy = Field(default_factory=StreamingPolicy, description="Streaming output rail.")
    languages: LanguagesPolicy = Field(default_factory=LanguagesPolicy, description=(
        "Text in languages the model does not read."))

    @field_validator("output", mode="before")
    @classmethod
    def _output_injection_default(cls, value: Any) -> Any:
        if isinstance(value, dict) and "injection" not in value:
            return {**value, "injection": OUTPUT_INJECTION}
        return value

    @model_validator(mode="after")
    def _one_place_to_score(self) -> Policy:
        if self.model is not None and self.remote is not None:
            raise ValueError("set model (score here) or remote (score on a tier), not both")
        return self

    @model_validator(mode="after")
    def _plugins_provide_what_rails_need(self) -> Policy:
        from beaverguard._plugins import check_provided

        check_provided(self)
        return self

    def rail(self, name: str) -> RailPolicy:
        """The rules of the ``input`` or ``output`` rail."""
        return self.input if name == "input" else self.output

    def fingerprint(self) -> str:
        """A short hash of what decides (rails, messages, failure choices, model), for audit records.

        Where records go (``audit``) and the shadow candidate are left out: they change no decision.
        """
        import hashlib
        import json

        data = self.model_dump(exclude={"audit", "shadow"})
        # A plugin setting may be an object (a meter, a client): its type stands in for it, stable across runs.
        text = json.dumps(data, sort_keys=True, default=lambda o: str(o) if isinstance(o, Path) else
                          f"<{type(o).__module__}.{type(o).__qualname__}>")
        return hashlib.sha256(text.encode()).hexdigest()[:12]
