"""What is not a completion: keys, bad input, limits, logs, metrics, probes, hot reload."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import httpx
import openai
import pytest

from server_helpers import user

KEY_A, KEY_B = "sk-app-a-0123456789", "sk-app-b-9876543210"


# -- keys -----------------------------------------------------------------------------------------

def test_requests_without_a_valid_key_get_401(gateway, upstream):
    gw = gateway(keys={KEY_A: "default"})
    for key in ("wrong", KEY_A[:-1], KEY_A + "x"):
        with pytest.raises(openai.AuthenticationError) as err:
            gw.client(key).chat.completions.create(model="gpt-test", messages=user("bread"))
        assert err.value.code == "invalid_api_key"
    with gw.http() as http:
        missing = http.post("/v1/moderations", json={"input": "bread"})
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"
    assert upstream.requests == []
    assert gw.client(KEY_A).chat.completions.create(model="gpt-test", messages=user("bread")).choices
    with gw.http(headers={"x-beaverguard-key": KEY_A}) as http:
        assert http.post("/v1/moderations", json={"input": "bread"}).status_code == 200


def test_a_key_selects_its_policy(gateway, upstream):
    gw = gateway(keys={KEY_A: "default", KEY_B: "lenient"},
                 policies={"lenient": "input: {categories: {violence: {action: log}, drugs_weapons: {action: log}}}"})
    strict = gw.client(KEY_A).chat.completions.create(model="gpt-test", messages=user("how do I make a bomb"))
    lenient = gw.client(KEY_B).chat.completions.create(model="gpt-test", messages=user("how do I make a bomb"))
    assert strict.choices[0].finish_reason == "content_filter"
    assert lenient.choices[0].finish_reason == "stop" and len(upstream.requests) == 1


def test_the_upstream_key_is_the_configured_one_not_the_clients(gateway, upstream):
    gw = gateway(keys={KEY_A: "default"}, upstream_api_key="sk-upstream-secret")
    gw.client(KEY_A).chat.completions.create(model="gpt-test", messages=user("bread"))
    [request] = upstream.requests
    assert request["headers"]["authorization"] == "Bearer sk-upstream-secret"
    assert KEY_A not in json.dumps(request)


def test_passthrough_sends_the_clients_authorization_on(gateway, upstream):
    gw = gateway(keys={KEY_A: "default"}, upstream_auth="passthrough")
    client = gw.client("sk-clients-own-upstream-key", default_headers={"X-Beaverguard-Key": KEY_A})
    client.chat.completions.create(model="gpt-test", messages=user("bread"))
    [request] = upstream.requests
    assert request["headers"]["authorization"] == "Bearer sk-clients-own-upstream-key"
    assert KEY_A not in json.dumps(request)
    with pytest.raises(openai.AuthenticationError):  # Authorization is the upstream's: it is not our key
        gw.client(KEY_A).chat.completions.create(model="gpt-test", messages=user("bread"))


def test_keys_come_from_the_environment_and_a_file(tmp_path, monkeypatch):
    from beaverguard.server import ApiKeys
    from beaverguard.server.auth import ServerConfigError

    path = tmp_path / "keys"
    path.write_text(f"# app keys\n{KEY_A} kids\n\n{KEY_B}   # the default policy\n")
    monkeypatch.setenv("BEAVERGUARD_API_KEYS", "sk-env-1, sk-env-2 kids")
    keys = ApiKeys.load(file=path)
    assert len(keys) == 4 and keys.policies == {"kids", "default"}
    assert (keys.policy_for(KEY_A), keys.policy_for(KEY_B), keys.policy_for("sk-env-2")) == ("kids", "default", "kids")
    assert keys.policy_for("sk-env") is None and keys.policy_for(None) is None
    assert KEY_A not in repr(keys)
    path.write_text(f"{KEY_A} kids extra\n")
    with pytest.raises(ServerConfigError, match=r"keys:1: expected 'KEY' or 'KEY POLICY'") as err:
        ApiKeys.load(file=path, env="")
    assert KEY_A not in str(err.value)


# -- bad input --------------------------------------------------------------------------------------

@pytest.mark.parametrize("body, param", [
    (b'{"model": "gpt-test", "messages": [', None),
    (b'["not", "an", "object"]', None),
    (b'{"model": "gpt-test", "messages": "hello"}', "messages"),
    (b'{"model": "gpt-test", "messages": []}', "messages"),
    (b'{"model": "gpt-test", "messages": [{"role": "wizard", "content": "hi"}]}', "messages.0.role"),
    (b'{"model": "gpt-test", "messages": [{"role": "user", "content": 42}]}', "messages.0.content"),
    (b'{"model": 7, "messages": [{"role": "user", "content": "hi"}]}', "model"),
    (b'{"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}], "stream": "often"}', "stream"),
])
def test_malformed_requests_get_a_400_in_openais_shape(gateway, upstream, body, param):
    gw = gateway()
    with gw.http() as http:
        response = http.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert error["param"] == param and error["message"]
    assert upstream.requests == []


def test_the_openai_client_sees_a_bad_request_error(gateway, upstream):
    gw = gateway()
    with pytest.raises(openai.BadRequestError) as err:
        gw.client().chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": 42}])
    assert err.value.param.startswith("messages.0.content")


def test_a_body_over_the_limit_is_413_unread(gateway, upstream):
    gw = gateway(max_body_bytes=2000)
    big = json.dumps({"model": "gpt-test", "messages": user("bread " * 400)}).encode()
    with gw.http() as http:
        declared = http.post("/v1/chat/completions", content=big, headers={"content-type": "application/json"})
        chunked = http.post("/v1/chat/completions", content=iter([big[:1000], big[1000:]]),
                            headers={"content-type": "application/json"})
        small = http.post("/v1/chat/completions", json={"model": "gpt-test", "messages": user("bread")})
    for response in (declared, chunked):
        assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    assert small.status_code == 200 and len(upstream.requests) == 1


def test_unknown_paths_and_methods_get_openai_errors(gateway):
    gw = gateway()
    with gw.http() as http:
        missing, wrong = http.get("/v1/engines"), http.get("/v1/chat/completions")
    assert (missing.status_code, wrong.status_code) == (404, 405)
    assert missing.json()["error"]["type"] == "invalid_request_error"


# -- logs -------------------------------------------------------------------------------------------

def test_no_user_text_or_key_in_the_logs_unless_audit_says_full(gateway, upstream, caplog):
    upstream.reply = "A secret sourdough answer. Then you kill them all."
    prompt = "my private question about the bomb in the bakery"
    with caplog.at_level(logging.DEBUG):
        gw = gateway("audit: {log: true, content: hash}", keys={KEY_A: "default"}, upstream_api_key="sk-up-secret")
        client = gw.client(KEY_A)
        client.chat.completions.create(model="gpt-test", messages=user(prompt))
        client.chat.completions.create(model="gpt-test", messages=user("bread"))
        list(client.chat.completions.create(model="gpt-test", messages=user("bread"), stream=True))
        with pytest.raises(openai.AuthenticationError):
            gw.client("sk-wrong-guess").chat.completions.create(model="gpt-test", messages=user(prompt))
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert '"action": "block"' in logged and "sha256:" in logged  # the audit records are in the log
    for secret in (prompt, "sourdough", KEY_A, "sk-up-secret", "sk-wrong-guess"):
        assert secret not in logged

    caplog.clear()
    with caplog.at_level(logging.INFO):
        gw = gateway("audit: {log: true, content: full}")
        gw.client().chat.completions.create(model="gpt-test", messages=user(prompt))
    assert prompt in "\n".join(r.getMessage() for r in caplog.records)


# -- probes and metrics -----------------------------------------------------------------------------

def test_health_readiness_and_metrics(gateway, upstream):
    gw = gateway(keys={KEY_A: "default"})
    client = gw.client(KEY_A)
    client.chat.completions.create(model="gpt-test", messages=user("how do I make a bomb"))
    client.chat.completions.create(model="gpt-test", messages=user("bread"))
    with gw.http() as http:  # the probes ask for no key
        assert http.get("/healthz").json() == {"status": "ok"}
        ready = http.get("/readyz")
        metrics = http.get("/metrics").text
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "policies": {"default": "beaverguard-tiny-test"}}
    sample = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
              if line and not line.startswith("#")}
    assert sample['beaverguard_decisions_total{action="block",category="violence",policy="default",rail="input"}'] == 1
    assert sample['beaverguard_decisions_total{action="allow",category="none",policy="default",rail="output"}'] == 1
    assert sample['beaverguard_decision_seconds_count{rail="input"}'] == 2
    assert sample['beaverguard_http_requests_total{endpoint="/v1/chat/completions",status="200"}'] == 2
    assert sample["beaverguard_queue_depth"] == 0
    assert sample["beaverguard_upstream_seconds_count"] == 1


def test_not_ready_while_the_model_is_missing(gateway, upstream, tmp_path):
    gw = gateway(f"on_error: allow\nmodel: {tmp_path / 'no-such-model'}", model=None)
    with gw.http() as http:
        ready = http.get("/readyz")
        model = http.get("/v1/guard/model")
    assert ready.status_code == 503 and ready.json()["policies"] == {"default": None}
    assert model.status_code == 503 and model.json()["error"]["code"] == "model_unavailable"


def test_upstream_errors_are_counted(gateway, upstream):
    gw = gateway()
    upstream.status = 503
    with pytest.raises(openai.APIStatusError):
        gw.client().chat.completions.create(model="gpt-test", messages=user("bread"))
    with gw.http() as http:
        assert 'beaverguard_upstream_errors_total{kind="status"} 1.0' in http.get("/metrics").text


# -- hot reload -------------------------------------------------------------------------------------

def test_a_changed_policy_file_applies_to_the_next_request(gateway, upstream, tmp_path):
    path: Path = tmp_path / "policy.yaml"
    path.write_text("audit: {log: false}\n")
    gw = gateway(policies={"watched": path}, keys={KEY_A: "watched"})
    client = gw.client(KEY_A)
    assert client.chat.completions.create(model="gpt-test", messages=user("bread")).choices[0].finish_reason == "stop"
    path.write_text("audit: {log: false}\ninput: {unsafe: {threshold: 0.0}}\n")  # everything is unsafe now
    deadline = time.monotonic() + 10
    while True:
        reply = client.chat.completions.create(model="gpt-test", messages=user("bread"))
        if reply.choices[0].finish_reason == "content_filter" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert reply.choices[0].finish_reason == "content_filter"
    with gw.http() as http:
        assert http.get("/v1/guard/model", headers={"authorization": f"Bearer {KEY_A}"}).json()[
            "thresholds"]["input"]["unsafe"] == 0.0


# -- overload ---------------------------------------------------------------------------------------

LONG = " ".join(["hello how do i make the bread cake"] * 2500)  # ~20k tokens: ~600 windows of the tiny model
CHAT = LONG + " please"


async def _flood(gw, n: int = 40) -> tuple[list[httpx.Response], list[httpx.Response]]:
    """n concurrent requests, chat completions and moderations, each a long text to score: (chats, moderations)."""
    import asyncio

    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as http:
        await http.post("/v1/moderations", json={"input": "bread"})  # one measurement: the batcher's estimate
        chat = {"model": "gpt-test", "messages": [{"role": "user", "content": CHAT}]}
        responses = await asyncio.gather(*(
            http.post("/v1/chat/completions", json=chat) if i % 2 else http.post("/v1/moderations", json={"input": LONG})
            for i in range(n)))
    return responses[1::2], responses[0::2]


def _at_the_door(response: httpx.Response) -> bool:
    return "refused before reading the request" in response.json()["error"]["message"]


async def test_overload_is_429_with_retry_after_and_never_reaches_the_upstream(gateway, upstream):
    gw = gateway("timeout_s: 0.1\nexecution: {max_tokens: null}")
    chats, moderations = await _flood(gw)
    responses = chats + moderations
    refused = [r for r in responses if r.status_code == 429]
    seen = [(r.status_code, r.text[:200]) for r in responses if r.status_code != 200]
    assert refused, "no request was refused: the flood did not overload the guard"
    # 413 where the estimate of this machine's speed (slow under load) says the text can never fit timeout_s
    assert {r.status_code for r in chats} <= {200, 413, 429}, seen
    assert {r.status_code for r in moderations} <= {200, 413, 429, 503}, seen  # 503: a check timed out, no verdict
    assert all(r.json()["error"]["code"] == "text_too_long" for r in responses if r.status_code == 413), seen
    assert all(r.json()["error"]["code"] == "no_verdict" for r in moderations if r.status_code == 503)
    for r in refused:  # whole seconds, from the refusal's own estimate
        assert int(r.headers["retry-after"]) >= 1 and r.json()["error"]["code"] == "overloaded"
    records = gw.audit()
    # a refusal after the body was read is audited; one at the door (nothing read, nothing judged) is not
    assert sum(r["error_type"] == "ScorerOverloaded" for r in records) >= sum(not _at_the_door(r) for r in refused)
    chat_inputs = [r for r in records if r["rail"] == "input" and r["prompt"] == CHAT]
    # only the prompts the input rail allowed went upstream: none refused (or failed) did
    assert len(upstream.requests) == sum(r["action"] == "allow" for r in chat_inputs)
    # and each that went upstream was judged: never a 429 after the LLM call was paid for
    judged = {r["request_id"] for r in records if r["rail"] == "output"}
    assert len(judged) == len(upstream.requests), (len(judged), len(upstream.requests), seen)
    assert all(r.status_code == 200 for r in chats if r.headers["x-request-id"] in judged), seen


async def test_on_overload_allow_passes_requests_on_unscored(gateway, upstream):
    gw = gateway("timeout_s: 0.1\non_overload: allow\nexecution: {max_tokens: null}")
    chats, moderations = await _flood(gw)
    # passed on unscored (or judged), as the policy says; 413 where the server's estimate of this machine's
    # speed says the text can never be judged within timeout_s (not overload: on_overload does not apply)
    assert {r.status_code for r in chats} <= {200, 413}, [(r.status_code, r.text[:300]) for r in chats]
    # a moderation reports a verdict: one that reached none is an error whatever on_overload says (and the same
    # 413 as a chat's where the estimate of this machine's speed, slow under load, says it can never fit)
    assert {r.status_code for r in moderations} <= {200, 413, 429, 503}
    passed = [r for r in gw.audit() if r["error_type"] == "ScorerOverloaded"]
    assert passed and all(r["action"] == "allow" for r in passed)


@pytest.mark.parametrize(("retry_after_s", "header"), [(2.2, "3"), (0.0, "1"), (None, "5")])
def test_retry_after_is_the_refusals_estimate_else_the_timeout(retry_after_s, header):
    from beaverguard import Action, Decision
    from beaverguard.server.errors import ApiError
    from beaverguard.server.guards import refuse_if_overloaded
    from beaverguard.server.metrics import Metrics

    class _Guard:
        class policy:  # noqa: N801 - stands in for a Policy
            timeout_s = 4.5

    refused = Decision(rail="input", action=Action.BLOCK, categories=(), scores={}, text="", request_id="r",
                       error="ScorerOverloaded: busy", error_type="ScorerOverloaded", retry_after_s=retry_after_s)
    with pytest.raises(ApiError) as err:
        refuse_if_overloaded(_Guard(), refused, Metrics(), "/v1/moderations")  # type: ignore[arg-type]
    assert err.value.status_code == 429 and err.value.headers["retry-after"] == header


# -- every answer: x-request-id ----------------------------------------------------------------------

def test_every_answer_has_an_x_request_id(gateway, upstream):
    gw = gateway(keys={KEY_A: "default"})
    auth = {"authorization": f"Bearer {KEY_A}"}
    with gw.http() as http:
        answers = [http.get("/healthz"), http.get("/readyz"), http.get("/metrics"), http.get("/openapi.json"),
                   http.get("/docs"), http.get("/v1/guard/model", headers=auth), http.get("/v1/engines"),
                   http.post("/v1/moderations", json={"input": "bread"}),                      # 401
                   http.post("/v1/moderations", json={"input": 3}, headers=auth),              # 400
                   http.post("/v1/guard/score", json={"exchanges": [{"prompt": "x"}]}, headers=auth),
                   http.post("/v1/guard/check", json={"prompt": "bread"}, headers=auth)]
        moderation = http.post("/v1/moderations", json={"input": ["bread", "a bomb"]}, headers=auth)
    ids = [r.headers.get("x-request-id") for r in [*answers, moderation]]
    assert all(i and len(i) == 32 for i in ids) and len(set(ids)) == len(ids), ids
    assert [r.headers.get_list("x-request-id") for r in answers] == [[i] for i in ids[:-1]]  # one each
    records = [r for r in gw.audit() if r["prompt"] in ("bread", "a bomb") and r["rail"] == "input"]
    assert {r["request_id"] for r in records[-2:]} == {moderation.headers["x-request-id"]}  # the audit's id
    reply = gw.client(KEY_A).chat.completions.with_raw_response.create(model="gpt-test", messages=user("bread"))
    assert {r["request_id"] for r in gw.audit()[-2:]} == {reply.headers["x-request-id"]}


# -- the reference works offline -------------------------------------------------------------------

def test_docs_are_one_page_that_loads_nothing_from_elsewhere(gateway):
    import re

    gw = gateway()
    with gw.http() as http:
        docs, redoc, schema = http.get("/docs"), http.get("/redoc"), http.get("/openapi.json")
    assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", docs.text, re.I)  # no CDN, nothing remote
    assert "<script" not in docs.text.lower() and "@import" not in docs.text
    for path in schema.json()["paths"]:
        assert path in docs.text
    assert "ModerationRequest" in docs.text and "/openapi.json" in docs.text
    assert redoc.status_code == 404  # FastAPI's CDN page is off


# -- errors that say what the limit is ----------------------------------------------------------------

def test_list_size_errors_name_the_limit(gateway):
    gw = gateway()
    with gw.http() as http:
        texts = http.post("/v1/moderations", json={"input": ["bread"] * 257})
        parts = http.post("/v1/moderations", json={"input": [{"type": "text", "text": "bread"}] * 257})
        score = http.post("/v1/guard/score", json={"exchanges": [{"prompt": "bread"}] * 257})
        empty = http.post("/v1/moderations", json={"input": []})
    for response, param in [(texts, "input"), (parts, "input"), (score, "exchanges")]:
        error = response.json()["error"]
        assert response.status_code == 400 and error["param"] == param
        assert error["message"] == f"{param}: at most 256 items in one request (the server's limit), not 257"
    assert empty.json()["error"]["message"] == "input: at least 1 item, not 0"


@pytest.mark.parametrize("path, body, param", [
    ("/v1/moderations", '{"input": "bread \\udc00"}', "input"),
    ("/v1/moderations", '{"input": ["bread", "cake \\udc00"]}', "input.1"),
    ("/v1/moderations", '{"input": [{"type": "text", "text": "\\ud800x"}]}', "input.0.text"),
    ("/v1/guard/check", '{"prompt": "bread", "response": "\\udfff"}', "response"),
    ("/v1/guard/check", '{"prompt": [{"role": "user", "content": "\\udc00", "name": "x"}]}', "prompt.0.content"),
    ("/v1/guard/score", '{"exchanges": [{"prompt": "a", "context": [["user", "\\ud83d"]]}]}',
     "exchanges.0.context.0.1"),
    ("/v1/chat/completions", '{"model": "gpt-\\udc00", "messages": [{"role": "user", "content": "hi"}]}', "model"),
    ("/v1/chat/completions", '{"model": "m", "messages": [{"role": "user", "content": "hi"}], '
                             '"metadata": {"app": "\\udc00"}}', "metadata.app"),
])
def test_lone_surrogates_are_400_naming_the_field_on_every_endpoint(gateway, upstream, path, body, param):
    gw = gateway()
    with gw.http() as http:
        response = http.post(path, content=body.encode(), headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, "invalid_text") and "surrogate" in error["message"]
    assert gw.audit() == [] and upstream.requests == []


def test_the_published_schema_refuses_what_the_server_refuses(gateway, upstream):
    """stream with n > 1, and the output rail without a response: refused by the schema, not only by the server."""
    import jsonschema_rs  # schemathesis's own validator (in the test extra)

    gw = gateway()
    with gw.http() as http:
        schema = http.get("/openapi.json").json()

        def valid(name: str, body: dict) -> bool:
            validator = jsonschema_rs.Draft202012Validator(
                {"$ref": f"#/components/schemas/{name}", "components": schema["components"]})
            return validator.is_valid(body)

        for name, path, body, ok in [
            ("ChatCompletionRequest", "/v1/chat/completions",
             {"model": "gpt-test", "messages": user("bread"), "stream": True, "n": 2}, False),
            ("ChatCompletionRequest", "/v1/chat/completions",
             {"model": "gpt-test", "messages": user("bread"), "stream": False, "n": 2}, True),
            ("ChatCompletionRequest", "/v1/chat/completions",
             {"model": "gpt-test", "messages": user("bread"), "stream": True, "n": 1}, True),
            ("CheckRequest", "/v1/guard/check", {"prompt": "bread", "rail": "output"}, False),
            ("CheckRequest", "/v1/guard/check", {"prompt": "bread", "rail": "output", "response": None}, False),
            ("CheckRequest", "/v1/guard/check", {"prompt": "bread", "rail": "output", "response": "hi"}, True),
            ("CheckRequest", "/v1/guard/check", {"prompt": "bread", "rail": "input"}, True),
        ]:
            assert valid(name, body) == ok, body
            response = http.post(path, json=body)
            assert (response.status_code == 200) == ok, (body, response.text)
            if not ok:
                assert response.status_code == 400 and response.json()["error"]["param"] in ("n", "response")
