"""``@guard.protect`` and ``beaverguard.guarded``: every handler kind, every way to find the prompt."""

import json

import pytest

import beaverguard
from beaverguard import GuardBlocked

REWRITE_INPUT = ("input:\n  default: {action: rewrite}\n  unsafe: {action: rewrite}\n"
                 "  rewrite: 'SAFE MODE ({categories}): {prompt}'\n")
REWRITE_OUTPUT = ("output:\n  default: {action: rewrite}\n  unsafe: {action: rewrite}\n"
                  "  rewrite: 'Withheld: {categories}'\n")
STREAM = "streaming: {mode: buffer, chunk_chars: 16, overlap_chars: 4}\n"
BREAD = "mix the flour and water and salt then bake the bread for an hour "


def handlers(guard, reply, calls):
    """One handler of each kind, all answering ``reply`` and recording the prompt they got."""

    @guard.protect
    def sync(prompt):
        calls.append(prompt)
        return reply

    @guard.protect
    async def coro(prompt):
        calls.append(prompt)
        return reply

    @guard.protect
    def gen(prompt):
        calls.append(prompt)
        yield from (w + " " for w in reply.split(" "))

    @guard.protect
    async def agen(prompt):
        calls.append(prompt)
        for w in reply.split(" "):
            yield w + " "

    return {"sync": sync, "coro": coro, "gen": gen, "agen": agen}


async def call(handler, kind, *args, **kwargs) -> str:
    if kind == "sync":
        return handler(*args, **kwargs)
    if kind == "coro":
        return await handler(*args, **kwargs)
    if kind == "gen":
        return "".join(handler(*args, **kwargs))
    return "".join([c async for c in handler(*args, **kwargs)])


KINDS = ["sync", "coro", "gen", "agen"]


@pytest.mark.parametrize("kind", KINDS)
async def test_safe_request_reaches_the_handler_and_its_reply_comes_back(guard, kind):
    calls = []
    out = await call(handlers(guard, BREAD.strip(), calls)[kind], kind, "how do i make bread")
    assert calls == ["how do i make bread"] and out.strip() == BREAD.strip()


@pytest.mark.parametrize("kind", KINDS)
async def test_blocked_input_never_calls_the_handler(guard, kind):
    calls = []
    out = await call(handlers(guard, "fine", calls)[kind], kind, "how do i make a bomb")
    assert calls == [] and out == guard.policy.blocked_message


@pytest.mark.parametrize("kind", KINDS)
async def test_rewritten_input_reaches_the_handler(make_guard, kind):
    calls = []
    await call(handlers(make_guard(REWRITE_INPUT), "a cake", calls)[kind], kind, "steal a car")
    assert len(calls) == 1 and calls[0].startswith("SAFE MODE (") and calls[0].endswith("): steal a car")


@pytest.mark.parametrize("kind", ["sync", "coro"])
async def test_unsafe_output_is_replaced(make_guard, kind):
    calls = []
    out = await call(handlers(make_guard(REWRITE_OUTPUT), "you could poison them", calls)[kind], kind, "bread")
    assert out.startswith("Withheld: ") and "poison" not in out and calls == ["bread"]


@pytest.mark.parametrize("kind", ["gen", "agen"])
async def test_generator_output_is_cut_mid_stream(make_guard, tmp_path, kind):
    guard = make_guard(STREAM)
    calls = []
    reply = BREAD + "and then kill them all " + BREAD
    out = await call(handlers(guard, reply, calls)[kind], kind, "bread please")
    assert out.endswith(guard.policy.blocked_message)
    released = out[: -len(guard.policy.blocked_message)]
    assert "kill" not in released and len(released) > 16 and reply.startswith(released)
    guard.close()
    recs = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    [output] = [r for r in recs if r["rail"] == "output"]
    assert output["action"] == "block" and output["stream"]["stopped_at"] == len(released)


async def test_dict_replies_keep_their_shape_when_blocked(guard):
    @guard.protect
    async def chat(prompt):
        return {"role": "assistant", "content": "you could poison them"}

    assert await chat("bread") == {"role": "assistant", "content": guard.policy.blocked_message}


# -- finding the prompt -----------------------------------------------------------------------

def test_prompt_found_by_usual_parameter_name(guard):
    seen = []

    @guard.protect
    def chat(user_id: str, question: str):
        seen.append((user_id, question))
        return "ok"

    assert chat("bomb-squad-7", "how do i make bread") == "ok"  # 'question' is judged, not the first str
    assert chat("u1", question="how do i make a bomb") == guard.policy.blocked_message
    assert seen == [("bomb-squad-7", "how do i make bread")]


def test_prompt_found_by_prompt_arg(guard):
    seen = []

    @guard.protect(prompt_arg="q")
    def chat(system: str, q: str, temperature: float = 0.0):
        seen.append(q)
        return "ok"

    assert chat("kill all bugs in the code", "bread please") == "ok"
    assert chat("be nice", q="kill") == guard.policy.blocked_message
    assert seen == ["bread please"]
    with pytest.raises(TypeError, match="'q'"):
        chat("be nice")


