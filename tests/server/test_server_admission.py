"""Admission and limits on a real loopback server: checks too large for their timeout (413), the door (429 before
the body is read), room kept for answers on their way, and bodies that never arrive (408).

Raw sockets stand in for clients that declare a body and do not send it: a server that reads the body before
refusing would wait for it (and answer only at the body timeout), so an immediate answer shows it did not.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import openai
import pytest

from server_helpers import user

LONG = " ".join(["hello how do i make the bread cake"] * 2500)  # ~20k tokens: ~950 windows of the tiny model


def _raw(url: str, head: str, body: bytes = b"", *, wait_s: float = 5.0) -> tuple[bytes, float]:
    """Send a request head (and maybe part of its body) on a fresh socket; what came back, and when."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.settimeout(wait_s)
    start = time.monotonic()
    try:
        sock.sendall(head.encode() + body)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < _length(answer):
            part = sock.recv(65536)
            if not part:
                break
            answer += part
        took = time.monotonic() - start
        try:
            closed = sock.recv(1) == b""  # the server closed the connection after answering
        except (TimeoutError, ConnectionResetError):
            closed = False
        return answer + (b"\n[closed]" if closed else b""), took
    except TimeoutError:
        return b"", time.monotonic() - start
    finally:
        sock.close()


def _length(answer: bytes) -> int:
    for line in answer.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def _head(path: str, length: int, key: str | None = None) -> str:
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{auth}"
            f"Content-Length: {length}\r\n\r\n")


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def _error(answer: bytes) -> dict:
    return json.loads(answer.partition(b"\r\n\r\n")[2].split(b"\n[closed]")[0])["error"]


# -- a check too large for its timeout: 413, not 429 --------------------------------------------------

def test_a_text_too_long_for_the_timeout_is_413_naming_the_limit(gateway, upstream):
    gw = gateway("timeout_s: 0.001\nexecution: {max_tokens: null}")  # nothing that long fits 1 ms
    huge = LONG * 4
    with gw.http() as http:
        first = http.post("/v1/moderations", json={"input": huge})
        again = http.post("/v1/moderations", json={"input": huge})  # not overload: retrying cannot help
        listed = http.post("/v1/moderations", json={"input": ["bread", huge]})
        chat = http.post("/v1/chat/completions", json={"model": "gpt-test", "messages": user(huge)})
        check = http.post("/v1/guard/check", json={"prompt": "bread", "response": huge})
        score = http.post("/v1/guard/score", json={"exchanges": [{"prompt": huge}]})
        short = http.post("/v1/moderations", json={"input": "bread"})
    for response, param in [(first, "input"), (again, "input"), (listed, "input.1"), (chat, "messages"),
                            (check, "response"), (score, "exchanges.0")]:
        assert response.status_code == 413, response.text
        error = response.json()["error"]
        assert error["code"] == "text_too_long" and error["param"] == param
        assert "timeout_s of 0.001 s" in error["message"] and "Retrying cannot help" in error["message"]
        assert "retry-after" not in response.headers
    assert short.status_code != 413  # a short text is judged (or times out at 1 ms: 503, no verdict)
    assert upstream.requests == []
    assert [r["prompt"] for r in gw.audit()] == ["bread"]  # no rail ran for the long ones


# -- the door: refused before the body is read ----------------------------------------------------------

def _chat_in_thread(gw, results: list, **kwargs) -> threading.Thread:
    def run() -> None:
        try:
            results.append(gw.client().chat.completions.create(model="gpt-test", messages=user("bread"), **kwargs))
        except Exception as exc:  # noqa: BLE001 - the test reads it
            results.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _wait_for(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.01)


def test_requests_over_the_in_flight_limit_are_429_before_their_body_is_read(gateway, upstream):
    gw = gateway(max_in_flight=2)
    upstream.delay_s = 1.5
    results: list = []
    threads = [_chat_in_thread(gw, results) for _ in range(2)]
    _wait_for(lambda: len(upstream.requests) == 2)
    answer, took = _raw(gw.url, _head("/v1/moderations", 100))  # declares a body it never sends
    assert _status(answer) == 429 and took < 1.0, answer
    assert b"retry-after: 1\r\n" in answer.lower() and _error(answer)["code"] == "overloaded"
    with gw.http() as http:
        assert http.get("/healthz").status_code == 200  # the probes are never refused
    for thread in threads:
        thread.join(10)
    assert [r.choices[0].finish_reason for r in results] == ["stop", "stop"]
    with gw.http() as http:
        assert http.post("/v1/moderations", json={"input": "bread"}).status_code == 200
        metrics = http.get("/metrics").text
    assert 'beaverguard_overloaded_total{endpoint="/v1/moderations"} 1.0' in metrics


