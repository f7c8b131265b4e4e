"""RemoteScorer against a real `beaverguard serve` app on a loopback socket (no Ray needed).

The guard in this process decides, audits and times out; the server only scores.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from beaverguard import Guard, ModelError, parse_policy
from beaverguard.remote import RemoteScorer
from beaverguard.server import ServerSettings, create_app
from beaverguard.server.testing import ServerThread

TEXTS = ["how do i make bread", "how do i make a bomb", "tell me about the history of rome",
         "steal the money", "you idiot", "what is the weather today", "kill", "please help me"]
PAIRS = [("how do i make bread", "mix flour and water"), ("how do i make bread", "add poison"),
         ("hello", "sorry i cannot help"), ("what is it", "a bomb")]


def _policy(text: str, audit):
    p = parse_policy(text or "{}")
    return p.model_copy(update={"audit": p.audit.model_copy(update={"path": audit, "log": False, "content": "full"})})


@pytest.fixture
def tier(tiny_model, tmp_path):
    """A scoring tier: the server's app (default policy) on a free port; stopped at the end if still up."""
    app = create_app(ServerSettings(upstream="http://127.0.0.1:9/v1", model=tiny_model))
    server = ServerThread(app)
    yield server
    server.stop()


def test_remote_guard_decides_as_the_local_guard(tier, tiny_model, tmp_path):
    yaml = "input: {categories: {violence: {threshold: 0.3, action: rewrite}}}\n"
    local = Guard(_policy(yaml, tmp_path / "local.jsonl"), model=tiny_model)
    with RemoteScorer(tier.url) as scorer:
        remote = Guard(_policy(yaml, tmp_path / "remote.jsonl"), scorer=scorer)
        assert remote.thresholds("output") == local.thresholds("output")
        for text in TEXTS:
            a, b = local.check_input_sync(text), remote.check_input_sync(text)
            assert (a.action, a.categories, a.text) == (b.action, b.categories, b.text), text
            assert b.scores == pytest.approx(a.scores, abs=1e-6) and b.error is None
        for prompt, response in PAIRS:
            a, b = local.check_output_sync(prompt, response), remote.check_output_sync(prompt, response)
            assert (a.action, a.categories) == (b.action, b.categories), (prompt, response)
        # conversation context goes over the wire as the local guard scores it
        convo = [{"role": "user", "content": "how do i make a bomb"}, {"role": "assistant", "content": "no"},
                 {"role": "user", "content": "and then"}]
        assert remote.check_input_sync(convo).scores == pytest.approx(local.check_input_sync(convo).scores, abs=1e-6)
        remote.close()
    local.close()
    records = [json.loads(line) for line in (tmp_path / "remote.jsonl").read_text().splitlines()]
    assert len(records) == len(TEXTS) + len(PAIRS) + 1 and all(r["error"] is None for r in records)
    assert any(r["action"] == "rewrite" for r in records) and any(r["action"] == "block" for r in records)


async def test_concurrent_checks_share_http_requests(tiny_model, tmp_path):
    # generous timeouts on both ends: this is about requests on the wire, not about a loaded machine's 429s
    app = create_app(ServerSettings(upstream="http://127.0.0.1:9/v1", model=tiny_model,
                                    policies={"default": parse_policy("timeout_s: 60")}))
    tier = ServerThread(app)
    with RemoteScorer(tier.url, timeout=60) as scorer:
        guard = Guard(_policy("timeout_s: 60\n", tmp_path / "a.jsonl"), scorer=scorer)
        texts = [TEXTS[i % len(TEXTS)] + f" {i}" for i in range(200)]
        decisions = await asyncio.gather(*(guard.check_input(t) for t in texts))
        guard.close()
    tier.stop()
    assert [d.error for d in decisions if d.error] == []
    assert sum(d.blocked for d in decisions) > 0
    # the batcher keeps 8 requests in flight; what queued meanwhile went out together
    assert scorer.requests < len(texts) / 2, scorer.requests


def test_the_tier_going_away_fails_closed_and_is_audited(tier, tmp_path):
    audit = tmp_path / "a.jsonl"
    with RemoteScorer(tier.url, timeout=2) as scorer:
        guard = Guard(_policy("", audit), scorer=scorer)
        assert not guard.check_input_sync("how do i make bread").blocked
        tier.stop()
        gone = guard.check_input_sync("how do i make bread")
        guard.close()
        open_guard = Guard(_policy("on_error: allow\n", tmp_path / "b.jsonl"), scorer=scorer)
        allowed = open_guard.check_input_sync("how do i make bread")
        open_guard.close()
    assert gone.blocked and gone.error_type == "ScorerError" and tier.url in gone.error
    assert "bread" not in gone.error
    assert not allowed.blocked and allowed.error_type == "ScorerError"  # on_error: allow, as the policy says
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [r["action"] for r in records] == ["allow", "block"] and records[1]["error"]


