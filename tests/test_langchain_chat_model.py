"""``guard.wrap(chat_model)``: the guarded chat model, on a scripted tool-calling model and the tiny real model.

langchain-tests' standard unit suite runs on it first; then what a guard adds: the rails on every
entry point, tool calls judged (and held back in streams), bound tools and structured output
guarded end to end, and only guarded tokens reaching callbacks.
"""

from __future__ import annotations

import json
import uuid

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableBinding, RunnableLambda
from langchain_core.tools import tool
from langchain_tests.unit_tests import ChatModelUnitTests
from pydantic import BaseModel

from langchain_helpers import outputs, text

from beaverguard import GuardBlocked
from beaverguard.langchain import GuardedChatModel, GuardedRunnable
from beaverguard.langchain.testing import ScriptedChatModel, tool_call

REWRITE_INPUT = ("input:\n  default: {action: rewrite}\n  unsafe: {action: rewrite}\n"
                 "  rewrite: 'SAFE MODE ({categories}): {prompt}'\n")
REWRITE_OUTPUT = ("output:\n  default: {action: rewrite}\n  unsafe: {action: rewrite}\n"
                  "  rewrite: 'Withheld: {categories}'\n")
SAFE = "here is a bread recipe with flour and water and salt "


class TestGuardedChatModelStandard(ChatModelUnitTests):
    """langchain-tests' standard chat-model unit suite, on the guarded model around a scripted tool-calling one.

    Two tests skip themselves, as the suite designs: ``test_init_from_env`` (the guarded model
    reads nothing from the environment: it has no keys or settings of its own) and
    ``test_serdes`` (it is not serializable: it holds a ``Guard``, with its ONNX session).
    """

    @pytest.fixture(autouse=True)
    def _guard(self, make_guard):
        self.guard = make_guard()

    @property
    def chat_model_class(self) -> type[GuardedChatModel]:
        return GuardedChatModel

    @property
    def chat_model_params(self) -> dict:
        return {"guard": self.guard, "inner": ScriptedChatModel(replies=[])}


class Recorder(BaseCallbackHandler):
    """Records the chat-model runs and tokens LangChain reports."""

    run_inline = True

    def __init__(self) -> None:
        self.models: list[dict] = []
        self.tokens: list[str] = []
        self.ends: list[AIMessage] = []
        self.errors: list[BaseException] = []

    def on_chat_model_start(self, serialized, messages, *, run_id, parent_run_id=None, tags=None, metadata=None,
                            **kw):
        self.models.append({"messages": messages[0], "run_id": run_id, "parent": parent_run_id,
                            "tags": tags or [], "metadata": metadata or {}, "name": kw.get("name")})

    def on_llm_new_token(self, token, **kw):
        self.tokens.append(token)

    def on_llm_end(self, response, **kw):
        self.ends.append(response.generations[0][0].message)

    def on_llm_error(self, error, **kw):
        self.errors.append(error)


def scripted(*replies) -> ScriptedChatModel:
    return ScriptedChatModel(replies=list(replies))




def merged(out: list):
    """What a caller ends up with: the message, or the stream's chunks added up."""
    total = out[0]
    for chunk in out[1:]:
        total = total + chunk
    return total


def records(guard, tmp_path) -> list[dict]:
    guard.close()
    return [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]


CALLS = ["invoke", "ainvoke", "stream", "astream"]


# -- what wrap returns ------------------------------------------------------------------------

def test_wrap_returns_a_chat_model_for_chat_models_and_a_runnable_otherwise(guard):
    assert isinstance(guard.wrap(scripted()), GuardedChatModel)
    assert isinstance(guard.wrap(RunnableLambda(lambda x: x)), GuardedRunnable)
    assert isinstance(guard.wrap(lambda x: x), GuardedRunnable)


# -- the rails on every entry point -----------------------------------------------------------

@pytest.mark.parametrize("call", CALLS)
async def test_safe_answer_passes_unchanged(guard, call):
    model = scripted(SAFE)
    out = await outputs(guard.wrap(model), call, "how do i make bread")
    kind = AIMessageChunk if "stream" in call else AIMessage
    assert all(type(m) is kind for m in out) and text(out) == SAFE
    assert len(out) > 1 if "stream" in call else len(out) == 1  # streamed, not delivered whole
    assert [c["messages"] for c in model.calls] == [[HumanMessage("how do i make bread")]]


@pytest.mark.parametrize("call", [*CALLS, "batch", "abatch"])
async def test_blocked_input_never_reaches_the_wrapped_model(guard, call):
    model = scripted()  # any call would raise: its script is empty
    rec = Recorder()
    value = ["how do i make a bomb", "kill him"] if "batch" in call else "how do i make a bomb"
    out = await outputs(guard.wrap(model), call, value, {"callbacks": [rec]})
    assert model.calls == []
    kind = AIMessageChunk if "stream" in call else AIMessage
    assert out and all(type(m) is kind and m.content == guard.policy.blocked_message for m in out)
    # one guarded run per request, ending with the blocked message
    assert len(rec.models) == len(rec.ends) == len(out) and all(m.content == guard.policy.blocked_message
                                                               for m in rec.ends)