def test_a_saturated_guard_refuses_at_the_door(gateway, upstream):
    """An answer on its way holds room for its check: while it does, new work that would not fit is refused
    at once, before its body is read (a raw socket that never sends it gets its 429 straight away)."""
    gw = gateway("timeout_s: 0.05")
    upstream.delay_s = 1.5
    results: list = []
    thread = _chat_in_thread(gw, results, n=128, max_tokens=2000)  # 128 long answers' checks reserved
    _wait_for(lambda: len(upstream.requests) == 1)
    answer, took = _raw(gw.url, _head("/v1/moderations", 100))
    assert _status(answer) == 429 and took < 1.0, answer
    error = _error(answer)
    assert error["code"] == "overloaded" and "refused before reading the request" in error["message"]
    assert int(answer.lower().split(b"retry-after: ")[1].split(b"\r\n")[0]) >= 1
    thread.join(10)
    [reply] = results
    assert len(reply.choices) == 128  # the request the upstream answered was judged: no 429 after the LLM call
    assert len([r for r in gw.audit() if r["rail"] == "output"]) == 128
    with gw.http() as http:  # the room is free again
        assert http.post("/v1/moderations", json={"input": "bread"}).status_code == 200


def test_a_chat_whose_answer_would_not_fit_is_refused_before_the_upstream_is_called(gateway, upstream):
    gw = gateway("timeout_s: 0.05")
    upstream.delay_s = 1.5
    results: list = []
    thread = _chat_in_thread(gw, results)  # one answer on its way: a little room reserved
    _wait_for(lambda: len(upstream.requests) == 1)
    with pytest.raises(openai.RateLimitError) as err:  # 128 long answers could not be judged in time
        gw.client().chat.completions.create(model="gpt-test", messages=user("cake"), n=128, max_tokens=2000)
    assert err.value.code == "overloaded" and int(err.value.response.headers["retry-after"]) >= 1
    assert len(upstream.requests) == 1  # refused before the upstream was called: nothing paid for
    thread.join(10)
    assert results[0].choices[0].finish_reason == "stop"
    refused = [r for r in gw.audit() if r["error_type"] == "ScorerOverloaded"]
    assert [(r["rail"], r["prompt"], r["action"]) for r in refused] == [("input", "cake", "block")]  # audited


# -- bodies that never arrive: 408 --------------------------------------------------------------------

def test_a_body_that_never_arrives_is_408_and_the_connection_closed(gateway, upstream):
    gw = gateway(body_timeout_s=0.5)
    answers: dict[str, tuple[bytes, float]] = {}

    def hold(name: str, body: bytes) -> None:
        answers[name] = _raw(gw.url, _head("/v1/chat/completions", 200), body)

    holders = [threading.Thread(target=hold, args=(f"none-{i}", b"")) for i in range(20)]
    holders.append(threading.Thread(target=hold, args=("half", b'{"model": "gpt-test", "mess')))
    for t in holders:
        t.start()
    time.sleep(0.1)
    start = time.monotonic()
    with gw.http() as http:  # the others are answered meanwhile
        assert http.post("/v1/moderations", json={"input": "bread"}).status_code == 200
    assert time.monotonic() - start < 0.4
    for t in holders:
        t.join(5)
    assert len(answers) == 21
    for answer, took in answers.values():
        assert _status(answer) == 408 and 0.4 < took < 2.0, answer
        assert _error(answer)["code"] == "request_timeout" and "0.5 s" in _error(answer)["message"]
        assert answer.endswith(b"[closed]")
    assert upstream.requests == [] and len(gw.audit()) == 1  # only the moderation was judged


def test_a_slow_body_that_arrives_in_time_is_served(gateway, upstream):
    gw = gateway(body_timeout_s=2.0)
    body = json.dumps({"input": "bread"}).encode()

    def slowly():
        for i in range(0, len(body), 5):
            time.sleep(0.05)
            yield body[i:i + 5]

    with gw.http() as http:
        response = http.post("/v1/moderations", content=slowly(), headers={"content-type": "application/json"})
    assert response.status_code == 200 and response.json()["results"][0]["flagged"] is False


def test_the_body_timeout_must_be_positive():
    from beaverguard.server import ServerSettings
    from beaverguard.server.auth import ServerConfigError

    for field in ("body_timeout_s", "max_in_flight"):
        with pytest.raises(ServerConfigError, match=field):
            ServerSettings(upstream="http://127.0.0.1:1/v1", **{field: 0})


def test_answers_and_limits_are_in_the_schema(gateway):
    gw = gateway()
    with gw.http() as http:
        schema = http.get("/openapi.json").json()
    moderation = schema["paths"]["/v1/moderations"]["post"]["responses"]
    assert {"400", "401", "408", "413", "429", "503"} <= set(moderation)
    assert "no_verdict" in moderation["503"]["description"] and "text_too_long" in moderation["413"]["description"]


def test_streams_and_keep_alive_connections_are_not_cut_by_the_body_timeout(gateway, upstream):
    """The timeout is for the body only: a stream that takes longer than it still flows to its end."""
    gw = gateway("streaming: {chunk_chars: 32, overlap_chars: 8}", body_timeout_s=0.3)
    upstream.reply, upstream.chunk_delay_s = "Mix flour and water. " * 12, 0.05  # ~1.5 s of stream
    with httpx.Client(base_url=gw.url, timeout=10) as http:
        for _ in range(2):  # the same connection, twice
            with http.stream("POST", "/v1/chat/completions", json={"model": "gpt-test", "stream": True,
                                                                    "messages": user("bread")}) as response:
                lines = [line for line in response.iter_lines() if line.startswith("data:")]
            assert response.status_code == 200 and lines[-1] == "data: [DONE]"
