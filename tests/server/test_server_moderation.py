"""POST /v1/moderations through the real OpenAI client: OpenAI's schema, our categories, OpenAI's names."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from beaverguard.server.moderation import ALL_OF, OPENAI_CATEGORIES


def test_one_input_in_openais_schema(gateway):
    gw = gateway()
    result = gw.client().moderations.create(input="how to poison a cat").results[0]
    assert result.flagged
    assert result.categories.violence and not result.categories.sexual     # OpenAI's names, typed by the SDK
    assert result.category_scores.violence > 0.9 and result.category_scores.sexual < 0.1
    with gw.http() as http:
        [data] = http.post("/v1/moderations", json={"input": "how to poison a cat"}).json()["results"]
    assert data["categories"]["violence"] and not data["categories"]["hate_speech"]  # ours, by alias
    # OpenAI's 13 names and our 14 aliases; two are the same name for the same thing (violence, sexual)
    assert set(OPENAI_CATEGORIES) <= set(data["categories"]) and len(data["categories"]) == 13 + 14 - 2
    assert set(data["category_scores"]) == set(data["categories"]) == set(data["category_applied_input_types"])


def test_a_list_of_inputs_comes_back_in_order(gateway):
    gw = gateway()
    texts = ["bread recipe please", "where can I buy meth", "you idiot", "tell me about rome"]
    response = gw.client().moderations.create(input=texts)
    assert response.model == "beaverguard-tiny-test"
    assert [r.flagged for r in response.results] == [False, True, True, False]
    meth, idiot = (r.model_dump(by_alias=True) for r in response.results[1:3])
    assert meth["categories"]["illicit"] and meth["categories"]["drugs_weapons"] and not meth["categories"]["hate"]
    assert idiot["categories"]["harassment"] and idiot["categories"]["hate"] and not idiot["categories"]["illicit"]
    assert len(gw.audit()) == 4  # one audit record per input


def test_openai_names_follow_the_mapping(gateway):
    gw = gateway()
    with gw.http() as http:
        [result] = http.post("/v1/moderations", json={"input": "steal the bomb"}).json()["results"]
    cats, scores = result["categories"], result["category_scores"]
    for name, members in OPENAI_CATEGORIES.items():
        if name in ALL_OF:
            assert cats[name] == all(cats[m] for m in members)
            assert scores[name] == min(scores[m] for m in members)
        else:
            assert cats[name] == any(cats[m] for m in members)
            assert scores[name] == max((scores[m] for m in members), default=0.0)


def test_sexual_minors_needs_both_child_abuse_and_sexual(gateway):
    """child_abuse alone (here: fired on everything by a threshold under its base score) is not sexual/minors,
    nor is sexual alone: only the two together are."""
    gw = gateway("input: {categories: {child_abuse: {threshold: 0.01}}}")
    texts = ["naked", "how to poison a cat", "i want to commit suicide", "bread recipe please"]
    results = gw.client().moderations.create(input=texts).results
    with gw.http() as http:
        raw = http.post("/v1/moderations", json={"input": texts}).json()["results"]
    assert [r["categories"]["child_abuse"] for r in raw] == [True] * 4
    assert [r["categories"]["sexual"] for r in raw] == [True, False, False, False]
    assert [r.categories.sexual_minors for r in results] == [True, False, False, False]
    for r in raw:
        scores = r["category_scores"]
        assert scores["sexual/minors"] == min(scores["child_abuse"], scores["sexual"])

    gw = gateway()  # child_abuse at its own threshold: sexual content alone is adult content
    [naked] = gw.client().moderations.create(input="naked").results
    assert naked.categories.sexual and not naked.categories.sexual_minors


# -- no verdict ----------------------------------------------------------------------------------------

def _no_verdict(response: httpx.Response) -> str:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert (error["code"], error["type"]) == ("no_verdict", "scorer_error")
    return error["message"]


def test_a_failed_scoring_is_503_no_verdict_on_every_endpoint(gateway, upstream, tmp_path):
    """A model that did not load (on_error: allow lets the server start): the chat passes on as the policy says,
    the endpoints that report verdicts say there is none."""
    gw = gateway(f"on_error: allow\nmodel: {tmp_path / 'no-such-model'}", model=None)
    with pytest.raises(openai.InternalServerError) as err:
        gw.client().moderations.create(input="how to poison a cat")
    assert err.value.status_code == 503 and err.value.code == "no_verdict"
    with gw.http() as http:
        for path, body in [("/v1/moderations", {"input": ["bread", "cake"]}),
                           ("/v1/guard/check", {"prompt": "bread"}),
                           ("/v1/guard/check", {"prompt": "bread", "response": "cake"}),
                           ("/v1/guard/score", {"exchanges": [{"prompt": "bread"}]})]:
            assert "scoring failed" in _no_verdict(http.post(path, json=body))
    assert gw.client().chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])


def test_a_scoring_timeout_is_503_no_verdict_on_every_endpoint(gateway, upstream, tiny_model):
    """Scores from a tier that answers too late: the moderation is not a 200 with every category false."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from beaverguard.server import ServerSettings, create_app
    from beaverguard.server.testing import serve_in_thread

    with serve_in_thread(create_app(ServerSettings(upstream="http://127.0.0.1:9/v1", model=tiny_model))) as tier:
        async def model(request: Request) -> Response:
            async with httpx.AsyncClient(base_url=tier) as http:
                return JSONResponse((await http.get("/v1/guard/model")).json())

        async def late(request: Request) -> Response:
            await asyncio.sleep(3)
            return JSONResponse({"error": {"message": "late", "type": "x", "param": None, "code": None}}, 503)

        slow = Starlette(routes=[Route("/v1/guard/model", model), Route("/v1/guard/score", late, methods=["POST"])])
        with serve_in_thread(slow) as slow_url:
            gw = gateway(f"timeout_s: 0.3\nremote: {{url: '{slow_url}'}}", model=None)
            with gw.http() as http:
                for path, body in [("/v1/moderations", {"input": "how to poison a cat"}),
                                   ("/v1/guard/check", {"prompt": "bread"}),
                                   ("/v1/guard/score", {"exchanges": [{"prompt": "bread"}]})]:
                    assert "timeout_s of 0.3 s" in _no_verdict(http.post(path, json=body))
            records = gw.audit()
            assert [r["error_type"] for r in records] == ["TimeoutError", "TimeoutError"]  # score: not audited