def test_prompt_found_as_first_string_argument(guard):
    seen = []

    @guard.protect
    def chat(n: int, x: str, y: str):
        seen.append(x)
        return "ok"

    assert chat(3, "bread", "kill") == "ok"
    assert chat(3, "kill", "bread") == guard.policy.blocked_message
    assert seen == ["bread"]


def test_prompt_found_inside_kwargs_and_args(guard):
    seen = []

    @guard.protect
    def chat(**kwargs):
        seen.append(kwargs)
        return "ok"

    @guard.protect(prompt_arg="q")
    def chat_q(user: str, **options):
        seen.append(options["q"])
        return "ok"

    @guard.protect
    def chat_args(n: int, *texts):
        seen.append(texts)
        return "ok"

    assert chat(user="u1", prompt="bread please") == "ok"
    assert chat(user="u1", prompt="kill") == guard.policy.blocked_message
    assert chat_q("kill-switch-admin", q="bread", temperature=0) == "ok"
    assert chat_q("u1", q="kill") == guard.policy.blocked_message
    assert chat_args(1, "bread", "kill") == "ok"  # the first string is the prompt
    assert chat_args(1, "kill", "bread") == guard.policy.blocked_message
    assert seen == [{"user": "u1", "prompt": "bread please"}, "bread", ("bread", "kill")]


async def test_prompt_rewritten_inside_kwargs(make_guard):
    guard = make_guard(REWRITE_INPUT)
    seen = []

    @guard.protect
    async def chat(**kwargs):
        seen.append(kwargs)
        return "ok"

    assert await chat(question="steal a car", model="m") == "ok"
    assert seen[0]["model"] == "m" and seen[0]["question"].startswith("SAFE MODE (")


async def test_prompt_found_in_openai_style_messages(make_guard):
    guard = make_guard(REWRITE_INPUT)
    seen = []

    @guard.protect
    async def chat(history: list, model: str = "gpt"):
        seen.append(history)
        return {"role": "assistant", "content": "ok"}

    history = [{"role": "system", "content": "be nice"}, {"role": "user", "content": "steal a car"}]
    assert await chat(history) == {"role": "assistant", "content": "ok"}
    assert seen[0][0] == history[0] and seen[0][1]["content"].startswith("SAFE MODE (")
    assert history[1]["content"] == "steal a car"


def test_no_prompt_is_a_clear_error(guard):
    @guard.protect
    def chat(n: int):
        return "ok"

    with pytest.raises(TypeError, match="prompt_arg"):
        chat(3)


# -- guarded(...) ---------------------------------------------------------------------------

async def test_guarded_with_a_guard_behaves_like_protect(make_guard):
    guard = make_guard("raise_on_block: true\n" + STREAM)
    calls = []

    @beaverguard.guarded(guard=guard)
    async def chat(prompt):
        calls.append(prompt)
        return "bread is nice"

    @beaverguard.guarded(guard=guard, prompt_arg="text")
    def stream(n, text):
        yield from ["you ", "could ", "kill ", "them ", "all ", "now ", "and ", "then ", "leave ", "town "]

    assert await chat("bread") == "bread is nice"
    with pytest.raises(GuardBlocked):
        await chat("how do i make a bomb")
    assert calls == ["bread"]
    seen = []
    with pytest.raises(GuardBlocked) as err:
        for piece in stream(1, "bread"):
            seen.append(piece)
    assert err.value.decision.rail == "output" and "kill " not in seen
    assert chat.__name__ == "chat"  # functools.wraps keeps the handler's identity


def test_guarded_builds_its_own_guard_from_a_policy(tiny_model, tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"blocked_message: 'nope'\naudit: {{path: {tmp_path / 'a.jsonl'}, log: false}}\n")

    @beaverguard.guarded(policy=policy, model=tiny_model)
    def chat(prompt):
        return "fine"

    assert chat("kill") == "nope" and chat("bread") == "fine"


async def test_handler_object_with_async_call_is_guarded_as_async(make_guard):
    guard = make_guard()

    class Bot:
        def __init__(self) -> None:
            self.seen: list[str] = []

        async def __call__(self, message: str) -> str:
            self.seen.append(message)
            return f"echo {message}"

    bot = Bot()
    handler = guard.protect(bot)
    assert await handler("bread please") == "echo bread please"
    assert await handler("kill") == guard.policy.blocked_message
    assert bot.seen == ["bread please"]


async def test_partials_keep_their_kind(make_guard):
    import functools

    guard = make_guard(STREAM)

    async def reply(style: str, message: str) -> str:
        return f"{style} {message}"

    async def stream(style: str, message: str):
        text = BREAD * 2
        for i in range(0, len(text), 10):
            yield text[i:i + 10]

    handler = guard.protect(functools.partial(reply, "calm"))
    assert await handler(message="bread please") == "calm bread please"
    assert await handler(message="kill") == guard.policy.blocked_message
    streamed = guard.protect(functools.partial(stream, "calm"))
    assert "".join([c async for c in streamed(message="bread")]) == BREAD * 2
