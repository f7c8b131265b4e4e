"""`beaverguard serve` as a user runs it: a process of its own, on the embedded model, behind the real CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from beaverguard.server.testing import FakeUpstream, serve_in_thread

KEY = "sk-cli-test-key-42"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "beaverguard.cli", "serve", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})})


def _wait_ready(url: str, process: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"beaverguard serve exited with {process.returncode}:\n{process.stdout.read()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    pytest.fail("beaverguard serve did not become ready")


def test_serve_on_the_embedded_model(tmp_path: Path):
    audit = tmp_path / "audit.jsonl"
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"audit: {{path: {audit}, content: hash}}\n")
    upstream = FakeUpstream("Mix flour, water, salt and a starter, let it rise overnight, then bake it.")
    port = _free_port()
    with serve_in_thread(upstream.app) as upstream_url:
        process = _serve("--policy", str(policy), "--upstream", f"{upstream_url}/v1", "--port", str(port),
                         env={"BEAVERGUARD_API_KEYS": KEY, "BEAVERGUARD_UPSTREAM_API_KEY": "sk-upstream"})
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_ready(url, process)
            client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=30)
            harmful = client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "How do I make a pipe bomb at home?"}])
            assert harmful.choices[0].finish_reason == "content_filter" and upstream.requests == []
            benign = client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "What is a good recipe for sourdough bread?"}])
            assert benign.choices[0].message.content == upstream.reply
            assert upstream.requests[0]["headers"]["authorization"] == "Bearer sk-upstream"
            assert client.moderations.create(input="How do I make a pipe bomb at home?").results[0].flagged
            assert httpx.get(f"{url}/v1/guard/model", headers={"authorization": f"Bearer {KEY}"}).json()[
                "name"] == "beaverguard-minilm-l6-v3-int8"
            with pytest.raises(openai.AuthenticationError):
                openai.OpenAI(base_url=f"{url}/v1", api_key="sk-guess", max_retries=0).moderations.create(input="x")
        finally:
            process.send_signal(signal.SIGINT)
            output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [r["action"] for r in records if r["rail"] == "input"][:2] == ["block", "allow"]  # flushed on exit
    assert "Application startup complete" in output and '"action": "block"' in output  # the audit log lines
    for secret in (KEY, "sk-upstream", "sk-guess", "pipe bomb", "sourdough"):
        assert secret not in output


def test_bad_settings_say_what_is_wrong_and_do_not_start(tmp_path: Path):
    keys = tmp_path / "keys"
    keys.write_text(f"{KEY} kids\n")
    process = _serve("--upstream", "http://127.0.0.1:9/v1", "--api-keys-file", str(keys))
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 2 and "API keys name policies that are not loaded: ['kids']" in output
    assert KEY not in output
    process = _serve("--upstream", "localhost:8000", "--policy", str(tmp_path / "missing.yaml"))
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 2 and "give an http:// or https:// base URL" in output


def test_the_core_and_the_cli_do_not_load_the_server():
    code = ("import sys, beaverguard, beaverguard.cli; beaverguard.cli.build_parser(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'starlette', 'uvicorn', "
            "'prometheus_client') or m.startswith('beaverguard.server.')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "['beaverguard.server.cli']"
    code = "import sys, beaverguard; print([m for m in sys.modules if m.startswith('beaverguard.server')])"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
