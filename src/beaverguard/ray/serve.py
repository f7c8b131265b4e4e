"""The server as a Ray Serve deployment: a shared scoring tier of N replicas (or autoscaled).

Each replica runs the server's own ASGI app (``beaverguard.server.create_app``),
so the tier answers exactly what ``beaverguard serve`` answers:
``/v1/guard/score`` for :class:`beaverguard.remote.RemoteScorer`, the
moderation and check endpoints, and the guarded chat completions when an
upstream is set. The app is built on each replica (Serve's ingress builder), so
the model is loaded there, once per replica, never pickled from the driver.

    from ray import serve
    serve.start(http_options={"host": "0.0.0.0", "port": 8000})
    serve.run(scoring_app(ServerSettings(upstream=...), num_replicas=4, num_gpus=1), route_prefix="/")

or with Ray's own CLI (an application builder; arguments as ``key=value``)::

    serve run beaverguard.ray.serve:build_app num_replicas=2
    serve run beaverguard.ray.serve:build_app min_replicas=1 max_replicas=8 num_gpus=1 policy=/etc/bg.yaml
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray import serve

from beaverguard._policy import Policy
from beaverguard.ray.data import actor_policy
from beaverguard.server.settings import DEFAULT_POLICY, ServerSettings

__all__ = ["scoring_app", "build_app", "BeaverguardTier", "NO_UPSTREAM"]

#: The upstream of a tier that only scores (``/v1/guard/*``, ``/v1/moderations``): nothing listens there,
#: so a chat completion sent to it fails as an unreachable upstream does (502, audited).
NO_UPSTREAM = "http://127.0.0.1:9/v1"


class BeaverguardTier:
    """The deployment's class: Serve's ingress wraps the server's app around it; it holds no state itself."""


def scoring_app(settings: ServerSettings | None = None, *, num_replicas: int | None = 1,
                autoscaling: Mapping[str, Any] | None = None, num_cpus: float = 1.0, num_gpus: float = 0.0,
                max_ongoing_requests: int = 256, name: str = "beaverguard") -> serve.Application:
    """A Serve application of the server's app: ``num_replicas`` replicas, or ``autoscaling`` (Serve's
    ``autoscaling_config``: ``min_replicas``, ``max_replicas``, ``target_ongoing_requests``, ...).

    Each replica reserves ``num_cpus`` and ``num_gpus``; its policies given as
    objects (or the built-in one) score with one worker per reserved CPU, on CUDA
    where it holds a GPU (a policy file is used as written, and hot-reloaded).
    ``max_ongoing_requests`` is high because the app queues and sheds load itself
    (admission control, 429): Serve's own queue in front would only add latency.
    """
    settings = settings or ServerSettings(upstream=NO_UPSTREAM)

    def build() -> Any:  # runs on each replica
        from beaverguard.server.app import create_app

        return create_app(_sized(settings, num_cpus, num_gpus))

    options: dict[str, Any] = {"name": name, "max_ongoing_requests": max_ongoing_requests,
                               "ray_actor_options": {"num_cpus": num_cpus, "num_gpus": num_gpus}}
    if autoscaling is not None:
        options["autoscaling_config"] = dict(autoscaling)
    else:
        options["num_replicas"] = num_replicas
    deployment = serve.deployment(**options)(serve.ingress(build)(BeaverguardTier))
    return deployment.bind()


def _sized(settings: ServerSettings, cpus: float, gpus: float) -> ServerSettings:
    from dataclasses import replace

    policies: dict[str, Path | Policy | None] = {
        name: p if isinstance(p, str | Path) else actor_policy(p, cpus=cpus, gpus=gpus)
        for name, p in settings.policies.items()}
    return replace(settings, policies=policies)


def build_app(args: dict[str, str]) -> serve.Application:
    """Application builder for ``serve run beaverguard.ray.serve:build_app key=value ...``.

    Keys: ``num_replicas``, or ``min_replicas`` and ``max_replicas`` (autoscaling, with
    ``target_ongoing_requests``); ``num_cpus``, ``num_gpus``; ``policy`` (a policy file),
    ``model`` (a model directory), ``upstream`` (for chat completions; default: none);
    ``api_keys_file``, with ``$BEAVERGUARD_API_KEYS`` (read where ``serve run`` runs), as for ``beaverguard serve``.
    """
    from beaverguard.server.auth import ApiKeys

    known = {"num_replicas", "min_replicas", "max_replicas", "target_ongoing_requests", "num_cpus", "num_gpus",
             "policy", "model", "upstream", "api_keys_file"}
    unknown = set(args) - known
    if unknown:
        raise ValueError(f"unknown arguments {sorted(unknown)}; known: {sorted(known)}")
    settings = ServerSettings(upstream=args.get("upstream", NO_UPSTREAM),
                              policies={DEFAULT_POLICY: Path(args["policy"]) if "policy" in args else None},
                              model=Path(args["model"]) if "model" in args else None,
                              api_keys=ApiKeys.load(file=args.get("api_keys_file")))
    autoscaling = None
    if "min_replicas" in args or "max_replicas" in args:
        autoscaling = {"min_replicas": int(args.get("min_replicas", 1)),
                       "max_replicas": int(args.get("max_replicas", args.get("min_replicas", 1))),
                       "target_ongoing_requests": float(args.get("target_ongoing_requests", 32))}
    return scoring_app(settings, num_replicas=int(args.get("num_replicas", 1)), autoscaling=autoscaling,
                       num_cpus=float(args.get("num_cpus", 1)), num_gpus=float(args.get("num_gpus", 0)))