@pytest.mark.parametrize("call", CALLS)
async def test_rewritten_input_reaches_the_wrapped_model_rewritten(make_guard, call):
    guard = make_guard(REWRITE_INPUT)
    model = scripted("here is a cake recipe")
    messages = [SystemMessage("be brief"), HumanMessage("how do i make a bomb")]
    assert text(await outputs(guard.wrap(model), call, messages)) == "here is a cake recipe"
    [seen] = [c["messages"] for c in model.calls]
    assert seen[0] == messages[0]
    assert seen[1].content.startswith("SAFE MODE (") and seen[1].content.endswith("): how do i make a bomb")
    assert messages[1].content == "how do i make a bomb"  # the caller's messages are not changed


@pytest.mark.parametrize("call", ["invoke", "ainvoke"])
async def test_unsafe_answer_is_replaced(make_guard, call):
    blocking = make_guard()
    [out] = await outputs(blocking.wrap(scripted("you could poison them")), call, "bread please")
    assert type(out) is AIMessage and out.content == blocking.policy.blocked_message
    rewriting = make_guard(REWRITE_OUTPUT)
    [out] = await outputs(rewriting.wrap(scripted("you could poison them")), call, "bread please")
    assert out.content.startswith("Withheld: ") and "poison" not in out.content


@pytest.mark.parametrize("call", ["stream", "astream"])
async def test_unsafe_stream_is_cut_and_ends_with_the_blocked_message(make_guard, call):
    guard = make_guard("streaming: {chunk_chars: 16, overlap_chars: 4}\n")
    reply = SAFE + "and then poison the water of the town today"
    out = await outputs(guard.wrap(scripted(reply)), call, "bread please")
    released = text(out[:-1])
    assert reply.startswith(released) and released and "poison" not in released
    assert out[-1].content == guard.policy.blocked_message and out[-1].chunk_position == "last"


async def test_a_model_that_does_not_stream_is_judged_whole(guard):
    model = FakeMessagesListChatModel(responses=[AIMessage("you could steal it"), AIMessage("a fine cake")])
    wrapped = guard.wrap(model)
    assert [c.content for c in wrapped.stream("cake please")] == [guard.policy.blocked_message]
    assert [c.content async for c in wrapped.astream("cake please")] == ["a fine cake"]


def test_each_call_writes_one_input_and_one_output_record(guard, tmp_path):
    wrapped = guard.wrap(scripted(SAFE, SAFE))
    wrapped.invoke("bread please")
    list(wrapped.stream("bread please"))
    wrapped.invoke("how do i make a bomb")
    recs = records(guard, tmp_path)
    assert [r["rail"] for r in recs] == ["input", "output", "input", "output", "input"]
    assert recs[0]["request_id"] == recs[1]["request_id"] != recs[2]["request_id"] == recs[3]["request_id"]
    assert recs[3]["stream"]["stopped_at"] is None and recs[4]["action"] == "block"


async def test_abandoned_stream_is_audited(guard, tmp_path):
    stream = guard.wrap(scripted(SAFE * 6)).astream("bread please")
    async for _ in stream:
        break
    await stream.aclose()
    [output] = [r for r in records(guard, tmp_path) if r["rail"] == "output"]
    assert output["stream"]["abandoned"]


# -- tool calls ---------------------------------------------------------------------------------

@tool
def search(query: str) -> str:
    """Search the web."""
    return f"results for {query}"


def asks(query: str, text: str = "") -> AIMessage:
    return AIMessage(text, tool_calls=[tool_call("search", {"query": query}, id="call-1")])


@pytest.mark.parametrize("call", CALLS)
async def test_bound_tools_reach_the_model_and_safe_calls_pass_whole(guard, call):
    model = scripted(asks("bread recipe", "let me look"))
    bound = guard.wrap(model).bind_tools([search])
    assert isinstance(bound, RunnableBinding) and isinstance(bound.bound, GuardedChatModel)
    assert bound.bound.inner is model
    answer = merged(await outputs(bound, call, "find me a bread recipe"))
    assert model.calls[0]["tools"] == ["search"]
    assert answer.content == "let me look"
    assert [(c["name"], c["args"], c["id"]) for c in answer.tool_calls] == [("search", {"query": "bread recipe"},
                                                                            "call-1")]


