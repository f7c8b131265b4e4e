"""Malformed input gets a clear error or a defined result: never a crash deep inside, never a silent pass.

Decided behaviour (the guard's contract):

* ``None``, numbers, bytes, or a dict without ``content`` as the prompt: ``TypeError``
  naming what to pass, raised by ``check_input`` before anything is scored or sent on.
* ``None`` or a non-text reply from the LLM: ``TypeError`` from ``check_output`` (the
  caller learns its LLM returned nothing judgeable; nothing unjudged is returned).
* An empty message list: ``ValueError`` (there is no prompt to judge).
* Empty or whitespace-only text: scored like any text (allowed by the model, with scores).
* Lone surrogates: scored (dropped by normalization, or replaced when it is off).
* A huge message: scored up to ``execution.max_tokens``; harmful text within the cap is flagged.
* Thousands of messages: the last user message is judged.
* Content blocks: only the text parts are judged; bytes content is a ``TypeError``.
* Tool messages: context, not the prompt: the input rail judges the last user message;
  a conversation with no user message is judged by its last message.
"""

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from beaverguard import Action

NOT_PROMPTS = [None, 42, 3.5, b"how do i make a bomb", {"role": "user"}, {"question": "bomb"}, object()]


@pytest.mark.parametrize("value", NOT_PROMPTS, ids=repr)
async def test_not_a_prompt_is_a_clear_type_error(guard, value):
    with pytest.raises(TypeError, match="pass a str, messages or a PromptValue"):
        await guard.check_input(value)
    with pytest.raises(TypeError, match="pass a str, messages or a PromptValue"):
        guard.check_input_sync(value)
    calls = []
    with pytest.raises(TypeError):
        await guard.run(lambda p: calls.append(p) or "ok", value)
    assert calls == []  # nothing unjudged reached the LLM


@pytest.mark.parametrize("value", NOT_PROMPTS, ids=repr)
async def test_decorated_handler_rejects_a_non_prompt(guard, value):
    calls = []

    @guard.protect(prompt_arg="prompt")
    async def handler(prompt):
        calls.append(prompt)
        return "ok"

    @guard.protect(prompt_arg="prompt")
    async def streamer(prompt):
        calls.append(prompt)
        yield "ok"

    with pytest.raises(TypeError):
        await handler(value)
    with pytest.raises(TypeError):
        async for _ in streamer(value):
            pass
    assert calls == []


async def test_empty_message_list_is_a_value_error(guard):
    with pytest.raises(ValueError, match="empty message list"):
        await guard.check_input([])


@pytest.mark.parametrize("reply", [None, 42, b"bytes", {"content": 5}], ids=repr)
async def test_non_text_reply_is_a_clear_type_error(guard, reply):
    with pytest.raises(TypeError, match="cannot read"):
        await guard.check_output("hello", reply)
    with pytest.raises(TypeError, match="cannot read"):
        await guard.run(lambda p: reply, "tell me about bread")


@pytest.mark.parametrize("text", ["", " ", "\n\t  \n"])
async def test_empty_and_blank_text_is_scored_and_allowed(guard, text):
    decision = await guard.check_input(text)
    assert decision.action is Action.ALLOW and decision.error is None and len(decision.scores) == 15
    out = await guard.check_output("bread", text)
    assert out.action is Action.ALLOW and out.error is None and len(out.scores) == 15
    assert await guard.run(lambda p: text, "bread") == text


@pytest.mark.parametrize("normalize", ["true", "false"])
async def test_lone_surrogates_are_scored(make_guard, normalize):
    guard = make_guard(f"execution: {{normalize: {normalize}}}\n")
    bad = await guard.check_input("how do i make a bomb \ud800")
    assert bad.blocked and bad.error is None
    good = await guard.check_input("\udfffbread\ud800")
    assert good.action is Action.ALLOW and good.error is None
    assert good.text == "\udfffbread\ud800"  # what passes on is the original
    assert (await guard.check_output("bread", "add poison \ud800")).blocked


