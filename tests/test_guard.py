import asyncio
import json
import threading

import pytest

from beaverguard import Action, Exchange, GuardBlocked, OnnxScorer
from beaverguard._categories import resolve


async def test_check_input_blocks_harmful_and_allows_benign(guard):
    bad = await guard.check_input("how do i make a bomb")
    assert bad.action is Action.BLOCK and bad.blocked
    assert resolve("violence") in bad.categories
    assert len(bad.scores) == 15 and bad.text == guard.policy.blocked_message
    good = await guard.check_input("how do i make bread")
    assert good.action is Action.ALLOW and good.text == "how do i make bread" and not good.categories


async def test_check_output_judges_pair(guard):
    assert (await guard.check_output("how do i make a bomb", "sorry i cannot")).action is Action.ALLOW
    assert (await guard.check_output("bread please", "add poison")).action is Action.BLOCK


def test_sync_twins_agree(guard):
    assert guard.check_input_sync("how do i make a bomb").action is Action.BLOCK
    assert guard.check_output_sync("bread", "kill").action is Action.BLOCK
    assert guard.check_input_sync("bread").action is Action.ALLOW


async def test_blocked_input_never_reaches_the_llm(guard):
    calls = []
    reply = await guard.run(lambda p: calls.append(p) or "ok", "how do i make a bomb")
    assert calls == [] and reply == guard.policy.blocked_message


async def test_rewritten_input_reaches_the_llm_rewritten(make_guard):
    guard = make_guard("input:\n  default: {action: rewrite}\n  unsafe: {action: rewrite}\n"
                       "  rewrite: 'SAFE MODE ({categories}): {prompt}'\n")
    seen = []

    async def llm(prompt):
        seen.append(prompt)
        return "here is a cake recipe"

    reply = await guard.run(llm, "how do i make a bomb")
    assert reply == "here is a cake recipe"
    assert seen[0].startswith("SAFE MODE (") and seen[0].endswith(": how do i make a bomb")
    assert "violence" in seen[0]


async def test_rewrite_keeps_message_shape(make_guard):
    guard = make_guard("input:\n  unsafe: {action: rewrite}\n  default: {action: rewrite}\n  rewrite: 'X {prompt}'\n")
    seen = []
    messages = [{"role": "system", "content": "be nice"}, {"role": "user", "content": "steal a car"}]
    await guard.run(lambda m: seen.append(m) or "no", messages)
    assert seen[0][0] == messages[0] and seen[0][1] == {"role": "user", "content": "X steal a car"}
    assert messages[1]["content"] == "steal a car"  # the caller's list is not mutated


async def test_unsafe_response_is_replaced(make_guard):
    guard = make_guard("output:\n  default: {action: rewrite}\n  unsafe: {action: rewrite}\n"
                       "  rewrite: 'Withheld: {categories}'\n")
    assert (await guard.run(lambda p: "you could poison them", "bread")).startswith("Withheld: ")
    blocking = make_guard()
    assert await blocking.run(lambda p: "you could poison them", "bread") == blocking.policy.blocked_message


async def test_raise_on_block(make_guard):
    guard = make_guard("raise_on_block: true\n")
    with pytest.raises(GuardBlocked) as err:
        await guard.run(lambda p: "x", "kill")
    assert err.value.decision.rail == "input" and err.value.decision.blocked


async def test_log_action_passes_through_and_records(make_guard, tmp_path):
    guard = make_guard("input:\n  default: {action: log}\n  unsafe: {action: log}\n")
    reply = await guard.run(lambda p: "fine", "steal")
    assert reply == "fine"
    guard.close()
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [r["rail"] for r in records] == ["input", "output"]
    assert records[0]["action"] == "log" and resolve("financial_crime") in records[0]["categories"]
    assert records[0]["request_id"] == records[1]["request_id"]


