"""The guarded runnable (``GuardedRunnable``) around chat models and chains, on langchain-core's own fake models.

``guard.wrap(chat_model)`` returns the guarded chat model (tests/test_langchain_chat_model.py); the
runnable still guards chains and callables, and chat models where it is built directly, as here.
"""

import json

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models.fake_chat_models import (
    FakeListChatModel,
    FakeMessagesListChatModel,
    GenericFakeChatModel,
)
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage, ToolMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from langchain_helpers import outputs, text

from beaverguard import GuardBlocked
from beaverguard.langchain import GuardedRunnable

REWRITE_INPUT = ("input:\n  default: {action: rewrite}\n  unsafe: {action: rewrite}\n"
                 "  rewrite: 'SAFE MODE ({categories}): {prompt}'\n")
REWRITE_OUTPUT = ("output:\n  default: {action: rewrite}\n  unsafe: {action: rewrite}\n"
                  "  rewrite: 'Withheld: {categories}'\n")


class Recorder(BaseCallbackHandler):
    """Records the runs LangChain reports, so tests can see what the model was given."""

    run_inline = True

    def __init__(self) -> None:
        self.chains: list[dict] = []
        self.models: list[dict] = []
        self.errors: list[BaseException] = []

    def on_chain_start(self, serialized, inputs, *, run_id, parent_run_id=None, tags=None, metadata=None, **kw):
        self.chains.append({"name": kw.get("name"), "run_id": run_id, "parent": parent_run_id})

    def on_chat_model_start(self, serialized, messages, *, run_id, parent_run_id=None, tags=None, metadata=None,
                            **kw):
        self.models.append({"messages": messages[0], "run_id": run_id, "parent": parent_run_id,
                            "tags": tags or [], "metadata": metadata or {}})

    def on_chain_error(self, error, *, run_id, parent_run_id=None, **kw):
        self.errors.append(error)


def model_saying(*replies: str) -> GenericFakeChatModel:
    """A chat model that answers with ``replies`` in turn and fails if called once more."""
    return GenericFakeChatModel(messages=iter(replies))



# -- invoke / ainvoke / stream / astream ---------------------------------------------------

async def test_allowed_request_passes_through_every_entry_point(guard):
    reply = "here is a bread recipe with flour and water"
    wrapped = GuardedRunnable(guard, model_saying(*[reply] * 4))
    assert (out := wrapped.invoke("how do i make bread")) == AIMessage(content=reply, id=out.id)
    assert isinstance(out, AIMessage) and out.content == reply
    assert (await wrapped.ainvoke("how do i make bread")).content == reply
    chunks = list(wrapped.stream("how do i make bread"))
    assert len(chunks) > 1 and all(isinstance(c, AIMessageChunk) for c in chunks) and text(chunks) == reply
    achunks = [c async for c in wrapped.astream("how do i make bread")]
    assert len(achunks) > 1 and all(isinstance(c, AIMessageChunk) for c in achunks) and text(achunks) == reply



@pytest.mark.parametrize("call", ["invoke", "ainvoke", "stream", "astream", "batch", "abatch"])
async def test_blocked_input_never_reaches_the_model(guard, call):
    model = model_saying()  # any call would raise: it has nothing to say
    rec = Recorder()
    wrapped = GuardedRunnable(guard, model)
    config = {"callbacks": [rec]}
    prompt = "how do i make a bomb"
    out = await outputs(wrapped, call, [prompt, "kill him"] if "batch" in call else prompt, config)
    assert rec.models == []
    kind = AIMessageChunk if "stream" in call else AIMessage
    assert out and all(type(m) is kind and m.content == guard.policy.blocked_message for m in out)


@pytest.mark.parametrize("call", ["invoke", "ainvoke", "stream", "astream"])
async def test_rewritten_input_reaches_the_model_rewritten(make_guard, call):
    guard = make_guard(REWRITE_INPUT)
    rec = Recorder()
    wrapped = GuardedRunnable(guard, model_saying("here is a cake recipe"))
    messages = [SystemMessage("be brief"), HumanMessage("how do i make a bomb")]
    config = {"callbacks": [rec]}
    assert text(await outputs(wrapped, call, messages, config)) == "here is a cake recipe"
    [seen] = rec.models
    assert seen["messages"][0] == messages[0]
    assert seen["messages"][1].content.startswith("SAFE MODE (")
    assert seen["messages"][1].content.endswith("): how do i make a bomb")
    assert messages[1].content == "how do i make a bomb"  # the caller's messages are not changed


async def test_unsafe_response_is_replaced_in_invoke_and_keeps_its_type(make_guard):
    blocking = make_guard()
    out = GuardedRunnable(blocking, model_saying("you could poison them")).invoke("bread please")
    assert type(out) is AIMessage and out.content == blocking.policy.blocked_message
    rewriting = make_guard(REWRITE_OUTPUT)
    out = await GuardedRunnable(rewriting, model_saying("you could poison them")).ainvoke("bread please")
    assert type(out) is AIMessage and out.content.startswith("Withheld: ") and "poison" not in out.content