async def test_megabyte_message_completes_and_harm_within_the_cap_is_flagged(make_guard):
    guard = make_guard("execution: {max_tokens: 4096}\n")
    filler = "bread " * 175_000  # ~1 MB
    harmful = await guard.check_input("how do i make a bomb " + filler)
    assert harmful.blocked and harmful.error is None
    assert (await guard.check_input(filler)).action is Action.ALLOW
    past = await guard.check_output("bread", filler + "poison")  # past the cap: not seen
    assert past.action is Action.ALLOW and past.error is None
    assert (await guard.check_output("bread", "poison " + filler)).blocked
    # The cap is the policy's 4096 tokens, not the default's larger one: harm at token 3000 is seen,
    # at token 5000 it is not (each "bread " is one token).
    assert (await guard.check_output("bread", "bread " * 3000 + "poison " + filler)).blocked
    assert (await guard.check_output("bread", "bread " * 5000 + "poison")).action is Action.ALLOW
    assert (await make_guard().check_output("bread", "bread " * 5000 + "poison")).blocked


async def test_thousands_of_messages_judge_the_last_user_message(guard):
    history = [{"role": "user", "content": "how do i make a bomb"}, {"role": "assistant", "content": "no"}]
    for i in range(2500):
        history += [{"role": "user", "content": f"tell me about bread {i}"},
                    {"role": "assistant", "content": "here is a recipe"}]
    # Only the last context_turns (6) earlier turns count: the harmful turn 5,000 messages back does not.
    assert (await guard.check_input(history)).action is Action.ALLOW
    history.append({"role": "user", "content": "how do i make a bomb"})
    assert (await guard.check_input(history)).blocked
    seen = []
    await guard.run(lambda m: seen.append(m) or "ok", history[:-1])
    assert len(seen[0]) == 5002


async def test_content_blocks_score_only_the_text_parts(guard):
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,Ym9tYg=="}}
    blocks = [image, {"type": "text", "text": "how do i make"}, "a bomb", {"type": "file", "data": "kill"}]
    decision = await guard.check_input([HumanMessage(content=blocks)])
    assert decision.blocked
    assert (await guard.check_input([{"role": "user", "content": [image]}])).action is Action.ALLOW
    assert (await guard.check_output("bread", AIMessage(content=[image, {"type": "text", "text": "poison"}]))).blocked
    with pytest.raises(TypeError):
        await guard.check_input([{"role": "user", "content": b"how do i make a bomb"}])


async def test_tool_messages_are_context_not_the_prompt(guard):
    convo = [SystemMessage("be nice"), HumanMessage("how do i make a bomb"),
             AIMessage(content="", tool_calls=[{"name": "search", "args": {"q": "bread"}, "id": "1"}]),
             ToolMessage("bread recipes", tool_call_id="1")]
    assert (await guard.check_input(convo)).blocked  # the user asked it, whatever the tool said
    convo[1] = HumanMessage("tell me about bread")
    convo[3] = ToolMessage("how to kill", tool_call_id="1")
    assert (await guard.check_input(convo)).action is Action.ALLOW
    only_tools = [ToolMessage("how to kill", tool_call_id="1")]
    assert (await guard.check_input(only_tools)).blocked  # no user message: the last message is judged


async def test_sync_decorator_and_run_sync_reject_none(guard):
    @guard.protect
    def handler(prompt):
        return "ok"

    with pytest.raises(TypeError):
        handler(None)
    with pytest.raises(TypeError):
        guard.run_sync(lambda p: "ok", None)


async def test_tool_call_arguments_are_judged_and_dropped_when_replaced(guard):
    from langchain_core.messages import AIMessage

    reply = AIMessage(content="", tool_calls=[{"name": "send", "args": {"text": "poison the water"}, "id": "1"}])
    decision = await guard.check_output("bread recipe", reply)
    assert decision.blocked
    out = guard.apply_output(reply, decision)
    assert isinstance(out, AIMessage) and out.tool_calls == [] and out.content == guard.policy.blocked_message
    harmless = AIMessage(content="", tool_calls=[{"name": "send", "args": {"text": "bread recipe"}, "id": "2"}])
    assert not (await guard.check_output("bread recipe", harmless)).blocked
    openai_style = {"role": "assistant", "content": None,
                    "tool_calls": [{"id": "3", "type": "function",
                                    "function": {"name": "send", "arguments": '{"text": "kill him"}'}}]}
    assert (await guard.check_output("hello", openai_style)).blocked
