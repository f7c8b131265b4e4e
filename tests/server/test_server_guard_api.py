"""beaverguard's own endpoints: /v1/guard/check, /v1/guard/score, /v1/guard/model (the Scores-over-HTTP contract)."""

from __future__ import annotations

import pytest

from beaverguard import Exchange, Guard, parse_policy
from beaverguard.cli import decision_summary

KEY = "sk-guard-api-key"


@pytest.fixture
def http(gateway):
    gw = gateway(keys={KEY: "default"})
    with gw.http(headers={"authorization": f"Bearer {KEY}"}) as client:
        client.gateway = gw
        yield client




def test_check_on_both_rails(http, tiny_model):
    guard = Guard(parse_policy("audit: {log: false}"), model=tiny_model)
    try:
        for body, expected in [
            ({"prompt": "how do I make a bomb"}, guard.check_input_sync("how do I make a bomb")),
            ({"prompt": "how do I make a bomb", "response": "Sorry, I cannot help."},
             guard.check_output_sync("how do I make a bomb", "Sorry, I cannot help.")),
            ({"prompt": [{"role": "user", "content": "bread"}], "response": {"role": "assistant", "content": "kill"},
              "rail": "output"}, guard.check_output_sync([{"role": "user", "content": "bread"}], "kill")),
        ]:
            got = http.post("/v1/guard/check", json=body).json()
            want = decision_summary(expected)
            assert set(got) == set(want)  # the server's summary is the command line's
            assert {k: got[k] for k in ("rail", "action", "flagged", "categories", "text", "scores")} == \
                   {k: want[k] for k in ("rail", "action", "flagged", "categories", "text", "scores")}
    finally:
        guard.close()
    assert [r["rail"] for r in http.gateway.audit()] == ["input", "output", "output"]  # audited, as in-process


def test_check_refuses_an_output_rail_without_a_response(http):
    response = http.post("/v1/guard/check", json={"prompt": "bread", "rail": "output"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "response"


def test_score_answers_the_models_raw_scores(http, tiny_model):
    exchanges = [{"prompt": "bread"}, {"prompt": "how to make a bomb", "response": "Sorry, I cannot."},
                 {"prompt": "hi", "response": "kill them"}]
    got = http.post("/v1/guard/score", json={"exchanges": exchanges}).json()
    guard = Guard(parse_policy("audit: {log: false}"), model=tiny_model)
    try:
        want = guard.score_many([Exchange(e["prompt"], e.get("response")) for e in exchanges])
        labels = list(guard.scorer.labels)
    finally:
        guard.close()
    assert got["model"] == "beaverguard-tiny-test" and got["labels"] == labels
    assert [r["scores"] for r in got["results"]] == [{k: pytest.approx(s[k], abs=1e-6) for k in labels} for s in want]
    assert http.gateway.audit() == []  # no decision, so no audit record


@pytest.mark.parametrize("body", [{"exchanges": []}, {"exchanges": [{"response": "x"}]},
                                  {"exchanges": [{"prompt": "x", "context": [["user"]]}]}, {"prompts": ["x"]}])
def test_score_refuses_malformed_exchanges(http, body):
    response = http.post("/v1/guard/score", json=body)
    assert response.status_code == 400 and response.json()["error"]["message"]


def test_model_answers_the_thresholds_of_the_callers_policy(gateway):
    gw = gateway(keys={KEY: "default", "sk-other": "strict"},
                 policies={"strict": "input: {categories: {violence: {threshold: 0.2}}}"})
    with gw.http() as client:
        default = client.get("/v1/guard/model", headers={"authorization": f"Bearer {KEY}"}).json()
        strict = client.get("/v1/guard/model", headers={"authorization": "Bearer sk-other"}).json()
        refused = client.get("/v1/guard/model")
    assert default["name"] == "beaverguard-tiny-test" and default["max_length"] == 32
    assert default["batch_invariant"] is True and len(default["labels"]) == 15
    violence = "violence,aiding_and_abetting,incitement"
    assert default["thresholds"]["input"][violence] == 0.5 and strict["thresholds"]["input"][violence] == 0.2
    assert strict["thresholds"]["output"] == default["thresholds"]["output"]
    assert refused.status_code == 401


def test_score_with_context_follows_the_conversation_contract(http):
    with_context = {"prompt": "and then?", "context": [["user", "how to make a bomb"], ["assistant", "no"]]}
    response = http.post("/v1/guard/score", json={"exchanges": [with_context, {"prompt": "and then?"}]})
    assert response.status_code == 200
    turns, alone = (r["scores"]["unsafe"] for r in response.json()["results"])
    assert turns > alone  # the earlier turn's "bomb" counts (the tiny model sums its words)


def test_the_server_does_not_import_the_command_line():
    """The server's app stands without `beaverguard.cli` (whose `check` prints the same summary)."""
    import subprocess
    import sys

    code = "import sys, beaverguard.server.app; print('beaverguard.cli' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_check_with_the_output_rail_needs_a_response_by_the_schema(http):
    schema = http.get("/openapi.json").json()["components"]["schemas"]["CheckRequest"]
    assert schema["if"]["properties"]["rail"] == {"const": "output"} and "response" in schema["then"]["required"]
    response = http.post("/v1/guard/check", json={"prompt": "bread", "rail": "output", "response": None})
    assert response.status_code == 400 and response.json()["error"]["param"] == "response"
    assert http.gateway.audit() == []  # refused at validation: no rail ran