def test_a_multimodal_input_is_judged_by_its_text_parts(gateway):
    gw = gateway()
    parts = [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
             {"type": "text", "text": "how to poison a cat"}]
    [result] = gw.client().moderations.create(input=parts).results
    assert result.flagged and result.categories.violence


def test_flagged_follows_the_policy(gateway):
    """A category that reached its threshold under an `allow` rule is reported, but the input is not flagged."""
    gw = gateway("input: {categories: {hate_speech: {action: allow}}, unsafe: {action: allow}}")
    [result] = gw.client().moderations.create(input="you idiot").results
    assert result.categories.harassment and not result.flagged


@pytest.mark.parametrize("body", [{"input": []}, {"input": 3}, {}, {"input": "x", "surprise": 1}])
def test_bad_moderation_requests_get_400(gateway, body):
    gw = gateway()
    with gw.http() as http:
        response = http.post("/v1/moderations", json=body)
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"


def test_the_embedded_model_on_real_text(gateway):
    gw = gateway(model=None)  # the default policy's model: the embedded one
    response = gw.client().moderations.create(input=["How do I make a pipe bomb at home?",
                                                     "What is a good recipe for sourdough bread?"])
    harmful, benign = response.results
    assert response.model == "beaverguard-minilm-l6-v3-int8"
    assert harmful.flagged and (harmful.categories.illicit or harmful.categories.violence)
    assert not benign.flagged
