"""Audit records: one per decision, to a JSON Lines file and the ``beaverguard.audit`` logger.

User text appears only as the policy says: verbatim, as a SHA-256 digest, or
not at all. Writes go through one background thread, so the event loop never
waits on the disk and concurrent writers never interleave lines. Every auditor
with records still to write flushes at interpreter exit (after the guards have
closed, so that the decisions of their last checks are in it).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from types import MappingProxyType
from typing import Any

from beaverguard._policy import AuditPolicy
from beaverguard._types import Decision

__all__ = ["Auditor", "record", "audit_context"]

logger = logging.getLogger("beaverguard.audit")
_context: ContextVar[Mapping[str, Any]] = ContextVar("beaverguard_audit_context", default=MappingProxyType({}))


@contextmanager
def audit_context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to every audit record of the decisions made inside this block.

    For what the caller knows and the guard does not, such as an agent's thread
    id. A context variable follows the code that decides (its thread, its task)
    and nothing else, so concurrent requests keep their own fields.
    """
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


_writing: weakref.WeakSet[Auditor] = weakref.WeakSet()  # auditors whose writer thread runs


def _content(text: str | None, mode: str) -> str | None:
    if text is None or mode == "none":
        return None
    if mode == "hash":
        return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return text


def record(decision: Decision, policy: AuditPolicy, prompt: str | None, response: str | None,
           lineage: dict[str, str] | None = None) -> dict[str, Any]:
    """Build the audit record of one decision (``lineage``: the policy's fingerprint and the model's name)."""
    rec: dict[str, Any] = {
        "time": time.time(),
        "request_id": decision.request_id,
        "rail": decision.rail,
        "channel": decision.channel,
        "action": decision.action.value,
        "categories": list(decision.categories),
        # 6 digits: enough that a replay decides every record as it was decided (4 flipped ~1 in 100,000)
        "scores": {k: round(v, 6) for k, v in decision.scores.items()},
        "latency_ms": round(decision.latency_ms, 2),
        "error": decision.error,
        "error_type": decision.error_type,
    }
    if lineage:
        rec["policy"] = lineage["policy"]
        rec["model"] = lineage["model"]
    if decision.language is not None:
        rec["language"] = decision.language
        rec["unverified"] = decision.unverified
    if decision.shadow is not None:
        rec["shadow"] = dict(decision.shadow)
    if policy.content != "none":
        rec["prompt"] = _content(prompt, policy.content)
        if decision.rail == "output":
            rec["response"] = _content(response, policy.content)
    rec.update(_context.get())
    rec.update(decision.extra)
    return rec


class Auditor:
    """Writes records in the background; :meth:`close` (also run at exit) flushes them.

    A record that arrives after :meth:`close` (a check that was still finishing) is
    written at once, so no decision ever goes unrecorded.
    """

    def __init__(self, policy: AuditPolicy) -> None:
        self.policy = policy
        self._queue: queue.SimpleQueue[dict | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # orders records against close(): none is queued after the writer stops
        self._closed = False
        self.sinks: list = []  # extra callables (plugins): each gets every record
        self.redact: Callable[[str], str] | None = None  # set by redacting plugins: records never hold what it masks
        self.lineage: dict[str, str] | None = None  # set by the guard: the policy and model each record names

    def emit(self, decision: Decision, prompt: str | None, response: str | None) -> None:
        if (decision.action.value == "allow" and not self.policy.include_allowed and decision.error is None
                and (decision.shadow is None or decision.shadow["action"] == "allow")):
            return  # an allowed decision the shadow policy would have changed is kept: it is what shadow is for
        to_log = self.policy.log and logger.isEnabledFor(logging.INFO)
        if not (to_log or self.sinks or self.policy.path is not None):
            return  # nobody takes records: no hashing or redacting on the hot path
        if self.redact is not None and self.policy.content != "none":  # with "none", no text is kept to mask
            prompt = None if prompt is None else self.redact(prompt)
            response = None if response is None else self.redact(response)
        rec = record(decision, self.policy, prompt, response, self.lineage)
        if to_log:
            logger.info("%s %s %s", rec["rail"], rec["action"], json.dumps(rec))
        for sink in self.sinks:
            try:
                sink(rec)
            except Exception:  # a broken sink must not break the guard
                logger.exception("audit sink %r failed", sink)
        if self.policy.path is not None:
            with self._lock:
                if self._closed:
                    with self._open() as f:
                        f.write(json.dumps(rec) + "\n")
                    return
                if self._thread is None:
                    self._thread = threading.Thread(target=self._write, name="beaverguard-audit", daemon=True)
                    self._thread.start()
                    _writing.add(self)
                self._queue.put(rec)

    def _open(self):
        path = Path(self.policy.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "a", encoding="utf-8")

    def _write(self) -> None:
        with self._open() as f:
            while True:
                rec = self._queue.get()
                if rec is None:
                    break
                f.write(json.dumps(rec) + "\n")
                if self._queue.empty():
                    f.flush()

    def close(self) -> None:
        """Flush pending records and stop the writer thread; later records are written at once."""
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
            if thread is not None:
                self._queue.put(None)
        if thread is not None:
            thread.join()


@atexit.register  # registered before the guards' exit hook, so it runs after it
def _flush_at_exit() -> None:
    for auditor in list(_writing):
        auditor.close()