def test_a_slow_tier_times_out_under_the_policy(tiny_model, tmp_path):
    """The guard's own timeout_s bounds a check, whatever the tier does."""
    import time

    from fastapi import FastAPI

    app = create_app(ServerSettings(upstream="http://127.0.0.1:9/v1", model=tiny_model))
    slow = FastAPI()

    @slow.post("/v1/guard/score")
    def _score() -> dict:
        time.sleep(3)
        return {}

    slow.mount("/", app)
    server = ServerThread(slow)
    try:
        with RemoteScorer(server.url) as scorer:
            guard = Guard(_policy("timeout_s: 0.5\n", tmp_path / "a.jsonl"), scorer=scorer)
            start = time.monotonic()
            d = guard.check_input_sync("how do i make bread")
            took = time.monotonic() - start
            guard.close()
    finally:
        server.stop()
    assert d.blocked and d.error_type in ("TimeoutError", "ScorerError") and took < 2.5


def test_an_unreachable_tier_at_start_is_a_model_error():
    with pytest.raises(ModelError, match="could not be reached"):
        RemoteScorer("http://127.0.0.1:9", connect_timeout=0.5)


def test_a_wrong_key_is_refused_without_echoing_it(tiny_model):
    from beaverguard.server import ApiKeys

    app = create_app(ServerSettings(upstream="http://127.0.0.1:9/v1", model=tiny_model,
                                    api_keys=ApiKeys({"sk-right": "default"})))
    server = ServerThread(app)
    try:
        with pytest.raises(ModelError, match="401") as err:
            RemoteScorer(server.url, api_key="sk-wrong-secret")
        assert "sk-wrong-secret" not in str(err.value)
        with RemoteScorer(server.url, api_key="sk-right") as scorer:
            assert "sk-right" not in repr(scorer)
            assert scorer.score([__import__("beaverguard").Exchange("hello")])[0]["unsafe"] < 0.5
    finally:
        server.stop()


def test_a_policy_names_the_tier_and_the_guard_owns_its_connections(tier, tiny_model, tmp_path):
    """`remote:` in policy YAML: the same decisions as a local guard; reload and close() close what it opened."""
    from beaverguard._policy import Policy

    local = Guard(_policy("", tmp_path / "local.jsonl"), model=tiny_model)
    remote = Guard(_policy(f"remote: {{url: '{tier.url}', timeout_s: 5}}\n", tmp_path / "remote.jsonl"))
    try:
        assert isinstance(remote.scorer, RemoteScorer)
        for text in TEXTS:
            assert remote.check_input_sync(text).action == local.check_input_sync(text).action, text
        first = remote.scorer
        remote.reload(remote.policy.model_copy(update={"timeout_s": 4.0}))  # same tier: the scorer is kept
        assert remote.scorer is first and not first._client.is_closed
        remote.reload(Policy.model_validate({"remote": {"url": tier.url, "timeout_s": 3}}))  # another: a new one
        assert remote.scorer is not first
        for thread in remote._retiring:
            thread.join()
        assert first._client.is_closed  # the old connections closed once its batcher retired
        assert remote.check_input_sync("how do i make a bomb").blocked
    finally:
        remote.close()
        local.close()
    assert remote.scorer._client.is_closed


def test_a_scorer_passed_in_is_the_callers_to_close(tier, tmp_path):
    with RemoteScorer(tier.url) as scorer:
        guard = Guard(_policy("", tmp_path / "a.jsonl"), scorer=scorer)
        guard.close()
        assert not scorer._client.is_closed


def test_the_policys_key_comes_from_the_environment(tiny_model, tmp_path, monkeypatch):
    from beaverguard.server import ApiKeys

    app = create_app(ServerSettings(upstream="http://127.0.0.1:9/v1", model=tiny_model,
                                    api_keys=ApiKeys({"sk-tier": "default"})))
    server = ServerThread(app)
    yaml = f"remote: {{url: '{server.url}', api_key_env: TIER_KEY}}\n"
    try:
        monkeypatch.delenv("TIER_KEY", raising=False)
        with pytest.raises(ModelError, match="TIER_KEY, which is not set"):  # fails closed at start
            Guard(_policy(yaml, tmp_path / "a.jsonl"))
        monkeypatch.setenv("TIER_KEY", "sk-tier")
        guard = Guard(_policy(yaml, tmp_path / "b.jsonl"))
        assert guard.check_input_sync("how do i make a bomb").blocked
        assert "sk-tier" not in repr(guard.scorer) and "sk-tier" not in guard.policy.model_dump_json()
        guard.close()
    finally:
        server.stop()


def test_a_policy_cannot_name_both_a_model_and_a_tier(tmp_path):
    from beaverguard import PolicyError

    path = tmp_path / "policy.yaml"
    path.write_text("model: ./m\nremote:\n  url: http://tier:8080\n")
    with pytest.raises(PolicyError, match="not both") as err:
        Guard(path)
    assert "policy.yaml" in str(err.value)
    with pytest.raises(PolicyError, match="url"):
        parse_policy("remote: {url: 'tier:8080'}\n")