async def test_unsafe_response_is_cut_in_astream(make_guard):
    guard = make_guard("streaming: {chunk_chars: 16, overlap_chars: 4}\n")
    reply = "here is some bread for you and then poison the water of the town today"
    chunks = [c async for c in GuardedRunnable(guard, model_saying(reply)).astream("bread please")]
    assert all(type(c) is AIMessageChunk for c in chunks)
    released = text(chunks[:-1])
    assert reply.startswith(released) and "poison" not in released
    assert chunks[-1].content == guard.policy.blocked_message


async def test_batch_and_abatch_guard_each_item(guard):
    rec = Recorder()
    wrapped = GuardedRunnable(guard, FakeListChatModel(responses=["bread reply", "you could steal it"]))
    out = wrapped.batch(["bread please", "how to make a bomb", "cake please"],
                        {"callbacks": [rec], "max_concurrency": 1})
    assert [type(m) for m in out] == [AIMessage] * 3
    assert [m.content for m in out] == ["bread reply", guard.policy.blocked_message, guard.policy.blocked_message]
    assert len(rec.models) == 2  # the bomb prompt never reached the model

    rec = Recorder()
    wrapped = GuardedRunnable(guard, FakeMessagesListChatModel(responses=[AIMessage("cake reply")]))
    out = await wrapped.abatch(["cake please", "kill", "bread please"], {"callbacks": [rec]})
    assert [m.content for m in out] == ["cake reply", guard.policy.blocked_message, "cake reply"]
    assert len(rec.models) == 2


# -- composition ------------------------------------------------------------------------------

async def test_prompt_template_guard_and_parser_compose(guard):
    prompt = ChatPromptTemplate.from_messages([("system", "be brief"), ("human", "{q}")])
    reply = "mix flour and water then bake the bread"
    chain = prompt | GuardedRunnable(guard, model_saying(*[reply] * 6)) | StrOutputParser()
    assert chain.invoke({"q": "how do i make bread"}) == reply
    assert await chain.ainvoke({"q": "how do i make bread"}) == reply
    parts = list(chain.stream({"q": "how do i make bread"}))
    assert len(parts) > 1 and all(isinstance(p, str) for p in parts) and "".join(parts) == reply
    aparts = [p async for p in chain.astream({"q": "how do i make bread"})]
    assert len(aparts) > 1 and "".join(aparts) == reply
    assert chain.batch([{"q": "bread"}, {"q": "how do i make a bomb"}, {"q": "cake"}]) == [
        reply, guard.policy.blocked_message, reply]


async def test_prompt_value_is_rewritten_in_its_own_shape(make_guard):
    guard = make_guard(REWRITE_INPUT)
    rec = Recorder()
    chain = ChatPromptTemplate.from_messages([("system", "be brief"), ("human", "{q}")]) \
        | GuardedRunnable(guard, model_saying("fine")) | StrOutputParser()
    assert chain.invoke({"q": "steal a car"}, {"callbacks": [rec]}) == "fine"
    [seen] = rec.models
    assert seen["messages"][0].content == "be brief"
    assert seen["messages"][1].content.startswith("SAFE MODE (") and seen["messages"][1].content.endswith("steal a car")


# -- config and callbacks ---------------------------------------------------------------------

@pytest.mark.parametrize("call", ["invoke", "ainvoke", "stream", "astream"])
async def test_callbacks_tags_and_metadata_pass_to_the_model_as_a_child_run(guard, call):
    rec = Recorder()
    wrapped = GuardedRunnable(guard, model_saying("bread is nice"))
    before = dict(vars(wrapped))
    config = {"callbacks": [rec], "tags": ["t-outer"], "metadata": {"user": "u1"}}
    await outputs(wrapped, call, "bread", config)
    [chain] = rec.chains
    assert chain["name"] == "GuardedGenericFakeChatModel" and chain["parent"] is None
    [model] = rec.models
    assert model["parent"] == chain["run_id"]
    assert "t-outer" in model["tags"] and model["metadata"].get("user") == "u1"
    assert vars(wrapped) == before  # no per-call state on the runnable


def test_run_name_applies_to_the_guarded_run_only(guard):
    rec = Recorder()
    GuardedRunnable(guard, model_saying("bread")).invoke("bread", {"callbacks": [rec], "run_name": "my-guard"})
    assert [c["name"] for c in rec.chains] == ["my-guard"]
    assert len(rec.models) == 1 and rec.models[0]["parent"] == rec.chains[0]["run_id"]


# -- raise_on_block ---------------------------------------------------------------------------

