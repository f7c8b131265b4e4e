"""API keys: who may call the server, and which policy their requests get.

Keys come from ``$BEAVERGUARD_API_KEYS`` (entries separated by commas) and/or a
file (one entry a line, ``#`` starts a comment). An entry is ``KEY`` or
``KEY POLICY``: a key without a policy gets the default one, so one server can
serve several apps, each under its own policy. Keys are kept only as SHA-256
digests and compared with :func:`hmac.compare_digest` against every key, so
neither the time taken nor any log line tells anything about them.

A client sends its key as ``Authorization: Bearer KEY`` (what the OpenAI SDKs
send as ``api_key``) or as ``X-Beaverguard-Key: KEY``. Where the upstream's key
is passed through, ``Authorization`` belongs to the upstream, so the key must
come in ``X-Beaverguard-Key``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from beaverguard._exceptions import BeaverguardError

__all__ = ["ApiKeys", "ServerConfigError", "KEYS_ENV"]

KEYS_ENV = "BEAVERGUARD_API_KEYS"


class ServerConfigError(BeaverguardError):
    """The server's settings are invalid (the message names the file, line or setting)."""


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class ApiKeys:
    """The keys a client may present, each with the name of the policy it selects.

    Empty, the server asks for no key (fine on loopback; ``serve`` warns about it).
    """

    def __init__(self, entries: Mapping[str, str] | None = None, *, default: str = "default") -> None:
        self.default = default
        self._entries = [(_digest(key), policy) for key, policy in (entries or {}).items()]

    @classmethod
    def load(cls, *, env: str | None = None, file: str | Path | None = None, default: str = "default") -> ApiKeys:
        """Keys from ``env`` (the value of ``$BEAVERGUARD_API_KEYS`` by default) and from ``file``."""
        entries: dict[str, str] = {}
        env = os.environ.get(KEYS_ENV) if env is None else env
        _parse(((f"${KEYS_ENV} entry {i}", e) for i, e in enumerate((env or "").split(","), 1)), entries, default)
        if file is not None:
            path = Path(file)
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise ServerConfigError(f"API key file {path}: cannot read it ({exc.strerror})") from None
            _parse(((f"{path}:{n}", line.split("#", 1)[0]) for n, line in enumerate(lines, 1)), entries, default)
        return cls(entries, default=default)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:  # never the keys
        return f"ApiKeys({len(self._entries)} keys)"

    @property
    def policies(self) -> set[str]:
        """The policy names the keys select (each must be one the server loads)."""
        return {policy for _, policy in self._entries}

    def policy_for(self, presented: str | None) -> str | None:
        """The policy name of a presented key, or None for a missing or wrong key.

        Every key is compared, whichever matches, so the time does not depend on
        which one (or whether one) did.
        """
        if presented is None:
            return None
        digest, found = _digest(presented), None
        for known, policy in self._entries:
            if hmac.compare_digest(digest, known) and found is None:
                found = policy
        return found


def _parse(entries: Iterable[tuple[str, str]], into: dict[str, str], default: str) -> None:
    for where, entry in entries:
        fields = entry.split()
        if not fields:
            continue
        if len(fields) > 2:
            raise ServerConfigError(f"{where}: expected 'KEY' or 'KEY POLICY', found {len(fields)} fields")
        into[fields[0]] = fields[1] if len(fields) == 2 else default
