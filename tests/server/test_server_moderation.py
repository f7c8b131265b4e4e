"""POST /v1/moderations through the real OpenAI client: OpenAI's schema, our categories, OpenAI's names."""

from __future__ import annotations

import pytest

from beaverguard.server.moderation import OPENAI_CATEGORIES


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
        assert cats[name] == any(cats[m] for m in members)
        assert scores[name] == max((scores[m] for m in members), default=0.0)


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
    assert response.model == "beaverguard-minilm-l6-int8"
    assert harmful.flagged and (harmful.categories.illicit or harmful.categories.violence)
    assert not benign.flagged