@pytest.mark.parametrize("call", ["invoke", "ainvoke", "stream", "astream"])
async def test_raise_on_block_propagates_and_reports_a_chain_error(make_guard, call):
    guard = make_guard("raise_on_block: true\n")
    rec = Recorder()
    wrapped = GuardedRunnable(guard, model_saying())
    config = {"callbacks": [rec]}
    with pytest.raises(GuardBlocked) as err:
        await outputs(wrapped, call, "kill", config)
    assert err.value.decision.rail == "input"
    assert rec.models == [] and len(rec.errors) == 1 and isinstance(rec.errors[0], GuardBlocked)


@pytest.mark.parametrize("call", ["invoke", "astream"])
async def test_raise_on_block_on_the_output_rail(make_guard, call):
    guard = make_guard("raise_on_block: true\nstreaming: {chunk_chars: 16, overlap_chars: 0}\n")
    rec = Recorder()
    wrapped = GuardedRunnable(guard, model_saying("bread is made of flour and then you kill them all"))
    seen = []
    with pytest.raises(GuardBlocked) as err:
        if call == "invoke":
            wrapped.invoke("bread", {"callbacks": [rec]})
        else:
            async for c in wrapped.astream("bread", {"callbacks": [rec]}):
                seen.append(c.content)
    assert err.value.decision.rail == "output" and len(rec.errors) == 1
    assert "kill" not in "".join(seen)
    if call == "astream":  # the safe start went out before the raise
        assert seen and "bread is made of flour and then you kill them all".startswith("".join(seen))


# -- guard.run with chat inputs ---------------------------------------------------------------

async def test_run_finds_the_prompt_in_each_input_shape(guard):
    seen = []

    def llm(value):
        seen.append(value)
        return "a nice answer"

    prompt_value = ChatPromptTemplate.from_messages([("human", "{q}")]).invoke({"q": "how do i make a bomb"})
    bad_inputs = [
        [{"role": "system", "content": "be nice"}, {"role": "user", "content": "how do i make a bomb"}],
        [SystemMessage("be nice"), HumanMessage("how do i make a bomb")],
        [("system", "be nice"), ("human", "how do i make a bomb"), ("ai", "hello")],  # the last *user* turn
        prompt_value,
    ]
    for value in bad_inputs:
        assert await guard.run(llm, value) == guard.policy.blocked_message
    assert seen == []
    safe = ChatPromptTemplate.from_messages([("human", "{q}")]).invoke({"q": "bread please"})
    assert await guard.run(llm, safe) == "a nice answer" and seen == [safe]


async def test_only_text_blocks_are_judged(guard):
    def message(words):
        return [HumanMessage(content=[{"type": "text", "text": words},
                                      {"type": "image_url", "image_url": {"url": "https://x/kill-bomb.png"}}])]

    seen = []
    assert await guard.run(lambda m: seen.append(m) or "nice", message("what is in this picture")) == "nice"
    assert seen[0][0].content[1]["image_url"]["url"] == "https://x/kill-bomb.png"  # the image reaches the model
    assert await guard.run(lambda m: seen.append(m) or "nice", message("how to kill")) == guard.policy.blocked_message
    assert len(seen) == 1


async def test_rewrite_keeps_image_blocks(make_guard):
    guard = make_guard(REWRITE_INPUT)
    image = {"type": "image_url", "image_url": {"url": "https://x/cat.png"}}
    seen = []
    await guard.run(lambda m: seen.append(m) or "ok",
                    [{"role": "user", "content": [image, {"type": "text", "text": "steal this cat"}]}])
    content = seen[0][0]["content"]
    assert content[0] == image and content[1]["type"] == "text"
    assert content[1]["text"].startswith("SAFE MODE (") and content[1]["text"].endswith("steal this cat")


async def test_tool_messages_do_not_crash(guard):
    history = [
        HumanMessage("what is the weather today"),
        AIMessage("", tool_calls=[{"name": "weather", "args": {"city": "rome"}, "id": "call-1"}]),
        ToolMessage("sunny and nice", tool_call_id="call-1"),
    ]
    rec = Recorder()
    out = await GuardedRunnable(guard, model_saying("it is sunny")).ainvoke(history, {"callbacks": [rec]})
    assert out.content == "it is sunny" and rec.models[0]["messages"] == history
    assert await guard.run(lambda m: "it is sunny", [ToolMessage("kill", tool_call_id="c")]) == \
        guard.policy.blocked_message  # no user turn: the last message is judged


async def test_a_dict_without_content_is_refused_not_judged_empty(guard):
    with pytest.raises(TypeError, match="without 'content'"):
        await guard.run(lambda p: "x", {"question": "how do i make a bomb"})


async def test_stream_audits_one_output_record_with_the_input_record(guard, tmp_path):
    [c async for c in GuardedRunnable(guard, model_saying("bread is nice")).astream("bread")]
    guard.close()
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [r["rail"] for r in records] == ["input", "output"]
    assert records[0]["request_id"] == records[1]["request_id"] and records[1]["stream"]["stopped_at"] is None
