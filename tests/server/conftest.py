"""The server on a real loopback socket, in front of a fake OpenAI-compatible upstream on another.

``gateway(policy_yaml, ...)`` starts the server (uvicorn, a free port) on the
tiny model, with audit records going verbatim to a file the test can read
back; ``upstream`` is the LLM behind it, recording every request that reached it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from beaverguard.server import ApiKeys, ServerSettings, create_app
from beaverguard.server.testing import FakeUpstream, ServerThread, serve_in_thread
from server_helpers import policy


@dataclass
class Gateway:
    url: str
    app: Any
    audit_path: Path

    def client(self, api_key: str = "unused", **kwargs: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, timeout=20, **kwargs)

    def http(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=20, **kwargs)

    def audit(self) -> list[dict]:
        """The audit records so far (the guards are closed first, which flushes them)."""
        for guard in self.app.state.guards.values():
            guard._auditor.close()
        if not self.audit_path.exists():
            return []
        return [json.loads(line) for line in self.audit_path.read_text().splitlines()]


@pytest.fixture(scope="session")
def _upstream_server() -> Iterator[tuple[FakeUpstream, str]]:
    fake = FakeUpstream()
    with serve_in_thread(fake.app) as url:
        yield fake, f"{url}/v1"


@pytest.fixture
def upstream(_upstream_server) -> FakeUpstream:
    """The upstream LLM, its script reset to the defaults and its record emptied for each test."""
    fake, url = _upstream_server
    fresh = FakeUpstream()
    for name in ("reply", "chunk_chars", "tool_calls", "status", "delay_s", "chunk_delay_s", "models"):
        setattr(fake, name, getattr(fresh, name))
    fake.requests.clear()
    fake.streams_closed = 0
    fake.url = url
    return fake


@pytest.fixture(scope="session")
def _stopping() -> Iterator[list[ServerThread]]:
    """Servers told to stop: each shuts down while the next tests run; all are waited for at the end."""
    servers: list[ServerThread] = []
    yield servers
    for server in servers:
        server.join()


@pytest.fixture
def gateway(tiny_model: Path, upstream: FakeUpstream, tmp_path: Path, _stopping: list[ServerThread]):
    """Start a server: ``gateway(yaml, keys={...}, policies={name: yaml}, **settings)``."""
    started: list[ServerThread] = []

    def start(yaml_text: str = "", *, policies: dict[str, str | Path] | None = None,
              keys: dict[str, str] | None = None, upstream_url: str | None = None, **settings: Any) -> Gateway:
        audit_path = tmp_path / f"audit-{len(started)}.jsonl"
        loaded: dict[str, Any] = {"default": policy(yaml_text, audit_path)}
        for name, p in (policies or {}).items():
            loaded[name] = p if isinstance(p, Path) else policy(p, audit_path)
        settings.setdefault("model", tiny_model)
        app = create_app(ServerSettings(upstream=upstream_url or upstream.url, policies=loaded,
                                        api_keys=ApiKeys(keys or {}), **settings))
        started.append(ServerThread(app))
        return Gateway(started[-1].url, app, audit_path)

    yield start
    for server in started:
        server.stop(wait=False)
        _stopping.append(server)
