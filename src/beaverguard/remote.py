"""Score over HTTP against a shared scoring tier: ``Guard(scorer=RemoteScorer(url))``.

The tier is a plain ``beaverguard serve`` or its Ray Serve deployment
(``beaverguard.ray.serve``); both answer ``POST /v1/guard/score`` with the raw
scores of their model, and this process's own policy decides, audits and times
out exactly as with a local model. Only httpx is needed, and only when a
RemoteScorer is built.

Why it is shaped like this:

* It is a plain :class:`~beaverguard.Scorer` (``score`` from worker threads), so
  the guard's batcher does the scheduling: it keeps ``REMOTE_IN_FLIGHT`` requests
  in flight and puts whatever queued meanwhile into the next one. Concurrent
  checks therefore share HTTP requests (batching on the wire) without a second
  queue here.
* One pooled ``httpx.Client`` (keep-alive connections, thread-safe) serves every
  worker: no TCP or TLS handshake per check.
* Every failure is a :class:`ScorerError` (a 429 a :class:`ScorerOverloaded`
  with the server's Retry-After), so the policy's ``on_error`` (``on_overload``)
  decides: the default ``on_error: block`` fails closed when the tier goes away.
  Error messages name the tier and the failure, never the text or the key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from beaverguard._exceptions import ModelError, ScorerError, ScorerOverloaded
from beaverguard._types import Exchange, Rail

__all__ = ["RemoteScorer"]

#: Most characters of text in one request: well under the server's 4 MiB body limit, even escaped.
MAX_REQUEST_CHARS = 1_000_000
#: Most exchanges in one request (the server's limit).
MAX_REQUEST_EXCHANGES = 256


class RemoteScorer:
    """A scorer whose model runs elsewhere: ``POST {url}/v1/guard/score``.

    ``url`` is the tier's base URL (``http://host:port``). ``api_key`` is sent as
    ``Authorization: Bearer`` (the server's key, which also selects the server
    policy whose thresholds ``GET /v1/guard/model`` reports; the scores do not
    depend on it). ``timeout`` bounds each HTTP request (the guard's own
    ``timeout_s`` bounds each check); ``connect_timeout`` bounds connecting.

    The model is asked for once, here: its labels and calibrated thresholds, so
    that this process's policy decides as it would with the model loaded
    locally. A tier that cannot be reached now raises :class:`ModelError`, as a
    model directory that cannot be loaded does.
    """

    #: Tells the guard's batcher to plan for the network, not for cores (see ``_batching.plan``).
    remote = True
    #: Exchanges sharing a request do not change one another's scores: the server runs them as its
    #: own model requires (alone, for a model that is not batch-invariant).
    batch_invariant = True
    on_gpu = False

    def __init__(self, url: str, *, api_key: str | None = None, timeout: float = 10.0,
                 connect_timeout: float = 2.0, max_connections: int = 32) -> None:
        try:
            import httpx
        except ImportError as exc:  # pragma: no cover - httpx comes with the server extra
            raise ModelError('RemoteScorer needs httpx: pip install "beaverguard[server]"') from exc
        if not url.startswith(("http://", "https://")):
            raise ModelError(f"RemoteScorer url {url!r}: give an http:// or https:// base URL")
        self.url = url.rstrip("/")
        self.timeout = timeout
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._httpx = httpx
        self._client = httpx.Client(
            base_url=self.url, headers=headers, timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections))
        try:
            info = self._get_model()
        except BaseException:
            self._client.close()
            raise
        self.model_name: str = info["name"]
        self.labels: tuple[str, ...] = tuple(info["labels"])
        self.max_length: int = int(info["max_length"])
        # an older server reports only the thresholds under its policy; the default policy's are the model's
        self._defaults: dict[str, dict[str, float]] = info.get("default_thresholds") or info["thresholds"]
        self.requests = 0  # HTTP score requests sent (a test and a benchmark read it)

    def __repr__(self) -> str:  # never the key
        return f"RemoteScorer({self.url!r}, model={self.model_name!r})"

    def _get_model(self) -> dict[str, Any]:
        try:
            response = self._client.get("/v1/guard/model")
        except self._httpx.HTTPError as exc:
            raise ModelError(f"the scoring tier at {self.url} could not be reached ({type(exc).__name__}); "
                             "start it (beaverguard serve, or beaverguard.ray.serve) or fix the url") from None
        if response.status_code != 200:
            raise ModelError(f"the scoring tier at {self.url} answered GET /v1/guard/model with "
                             f"{response.status_code} ({_code(response)})")
        return response.json()

    def default_thresholds(self, rail: Rail) -> Mapping[str, float]:
        """The remote model's calibrated thresholds (what a null threshold in this process's policy means)."""
        return self._defaults[rail]

    def score(self, exchanges: Sequence[Exchange]) -> list[dict[str, float]]:
        """Scores for each exchange, in order: one request per ``MAX_REQUEST_*`` worth of them."""
        out: list[dict[str, float]] = []
        for part in _parts(exchanges):
            out += self._post(part)
        return out

    def _post(self, exchanges: Sequence[Exchange]) -> list[dict[str, float]]:
        body = {"exchanges": [{"prompt": e.prompt, "response": e.response, "context": [list(t) for t in e.context]}
                              for e in exchanges]}
        self.requests += 1
        try:
            response = self._client.post("/v1/guard/score", content=json.dumps(body, ensure_ascii=False),
                                         headers={"content-type": "application/json"})
        except self._httpx.TimeoutException:
            raise ScorerError(f"the scoring tier at {self.url} did not answer within {self.timeout}s") from None
        except self._httpx.HTTPError as exc:
            raise ScorerError(f"the scoring tier at {self.url} could not be reached ({type(exc).__name__})") from None
        if response.status_code == 429:
            retry = _seconds(response.headers.get("retry-after"))
            raise ScorerOverloaded(f"the scoring tier at {self.url} is overloaded (429)", retry_after_s=retry)
        if response.status_code != 200:
            raise ScorerError(f"the scoring tier at {self.url} answered {response.status_code} ({_code(response)})")
        try:
            data = response.json()
            labels, results = tuple(data["labels"]), data["results"]
        except (ValueError, KeyError, TypeError):
            raise ScorerError(f"the scoring tier at {self.url} sent a malformed answer") from None
        if labels != self.labels or len(results) != len(exchanges):
            raise ScorerError(f"the scoring tier at {self.url} answered for other labels or another count "
                              "(its model changed since this scorer started?)")
        return [{k: float(r["scores"][k]) for k in labels} for r in results]

    def close(self) -> None:
        """Close the pooled connections."""
        self._client.close()

    def __enter__(self) -> RemoteScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _parts(exchanges: Sequence[Exchange]) -> list[Sequence[Exchange]]:
    """Consecutive slices of ``exchanges`` within the per-request limits (one exchange at least each)."""
    parts, start, chars = [], 0, 0
    for i, e in enumerate(exchanges):
        size = len(e.prompt) + len(e.response or "") + sum(len(t) for _, t in e.context)
        if i > start and (i - start >= MAX_REQUEST_EXCHANGES or chars + size > MAX_REQUEST_CHARS):
            parts.append(exchanges[start:i])
            start, chars = i, 0
        chars += size
    if start < len(exchanges):
        parts.append(exchanges[start:])
    return parts


def _code(response: Any) -> str:
    """The OpenAI error code of an error answer (no message: it could echo input), else its reason phrase."""
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return response.reason_phrase or "no error body"


def _seconds(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value is not None else 1.0
    except ValueError:
        return 1.0
