"""The ASGI app: routes, key check, limits and lifespan; the work is in ``chat`` and ``moderation``.

Endpoints (all under the API-key check but the three probes)::

    POST /v1/chat/completions   OpenAI's, guarded on both rails (streamed too)
    POST /v1/moderations        OpenAI's moderation schema, answered by the input rail
    POST /v1/guard/check        one decision, as `beaverguard check` prints it
    POST /v1/guard/score        raw scores of the model, no decision (the caller's policy decides)
    GET  /v1/guard/model        the model, its labels and thresholds under the caller's policy
    GET  /healthz  /readyz  /metrics
    GET  /docs  /openapi.json   the reference (a page that loads nothing from elsewhere) and the schema

In front of the routes, outermost first: ``x-request-id`` on every answer, the
HTTP metrics, the last-resort 500, admission at the door (``admission``: the
in-flight limit, a saturated guard's 429, both before the body is read), the
body timeout (408) and the body-size limit (413).
"""

# No `from __future__ import annotations` here: FastAPI reads the routes' annotations, some of them local.
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Security
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import Scope

import beaverguard
from beaverguard._exceptions import ScorerOverloaded
from beaverguard._types import Exchange
from beaverguard.server import admission
from beaverguard.server.chat import chat_completions
from beaverguard.server.docs import render_docs
from beaverguard.server.errors import ApiError, CatchAll, install_handlers
from beaverguard.server.guards import (
    ServerGuard, load_guards, no_verdict, require_verdicts, too_busy,
)
from beaverguard.server.limits import BodyLimit, BodyTimeout
from beaverguard.server.metrics import CONTENT_TYPE_LATEST, HttpMetrics, Metrics
from beaverguard.server.moderation import moderate
from beaverguard.server.openai_schema import (
    ChatCompletion, ChatCompletionRequest, CheckRequest, CheckResult, ErrorResponse, ModelInfo, ModerationRequest,
    ModerationResponse, ScoreExchange, ScoreRequest, ScoreResponse,
)
from beaverguard.server.settings import DEFAULT_POLICY, ServerSettings
from beaverguard.server.request_id import RequestId, request_id
from beaverguard.server.upstream import Upstream

__all__ = ["create_app"]

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer KEY (the OpenAI SDKs' api_key)")
_key_header = APIKeyHeader(name="X-Beaverguard-Key", auto_error=False,
                           description="The key, where Authorization is passed through to the upstream")
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text} for status, text in {
        400: "Malformed JSON, a wrong type, text that is not valid Unicode (a lone surrogate), or blocked where "
             "the policy says raise",
        401: "A missing or wrong API key",
        408: "The body did not arrive whole within the server's body timeout (request_timeout)",
        413: "The body is over the size limit (request_too_large), or a text too long to be judged within the "
             "policy's timeout_s (text_too_long)",
        429: "Scoring is overloaded, or too many requests are in flight (overloaded); retry after Retry-After "
             "seconds"}.items()}
_UPSTREAM_ERRORS = {status: {"model": ErrorResponse, "description": text} for status, text in {
    502: "The upstream LLM could not be reached or answered 5xx (under on_error: block)",
    504: "The upstream LLM did not answer in time"}.items()}
_SCORING_ERRORS = {503: {"model": ErrorResponse, "description": "No verdict (no_verdict): scoring timed out or "
                                                                 "failed, so nothing was judged"}}