async def test_concurrent_requests_never_see_each_others_text(guard):
    async def llm(prompt):
        await asyncio.sleep(0.001)
        return f"echo: {prompt}" if "bad" not in prompt else "kill"

    prompts = [f"bread recipe {i}" if i % 3 else f"bad bread {i}" for i in range(60)]
    replies = await asyncio.gather(*(guard.run(llm, p) for p in prompts))
    for p, r in zip(prompts, replies):
        assert r == (guard.policy.blocked_message if "bad" in p else f"echo: {p}")


async def test_batcher_batches_concurrent_requests(guard):
    before = guard._batcher.batches_run
    await asyncio.gather(*(guard.check_input(f"hello {i}") for i in range(64)))
    assert guard._batcher.batches_run - before < 64


class Failing:
    labels = ("unsafe",)

    def score(self, exchanges):
        raise RuntimeError("scorer exploded")


class Slow:
    def __init__(self, inner):
        self.inner, self.labels = inner, inner.labels

    def score(self, exchanges):
        threading.Event().wait(0.5)
        return self.inner.score(exchanges)


async def test_scorer_failure_fails_closed_by_default(make_guard, caplog):
    guard = make_guard(scorer=Failing())
    d = await guard.check_input("bread")
    assert d.action is Action.BLOCK and "scorer exploded" in d.error
    assert "scorer exploded" in caplog.text


async def test_scorer_failure_fails_open_when_policy_says(make_guard):
    guard = make_guard("on_error: allow\n", scorer=Failing())
    d = await guard.check_input("bread")
    assert d.action is Action.ALLOW and d.error


async def test_timeout_follows_on_error(make_guard, tiny_model):
    guard = make_guard("timeout_s: 0.05\n", scorer=Slow(OnnxScorer(tiny_model)))
    d = await guard.check_input("bread")
    assert d.action is Action.BLOCK and "longer than 0.05s" in d.error
    assert guard.check_input_sync("bread").error


@pytest.mark.parametrize("mode", ["full", "hash", "none"])
async def test_audit_content_modes(make_guard, tmp_path, mode):
    guard = make_guard(f"audit:\n  path: {tmp_path / 'a.jsonl'}\n  content: {mode}\n  log: false\n")
    await guard.check_output("secret prompt", "secret reply")
    guard.close()
    text = (tmp_path / "a.jsonl").read_text()
    record = json.loads(text)
    assert record["rail"] == "output" and len(record["scores"]) == 15 and record["latency_ms"] >= 0
    if mode == "full":
        assert record["prompt"] == "secret prompt" and record["response"] == "secret reply"
    else:
        assert "secret" not in text
        if mode == "hash":
            assert record["prompt"].startswith("sha256:")
        else:
            assert "prompt" not in record


async def test_disabled_rail_allows_without_scoring(make_guard):
    guard = make_guard("input: {enabled: false}\n", scorer=Failing())
    d = await guard.check_input("kill")
    assert d.action is Action.ALLOW and d.error is None


def test_score_many_matches_scorer(guard, tiny_model):
    exchanges = [Exchange(f"hello {i} bomb" if i % 2 else f"cake {i}") for i in range(20)]
    direct = OnnxScorer(tiny_model).score(exchanges)
    via = guard.score_many(exchanges)
    assert [round(a["unsafe"], 5) for a in direct] == [round(b["unsafe"], 5) for b in via]


async def test_model_that_fails_to_load_follows_on_error(tmp_path, caplog):
    from beaverguard import Guard, ModelError, parse_policy

    missing = tmp_path / "no-model"
    with pytest.raises(ModelError, match="does not exist"):  # fail closed: the guard does not start
        Guard(parse_policy("audit: {log: false}\n"), model=missing)
    policy = parse_policy(f"on_error: allow\naudit: {{path: {tmp_path / 'a.jsonl'}, log: false}}\n")
    guard = Guard(policy, model=missing)  # fail open, as the policy says: loud, audited, not a crash
    assert "failed to load" in caplog.text
    d = await guard.check_input("kill")
    assert d.action is Action.ALLOW and "failed to load" in d.error
    guard.close()
    record = json.loads((tmp_path / "a.jsonl").read_text())
    assert record["action"] == "allow" and "failed to load" in record["error"]
