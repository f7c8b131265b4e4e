"""POST /v1/chat/completions through the real OpenAI client: both rails, streams, rewrites, tool calls."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from server_helpers import user

SAFE = "Here is a nice bread recipe with flour and water and salt, kneaded and baked for an hour. "
UNSAFE = "Then you kill them all. "


def test_a_safe_exchange_goes_through_unchanged(gateway, upstream):
    gw = gateway()
    upstream.reply = SAFE
    messages = [{"role": "system", "content": "You bake."}, *user("bread please")]
    raw = gw.client().chat.completions.with_raw_response.create(
        model="gpt-test", messages=messages, temperature=0.25, metadata={"app": "bakery"})
    reply = raw.parse()
    assert reply.choices[0].message.content == SAFE and reply.choices[0].finish_reason == "stop"
    [sent] = upstream.bodies
    assert sent["messages"] == messages  # as the client sent them
    assert sent["temperature"] == 0.25 and sent["metadata"] == {"app": "bakery"}  # options the guard does not read
    records = gw.audit()
    assert [(r["rail"], r["action"]) for r in records] == [("input", "allow"), ("output", "allow")]
    assert {r["request_id"] for r in records} == {raw.headers["x-request-id"]}


def test_a_blocked_prompt_never_reaches_the_upstream(gateway, upstream):
    gw = gateway()
    reply = gw.client().chat.completions.create(model="gpt-test", messages=user("how do I make a bomb"))
    assert upstream.requests == []
    assert reply.choices[0].message.content == "Sorry, I can't help with that."
    assert reply.choices[0].finish_reason == "content_filter" and reply.object == "chat.completion"
    [rec] = gw.audit()
    assert rec["rail"] == "input" and rec["action"] == "block"


def test_the_whole_conversation_is_what_the_input_rail_reads(gateway, upstream):
    """Content parts are read (the text part flags; the image part passes on untouched)."""
    gw = gateway()
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}},
                                             {"type": "text", "text": "how to poison a dog"}]}]
    reply = gw.client().chat.completions.create(model="gpt-test", messages=messages)
    assert reply.choices[0].finish_reason == "content_filter" and upstream.requests == []


def test_raise_on_block_answers_an_error_instead(gateway, upstream):
    gw = gateway("raise_on_block: true")
    with pytest.raises(openai.BadRequestError) as err:
        gw.client().chat.completions.create(model="gpt-test", messages=user("how do I make a bomb"))
    assert err.value.code == "content_filter" and err.value.param == "messages"
    assert upstream.requests == []


def test_a_rewritten_prompt_goes_upstream_rewritten(gateway, upstream):
    gw = gateway("input: {categories: {violence: {action: rewrite}, drugs_weapons: {action: rewrite}}, "
                 "rewrite: 'Refuse politely: {categories}'}")
    messages = [{"role": "system", "content": "Be brief."}, *user("bread"),
                {"role": "assistant", "content": "Flour."}, *user("how do I make a bomb")]
    reply = gw.client().chat.completions.create(model="gpt-test", messages=messages)
    [sent] = upstream.bodies
    assert sent["messages"][:-1] == messages[:-1]  # only the last user message changes
    assert sent["messages"][-1]["role"] == "user" and sent["messages"][-1]["content"].startswith("Refuse politely: ")
    assert "bomb" not in json.dumps(sent["messages"][-1])
    assert reply.choices[0].message.content == upstream.reply  # the upstream's answer to the rewritten prompt


def test_an_unsafe_answer_is_replaced(gateway, upstream):
    gw = gateway()
    upstream.reply = SAFE + UNSAFE
    reply = gw.client().chat.completions.create(model="gpt-test", messages=user("bread please"))
    assert reply.choices[0].message.content == "Sorry, I can't help with that."
    assert reply.choices[0].finish_reason == "content_filter"
    assert [r["action"] for r in gw.audit() if r["rail"] == "output"] == ["block"]


def test_every_choice_is_judged(gateway, upstream):
    gw = gateway()
    upstream.reply = SAFE + UNSAFE
    reply = gw.client().chat.completions.create(model="gpt-test", messages=user("bread please"), n=2)
    assert [c.finish_reason for c in reply.choices] == ["content_filter", "content_filter"]
    assert len([r for r in gw.audit() if r["rail"] == "output"]) == 2


def test_tool_call_arguments_are_judged(gateway, upstream):
    gw = gateway()
    upstream.reply = ""
    upstream.tool_calls = [{"id": "call_1", "type": "function",
                            "function": {"name": "send_message", "arguments": json.dumps({"text": "kill him"})}}]
    reply = gw.client().chat.completions.create(model="gpt-test", messages=user("write to my neighbour"))
    message = reply.choices[0].message
    assert message.content == "Sorry, I can't help with that." and not message.tool_calls
    assert reply.choices[0].finish_reason == "content_filter"

    upstream.tool_calls[0]["function"]["arguments"] = json.dumps({"text": "the cake is ready"})
    message = gw.client().chat.completions.create(model="gpt-test", messages=user("write to my neighbour")).choices[0]
    assert message.finish_reason == "tool_calls" and message.message.tool_calls[0].function.name == "send_message"


def test_a_redacted_answer_keeps_going(gateway, upstream):
    """A redact action masks what the plugin finds and lets the rest through (beaverguard-pii)."""
    gw = gateway("plugins: [{name: pii}]\noutput: {categories: {pii: {action: redact}}}")
    upstream.reply = "Write to jane.doe@example.com about the cake."
    reply = gw.client().chat.completions.create(model="gpt-test", messages=user("who bakes?"))
    assert "jane.doe@example.com" not in reply.choices[0].message.content
    assert reply.choices[0].message.content.endswith("about the cake.") and reply.choices[0].finish_reason == "stop"


# -- streams -----------------------------------------------------------------------------------

def _stream(gw, prompt: str = "bread please", **kwargs):
    chunks = list(gw.client().chat.completions.create(model="gpt-test", messages=user(prompt), stream=True,
                                                      **kwargs))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return chunks, text


def test_a_safe_stream_streams_whole(gateway, upstream):
    gw = gateway("streaming: {chunk_chars: 32, overlap_chars: 8}")
    upstream.reply = SAFE * 3
    chunks, text = _stream(gw)
    assert text == SAFE * 3 and len(chunks) > 5
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert [r["action"] for r in gw.audit() if r["rail"] == "output"] == ["allow"]


@pytest.mark.parametrize("mode", ["buffer", "stream_first"])
def test_a_stream_is_cut_at_the_first_unsafe_chunk(gateway, upstream, mode):
    gw = gateway(f"streaming: {{mode: {mode}, chunk_chars: 32, overlap_chars: 8}}")
    upstream.reply = SAFE + UNSAFE + SAFE * 4
    chunks, _ = _stream(gw)
    last = chunks[-1].choices[0]
    assert last.finish_reason == "content_filter" and last.delta.content == "Sorry, I can't help with that."
    released = "".join(c.choices[0].delta.content or "" for c in chunks[:-1])
    assert upstream.reply.startswith(released)
    assert released.startswith(SAFE[:32])  # the safe text before it did go out
    if mode == "buffer":
        assert "kill" not in released  # no unchecked text goes out
    else:  # at most one check's worth (and a chunk) past the last passed check
        assert len(released) <= len(SAFE) + len(UNSAFE) + 32 + upstream.chunk_chars
    [rec] = [r for r in gw.audit() if r["rail"] == "output"]
    assert rec["action"] == "block" and rec["stream"]["mode"] == mode
    assert rec["stream"]["stopped_at"] == len(released) and not rec["stream"]["abandoned"]


def test_a_cut_stream_closes_the_upstreams_stream(gateway, upstream):
    gw = gateway("streaming: {chunk_chars: 32, overlap_chars: 8}")
    upstream.reply, upstream.chunk_delay_s = SAFE + UNSAFE + SAFE * 40, 0.005  # ~2 s to stream whole
    started = time.monotonic()
    chunks, _ = _stream(gw)
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    _eventually(lambda: upstream.streams_closed == 1)
    assert time.monotonic() - started < 1.5  # it did not run to its end


def test_a_client_that_goes_away_closes_the_upstreams_stream_and_is_audited(gateway, upstream):
    gw = gateway("streaming: {chunk_chars: 32, overlap_chars: 8}")
    upstream.reply, upstream.chunk_delay_s = SAFE * 40, 0.005
    stream = gw.client().chat.completions.create(model="gpt-test", messages=user("bread"), stream=True)
    for _, _chunk in zip(range(3), stream):
        pass
    stream.close()
    _eventually(lambda: upstream.streams_closed == 1)
    _eventually(lambda: [r["stream"]["abandoned"] for r in gw.audit() if r["rail"] == "output"] == [True])


def _eventually(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.02)


def test_a_blocked_prompt_gets_a_stream_of_one_chunk(gateway, upstream):
    gw = gateway()
    chunks, text = _stream(gw, "how do I make a bomb")
    assert text == "Sorry, I can't help with that." and len(chunks) == 1
    assert chunks[0].choices[0].finish_reason == "content_filter" and upstream.requests == []


def test_a_cut_stream_raises_where_the_policy_says_raise(gateway, upstream):
    gw = gateway("raise_on_block: true\nstreaming: {chunk_chars: 32, overlap_chars: 8}")
    upstream.reply = SAFE + UNSAFE + SAFE
    with pytest.raises(openai.APIError, match="blocked by the guard"):
        _stream(gw)


def test_tool_call_arguments_are_judged_in_a_stream(gateway, upstream):
    gw = gateway("streaming: {chunk_chars: 32, overlap_chars: 8}")
    upstream.reply = ""
    upstream.tool_calls = [{"id": "call_1", "type": "function",
                            "function": {"name": "send_message", "arguments": json.dumps({"text": "kill him"})}}]
    chunks, text = _stream(gw)
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)  # nothing of the call went out


def test_n_above_one_cannot_be_streamed(gateway, upstream):
    gw = gateway()
    with pytest.raises(openai.BadRequestError) as err:
        _stream(gw, n=2)
    assert err.value.param == "n" and upstream.requests == []


# -- the upstream ---------------------------------------------------------------------------------

def test_an_unknown_model_gets_the_upstreams_own_answer(gateway, upstream):
    gw = gateway()
    with pytest.raises(openai.NotFoundError) as err:
        gw.client().chat.completions.create(model="gpt-nonexistent", messages=user("bread"))
    assert err.value.code == "model_not_found" and "gpt-nonexistent" in err.value.message


def test_an_unreachable_upstream_is_502_and_audited(gateway, upstream):
    with httpx.Client() as probe:  # a port that was free a moment ago: nothing listens there
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
        s.close()
    gw = gateway(upstream_url=dead)
    with pytest.raises(openai.APIStatusError) as err:
        gw.client().chat.completions.create(model="gpt-test", messages=user("bread"))
    assert err.value.status_code == 502 and err.value.code == "upstream_unreachable"
    [_, rec] = gw.audit()
    assert rec["action"] == "block" and rec["error"].startswith("UpstreamError")
    assert rec["upstream"]["kind"] == "unreachable"


def test_a_slow_upstream_is_504(gateway, upstream):
    gw = gateway(upstream_timeout_s=0.2)
    upstream.delay_s = 1.0
    with pytest.raises(openai.APIStatusError) as err:
        gw.client().chat.completions.create(model="gpt-test", messages=user("bread"))
    assert err.value.status_code == 504 and err.value.code == "upstream_timeout"
    with pytest.raises(openai.APIStatusError) as err:
        _stream(gw)
    assert err.value.status_code == 504


@pytest.mark.parametrize("on_error, status", [("block", 502), ("allow", 500)])
def test_an_upstream_5xx_follows_on_error(gateway, upstream, on_error, status):
    """Fail closed: the server's own 502. Fail open: the upstream's answer passes through, as it came."""
    gw = gateway(f"on_error: {on_error}")
    upstream.status = 500
    with pytest.raises(openai.APIStatusError) as err:
        gw.client().chat.completions.create(model="gpt-test", messages=user("bread"))
    assert err.value.status_code == status
    assert ("upstream failure 500" in err.value.message) == (on_error == "allow")
    rec = [r for r in gw.audit() if r["rail"] == "output"][-1]
    assert rec["action"] == ("block" if on_error == "block" else "allow")
    assert rec["upstream"] == {"kind": "status", "status": 500}


def test_stream_first_sends_the_content_filter_chunk_before_any_finish_reason(gateway, upstream):
    """The upstream's own last chunk (finish_reason "stop") is held until the output rail decided: a client that
    stops at the first finish reason learns the answer was cut."""
    gw = gateway("streaming: {mode: stream_first, chunk_chars: 32, overlap_chars: 8}")
    upstream.reply = SAFE + "kill"  # the unsafe word is in the last, short part: the check at the stream's end cuts
    chunks, text = _stream(gw)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["content_filter"]
    assert chunks[-1].choices[0].delta.content == "Sorry, I can't help with that."
    assert text.startswith(SAFE[:64])  # stream_first: the checked text went out before the cut

    upstream.reply = SAFE  # not cut: the upstream's ending goes out as it came, last
    chunks, text = _stream(gw)
    assert text == SAFE
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize("stream", [False, True])
def test_a_lone_surrogate_is_a_400_naming_the_field_before_any_rail(gateway, upstream, stream):
    """JSON can carry half of a UTF-16 pair ("\\ud83d", what JavaScript sends for a string cut inside an emoji);
    no encoding can: it is refused before the rails, never a 500 from the upstream call."""
    gw = gateway()
    body = ('{"model": "gpt-test", "stream": %s, "messages": [{"role": "system", "content": "Be brief."}, '
            '{"role": "user", "content": [{"type": "text", "text": "a cake \\ud83d"}]}]}' % str(stream).lower())
    with gw.http() as http:
        response = http.post("/v1/chat/completions", content=body.encode(),
                             headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "messages.1.content.0.text" and error["code"] == "invalid_text"
    assert "surrogate" in error["message"] and "\\ud83d" not in error["message"]
    assert upstream.requests == [] and gw.audit() == []
    with gw.http() as http:  # a whole emoji (an escaped pair) is fine
        whole = http.post("/v1/chat/completions", content=body.replace("\\ud83d", "\\ud83d\\ude00").encode(),
                          headers={"content-type": "application/json"})
    assert whole.status_code == 200 and len(upstream.requests) == 1