def create_app(settings: ServerSettings) -> FastAPI:
    """The server's ASGI app. Guards are built here, so a bad policy or model fails now, not at the first request."""
    metrics = Metrics()
    guards = load_guards(settings.policies, model=settings.model, metrics=metrics, watch=settings.watch,
                         shadows=settings.shadows)
    metrics.watch_queue(lambda: sum(g.pending for g in guards.values()))
    upstream = Upstream(settings.upstream, api_key=settings.upstream_api_key,
                        passthrough=settings.upstream_auth == "passthrough", timeout_s=settings.upstream_timeout_s,
                        connect_timeout_s=settings.connect_timeout_s, max_connections=settings.max_connections)
    keys = settings.api_keys
    header_only = settings.upstream_auth == "passthrough"  # Authorization belongs to the upstream then

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await upstream.aclose()
        for guard in guards.values():
            guard.close()  # flushes the audit logs

    # FastAPI's /docs and /redoc load their scripts from a CDN (blank offline): /docs is our own page instead
    app = FastAPI(title="beaverguard", version=beaverguard.__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None,
                  description="A guarding gateway in front of an OpenAI-compatible LLM, and a moderation service.")
    install_handlers(app)

    def policy_of(bearer: str | None, header: str | None) -> str | None:
        """The policy name of the caller's key (None: missing or wrong)."""
        if not keys:
            return DEFAULT_POLICY
        presented = header if header is not None or header_only else bearer
        return keys.policy_for(presented)

    def guard_for(scope: Scope) -> ServerGuard | None:
        """The caller's guard from the raw headers (the door's, before anything is parsed)."""
        headers = dict(scope.get("headers") or ())
        auth = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, credentials = auth.partition(" ")
        bearer = credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None
        header = headers.get(b"x-beaverguard-key")
        name = policy_of(bearer, header.decode("latin-1") if header is not None else None)
        return guards.get(name) if name is not None else None

    # innermost first: each add_middleware wraps the ones before it
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(BodyTimeout, timeout_s=settings.body_timeout_s)
    app.add_middleware(admission.Door, max_in_flight=settings.max_in_flight, metrics=metrics, guard_for=guard_for)
    app.add_middleware(CatchAll)  # inside the metrics, so a 500 is counted
    app.add_middleware(HttpMetrics, metrics=metrics, endpoints=lambda: {r.path for r in app.routes})
    app.add_middleware(RequestId)  # outermost: every answer has its x-request-id, errors and refusals too
    app.state.guards, app.state.metrics, app.state.upstream = guards, metrics, upstream

    async def authorized(bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
                         header: Annotated[str | None, Security(_key_header)]) -> ServerGuard:
        """The guard of the caller's policy; 401 without a valid key (where keys are configured)."""
        name = policy_of(bearer.credentials if bearer else None, header)
        if name is None:
            where = "X-Beaverguard-Key" if header_only else "Authorization: Bearer (or X-Beaverguard-Key)"
            raise ApiError(401, f"missing or wrong API key; send it as {where}", code="invalid_api_key",
                           headers={"www-authenticate": "Bearer"})
        return guards[name]

    Guarded = Annotated[ServerGuard, Depends(authorized)]

    @app.post("/v1/chat/completions", response_model=ChatCompletion, tags=["openai"],
              responses={**_ERRORS, **_UPSTREAM_ERRORS,
                         200: {"content": {"text/event-stream": {}}, "description": "A completion, or a stream"}})
    async def chat(body: ChatCompletionRequest, request: Request, guard: Guarded) -> Response:
        """OpenAI's chat completions, guarded: input rail, the upstream LLM, output rail."""
        return await chat_completions(guard, upstream, metrics, body, request.headers.get("authorization"),
                                      request_id(request))

    @app.post("/v1/moderations", response_model=ModerationResponse, tags=["openai"],
              responses={**_ERRORS, **_SCORING_ERRORS})
    async def moderations(body: ModerationRequest, request: Request, guard: Guarded) -> JSONResponse:
        """OpenAI's moderation endpoint, answered by the input rail of the caller's policy."""
        # Returned as built (the response model documents it): validating 75 map entries again costs time.
        return JSONResponse(await moderate(guard, metrics, body, request_id(request)))

    @app.post("/v1/guard/check", response_model=CheckResult, tags=["guard"],
              responses={**_ERRORS, **_SCORING_ERRORS})
    async def check(body: CheckRequest, request: Request, guard: Guarded) -> JSONResponse:
        """One decision on one rail, as `beaverguard check` prints it (audited)."""
        prompt: Any = body.prompt if isinstance(body.prompt, str) else [
            m.model_dump(exclude_unset=True) for m in body.prompt]
        rail = body.rail or ("output" if body.response is not None else "input")
        if rail == "output":  # the schema refuses rail: output without a response (400)
            response = body.response if isinstance(body.response, str) else body.response.model_dump(
                exclude_unset=True)
            planned = guard.plan_check("output", prompt, response, param="response")
        else:
            planned = guard.plan_check("input", prompt, param="prompt")
        decision = await guard.checked(planned, request_id=request_id(request), channel=body.channel)
        require_verdicts(guard, [decision], metrics, "/v1/guard/check")
        return JSONResponse(decision.summary())

    @app.post("/v1/guard/score", response_model=ScoreResponse, tags=["guard"],
              responses={**_ERRORS, **_SCORING_ERRORS})
    async def score(body: ScoreRequest, guard: Guarded) -> JSONResponse:
        """Raw scores of the server's model, no decision: the caller's own policy decides (not audited)."""
        if not guard.ready:
            raise no_verdict(guard, "model not loaded: see /readyz")
        exchanges = [_exchange(e) for e in body.exchanges]
        cost = sum(guard.plan_exchange(e, param=f"exchanges.{i}") for i, e in enumerate(exchanges))
        retry = admission.refusal(guard, cost)
        if retry is not None:
            raise too_busy(retry, metrics, "/v1/guard/score")
        try:
            scores = await guard.score_raw(exchanges)
        except ScorerOverloaded as exc:
            raise too_busy(exc.retry_after_s, metrics, "/v1/guard/score") from None
        except TimeoutError:
            raise no_verdict(guard, "TimeoutError") from None
        except Exception as exc:  # noqa: BLE001 - any scorer failure is the caller's to handle by its policy
            raise no_verdict(guard, type(exc).__name__) from None
        labels = list(guard.scorer.labels)
        return JSONResponse({"model": guard.model_name, "labels": labels,
                             "results": [{"scores": {k: float(s[k]) for k in labels}} for s in scores]})

    @app.get("/v1/guard/model", response_model=ModelInfo, tags=["guard"],
             responses={401: _ERRORS[401], **_SCORING_ERRORS})
    async def model(guard: Guarded) -> dict[str, Any]:
        """The model behind the scores, and where each label fires on each rail under the caller's policy."""
        if not guard.ready:
            raise ApiError(503, "the model is not loaded (see /readyz)", type="scorer_error", code="model_unavailable")
        return guard.model_info()

    @app.get("/healthz", tags=["probes"])
    async def healthz() -> dict[str, str]:
        """Alive."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["probes"], responses={503: {"description": "A policy's model did not load"}})
    async def readyz() -> JSONResponse:
        """Ready: every policy is valid (else the server would not have started) and its model loaded."""
        missing = [name for name, g in guards.items() if not g.ready]
        body = {"status": "unavailable" if missing else "ready",
                "policies": {name: g.model_name if g.ready else None for name, g in guards.items()}}
        return JSONResponse(body, status_code=503 if missing else 200)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        """The API's reference, from /openapi.json, as a page that loads nothing from elsewhere."""
        return HTMLResponse(render_docs(app.openapi()))

    @app.get("/metrics", tags=["probes"], response_class=Response,
             responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}})
    async def prometheus() -> Response:
        """Prometheus metrics."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    _without_422(app)
    return app


def _without_422(app: FastAPI) -> None:
    """Drop FastAPI's default 422 from the schema: this server answers invalid bodies with 400, as OpenAI does."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    operation.get("responses", {}).pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi


def _exchange(e: ScoreExchange) -> Exchange:
    """An exchange to score; turns before the prompt go in as its context (the conversation contract)."""
    return Exchange(e.prompt, e.response, context=tuple((r, t) for r, t in e.context or ()))
