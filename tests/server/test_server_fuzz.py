"""Every endpoint fuzzed from the server's own OpenAPI schema (schemathesis): no input gets a 5xx.

The server runs on a loopback socket in front of the fake upstream, with a key,
so generated requests get past the key check to the rails (and valid ones on to
the upstream). Each operation gets requests that fit its schema and requests
that break it; a request that fits the published schema is never refused as
malformed (the schema says what is accepted). Requests that fit, with a lone
UTF-16 surrogate put into one of their strings (what JSON can carry and no
encoding can), are refused with 400 naming that string.
"""

from __future__ import annotations

import json

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from server_helpers import policy
from schemathesis.checks import not_a_server_error, response_schema_conformance, status_code_conformance

KEY = "sk-fuzz"
OPERATIONS = [("POST", "/v1/chat/completions"), ("POST", "/v1/moderations"), ("POST", "/v1/guard/check"),
              ("POST", "/v1/guard/score"), ("GET", "/v1/guard/model"), ("GET", "/healthz"), ("GET", "/readyz"),
              ("GET", "/metrics")]


@pytest.fixture(scope="module")
def api(tiny_model, tmp_path_factory):
    """One server for the module (the fuzzing is what takes time, not the start)."""
    from beaverguard.server import ApiKeys, ServerSettings, create_app
    from beaverguard.server.testing import FakeUpstream, serve_in_thread

    audit = tmp_path_factory.mktemp("fuzz") / "audit.jsonl"
    upstream = FakeUpstream("Here is a bread recipe, then you kill them.", models=None, record=False)
    with serve_in_thread(upstream.app) as up:
        app = create_app(ServerSettings(upstream=f"{up}/v1", policies={"default": policy(
            "streaming: {chunk_chars: 32, overlap_chars: 8}", audit)}, model=tiny_model,
            api_keys=ApiKeys({KEY: "default"}), max_body_bytes=256 * 1024))
        with serve_in_thread(app) as url:
            yield schemathesis.openapi.from_url(f"{url}/openapi.json"), url


def test_the_schema_lists_every_endpoint(api):
    schema, _ = api
    found = {(op.ok().method.upper(), op.ok().path) for op in schema.get_all_operations()}
    assert found == set(OPERATIONS)


#: Requests that fit each operation's schema; requests that break it where there is a body to break.
CASES = [(m, p, GenerationMode.POSITIVE) for m, p in OPERATIONS] + [
    (m, p, GenerationMode.NEGATIVE) for m, p in OPERATIONS if m == "POST"]


@pytest.mark.parametrize("method, path, mode", CASES, ids=[f"{p}-{g.value}" for _, p, g in CASES])
def test_no_input_gets_a_server_error(api, method, path, mode):
    schema, url = api
    operation = schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def fuzz(case):
        response = case.call_and_validate(
            base_url=url, headers={"authorization": f"Bearer {KEY}"},
            checks=[not_a_server_error, status_code_conformance, response_schema_conformance], timeout=30)
        if mode is GenerationMode.POSITIVE:  # what the schema accepts, the server does not refuse as malformed
            assert response.status_code != 400, (case.body, response.text)

    fuzz()


def _strings(value, path: str = ""):
    """(path, container, key) of every string value in a JSON body, the path as the server names it."""
    if isinstance(value, dict):
        for key, child in value.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(child, str):
                yield where, value, key
            else:
                yield from _strings(child, where)
    elif isinstance(value, list):
        for i, child in enumerate(value):
            where = f"{path}.{i}" if path else str(i)
            if isinstance(child, str):
                yield where, value, i
            else:
                yield from _strings(child, where)


SURROGATES = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff", "\ud83d", "\ude00"])
POSTS = [p for m, p in OPERATIONS if m == "POST"]


@pytest.mark.parametrize("path", POSTS)
def test_a_lone_surrogate_anywhere_is_a_400_naming_its_field(api, path):
    schema, url = api
    operation = schema[path]["POST"]

    @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE), data=st.data())
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def fuzz(case, data):
        body = case.body
        strings = list(_strings(body))
        assume(strings)
        where, container, key = data.draw(st.sampled_from(strings))
        text = container[key]
        at = data.draw(st.integers(0, len(text)))
        container[key] = text[:at] + data.draw(SURROGATES) + text[at:]
        sent = json.dumps(body)  # ensure_ascii: the surrogate goes as an escape, as JavaScript sends it
        response = httpx.post(f"{url}{path}", content=sent.encode(), timeout=30,
                              headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"})
        assert response.status_code == 400, (sent, response.text)
        error = response.json()["error"]
        assert (error["param"], error["code"]) == (where, "invalid_text"), sent

    fuzz()