@pytest.mark.parametrize("call", CALLS)
async def test_harmful_tool_call_arguments_are_blocked(make_guard, call):
    guard = make_guard("streaming: {chunk_chars: 16, overlap_chars: 0}\n")  # the text is checked before the call
    model = scripted(asks("how to make a bomb at home", "let me look that up for you"))
    out = await outputs(guard.wrap(model).bind_tools([search]), call, "find me a recipe")
    answer = merged(out)
    assert answer.tool_calls == [] and answer.invalid_tool_calls == [] and "bomb" not in str(answer)
    assert out[-1].content == guard.policy.blocked_message
    if "stream" in call:  # checked text before the call went out; no chunk carried any part of the call
        assert text(out[:-1]) and "let me look that up for you".startswith(text(out[:-1]))
        assert all(not c.tool_call_chunks for c in out)


async def test_callbacks_see_only_guarded_tokens(make_guard):
    guard = make_guard("streaming: {chunk_chars: 16, overlap_chars: 4}\n")
    rec = Recorder()
    run_id = uuid.uuid4()
    reply = SAFE + "and then poison the water"
    config = {"callbacks": [rec], "tags": ["t-outer"], "metadata": {"user": "u1"}, "run_id": run_id,
              "run_name": "guarded-chat"}
    out = [c async for c in guard.wrap(scripted(reply)).astream("bread please", config)]
    [run] = rec.models  # one run: the guarded model's, as configured
    assert run["run_id"] == run_id and run["parent"] is None and run["name"] == "guarded-chat"
    assert "t-outer" in run["tags"] and run["metadata"]["user"] == "u1"
    assert run["metadata"]["ls_model_name"] == "scripted"  # traced as the model that ran
    assert "poison" not in "".join(rec.tokens) and "".join(rec.tokens) == text(out)
    assert all(c.id == f"lc_run--{run_id}" for c in out)
    [end] = rec.ends
    assert end.content == text(out) and end.content.endswith(guard.policy.blocked_message)


async def test_stream_events_carry_no_unguarded_token(guard):
    model = scripted(SAFE + "and then poison the water of the town")
    events = [e async for e in guard.wrap(model).astream_events("bread please", version="v2")]
    streamed = [e["data"]["chunk"].content for e in events if e["event"] == "on_chat_model_stream"]
    assert streamed and "poison" not in "".join(streamed)


@pytest.mark.parametrize("call", ["invoke", "astream"])
async def test_raise_on_block_raises_and_reports_an_llm_error(make_guard, call):
    guard = make_guard("raise_on_block: true\n")
    rec = Recorder()
    model = scripted()
    with pytest.raises(GuardBlocked) as err:
        await outputs(guard.wrap(model), call, "kill", {"callbacks": [rec]})
    assert err.value.decision.rail == "input" and model.calls == []
    assert len(rec.errors) == 1 and isinstance(rec.errors[0], GuardBlocked)


# -- structured output and config --------------------------------------------------------------

class Recipe(BaseModel):
    """A recipe."""

    title: str
    steps: str


def recipe(steps: str) -> AIMessage:
    return AIMessage("", tool_calls=[tool_call("Recipe", {"title": "bread", "steps": steps})])


async def test_structured_output_is_judged_before_it_is_parsed(guard):
    model = scripted(recipe("mix flour and water"), recipe("mix flour and rat poison"),
                     recipe("add poison to the dough"))
    structured = guard.wrap(model).with_structured_output(Recipe)
    assert structured.invoke("bread please") == Recipe(title="bread", steps="mix flour and water")
    assert model.calls[0]["tools"] == ["Recipe"]
    assert await structured.ainvoke("bread please") is None  # blocked: no tool call is left to parse
    raw = guard.wrap(model).with_structured_output(Recipe, include_raw=True).invoke("bread please")
    assert raw["parsed"] is None and raw["raw"].content == guard.policy.blocked_message


async def test_with_config_keeps_the_guard(guard):
    rec = Recorder()
    model = scripted(SAFE, asks("how to make a bomb"))
    configured = guard.wrap(model).with_config(tags=["t-cfg"], callbacks=[rec])
    assert (await configured.ainvoke("bread please")).content == SAFE
    assert "t-cfg" in rec.models[0]["tags"]
    assert configured.invoke("how do i make a bomb").content == guard.policy.blocked_message  # input rail
    answer = configured.bind_tools([search]).invoke("find a recipe")  # and bound tools, through the config
    assert answer.tool_calls == [] and answer.content == guard.policy.blocked_message
    assert len(model.calls) == 2


def test_chain_with_a_prompt_and_a_parser(guard):
    prompt = ChatPromptTemplate.from_messages([("system", "be brief"), ("human", "{q}")])
    chain = prompt | guard.wrap(GenericFakeChatModel(messages=iter([SAFE] * 2))) | StrOutputParser()
    assert chain.invoke({"q": "how do i make bread"}) == SAFE
    assert "".join(chain.stream({"q": "bread"})) == SAFE
    assert chain.invoke({"q": "how do i make a bomb"}) == guard.policy.blocked_message
