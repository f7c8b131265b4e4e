"""What the server is told: the upstream, the policies, the keys, the limits.

``beaverguard serve`` builds these from its flags and the environment; tests and
embedding code build them directly and pass them to ``create_app``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from beaverguard._policy import Policy
from beaverguard.server.auth import ApiKeys, ServerConfigError

__all__ = ["ServerSettings", "UPSTREAM_KEY_ENV", "DEFAULT_POLICY"]

#: Where the upstream's own API key is read from (``upstream_auth: key``).
UPSTREAM_KEY_ENV = "BEAVERGUARD_UPSTREAM_API_KEY"
#: The name of the policy a request gets when its key names none.
DEFAULT_POLICY = "default"


@dataclass(frozen=True)
class ServerSettings:
    """Everything ``create_app`` needs. Only ``upstream`` is required."""

    #: Base URL of the OpenAI-compatible LLM, as an OpenAI client's ``base_url`` (``http://host:port/v1``).
    upstream: str
    #: Policy name -> a policy file (hot-reloaded under ``watch``), a Policy, or None for the built-in one.
    #: The one named ``default`` serves keys that name no policy, and every request when there are no keys.
    policies: Mapping[str, Path | Policy | None] = field(default_factory=lambda: {DEFAULT_POLICY: None})
    #: Policy name -> a candidate policy file decided alongside it, never enforced (``--shadow-policy``).
    shadows: Mapping[str, Path] = field(default_factory=dict)
    #: Model directory for every policy (default: each policy's ``model``, else the embedded model).
    model: Path | None = None
    #: Client keys and the policy each selects; empty: no key asked for.
    api_keys: ApiKeys = field(default_factory=ApiKeys)
    #: ``key``: send ``upstream_api_key`` (if any) to the upstream; ``passthrough``: send the client's own
    #: ``Authorization`` header on (the client then sends its beaverguard key as ``X-Beaverguard-Key``).
    upstream_auth: Literal["key", "passthrough"] = "key"
    upstream_api_key: str | None = field(default=None, repr=False)
    #: Most seconds to wait for the upstream's answer (between two chunks of a stream), and to connect.
    upstream_timeout_s: float = 60.0
    connect_timeout_s: float = 5.0
    #: Pooled connections to the upstream.
    max_connections: int = 256
    #: Requests with a larger body are refused with 413.
    max_body_bytes: int = 4 * 1024 * 1024
    #: A request body must arrive whole within this many seconds of its headers, else 408 (and the connection
    #: is closed): a client that declares a body and never sends it cannot hold a connection.
    body_timeout_s: float = 15.0
    #: Most requests in flight in this process (each uvicorn worker has its own); one more is refused with 429
    #: (Retry-After: 1) before its body is read.
    max_in_flight: int = 512
    #: Reload a policy file when it changes (the guard's ``watch``).
    watch: bool = True

    def __post_init__(self) -> None:
        if not self.upstream.startswith(("http://", "https://")):
            raise ServerConfigError(f"upstream {self.upstream!r}: give an http:// or https:// base URL, "
                                    "e.g. http://127.0.0.1:8000/v1")
        if DEFAULT_POLICY not in self.policies:
            raise ServerConfigError(f"policies: one must be named {DEFAULT_POLICY!r} "
                                    f"(found {sorted(self.policies)})")
        if set(self.shadows) - set(self.policies):
            raise ServerConfigError(f"shadow policies name policies that are not loaded: "
                                    f"{sorted(set(self.shadows) - set(self.policies))}")
        unknown = self.api_keys.policies - set(self.policies)
        if unknown:
            raise ServerConfigError(f"API keys name policies that are not loaded: {sorted(unknown)}; "
                                    f"loaded: {sorted(self.policies)}")
        if self.upstream_auth not in ("key", "passthrough"):
            raise ServerConfigError(f"upstream_auth {self.upstream_auth!r}: use 'key' or 'passthrough'")
        for name in ("upstream_timeout_s", "connect_timeout_s", "max_connections", "max_body_bytes",
                     "body_timeout_s", "max_in_flight"):
            if getattr(self, name) <= 0:
                raise ServerConfigError(f"{name} must be positive, not {getattr(self, name)}")

    @staticmethod
    def upstream_key_from_env() -> str | None:
        return os.environ.get(UPSTREAM_KEY_ENV) or None
