"""``beaverguard serve``: the flags, and starting uvicorn on the app.

Only argparse is imported until the command runs, so ``beaverguard`` works
without the ``server`` extra and says how to install it when ``serve`` needs it.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

__all__ = ["add_serve_parser", "cmd_serve"]

logger = logging.getLogger("beaverguard.server")


def add_serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the guarding gateway: OpenAI-compatible, with moderation (server extra)",
                       description="Serve /v1/chat/completions guarded on both rails in front of --upstream, "
                                   "/v1/moderations, /v1/guard/{check,score,model}, /healthz, /readyz, /metrics. "
                                   "API keys come from $BEAVERGUARD_API_KEYS and/or --api-keys-file "
                                   "(entries 'KEY' or 'KEY POLICY'); the upstream's key from "
                                   "$BEAVERGUARD_UPSTREAM_API_KEY.")
    p.add_argument("--policy", action="append", default=[], metavar="[NAME=]FILE",
                   help="policy YAML; NAME=FILE loads another one, for the keys that name it (repeatable). "
                        "Default: the built-in policy")
    p.add_argument("--shadow-policy", action="append", default=[], metavar="[NAME=]FILE",
                   help="a candidate policy decided alongside the policy NAME (default: the default one) on every "
                        "check, from the same scores, never enforced: audited as `shadow`, counted in "
                        "beaverguard_shadow_decisions (repeatable)")
    p.add_argument("--upstream", required=True, help="base URL of the OpenAI-compatible LLM, e.g. "
                                                     "http://127.0.0.1:8000/v1")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--model", type=Path, help="model directory (default: each policy's, else the embedded one)")
    p.add_argument("--api-keys-file", type=Path, help="file of API keys, one 'KEY [POLICY]' a line")
    p.add_argument("--upstream-auth", choices=["key", "passthrough"], default="key",
                   help="key: send $BEAVERGUARD_UPSTREAM_API_KEY upstream (default); passthrough: send the "
                        "client's Authorization header on (clients then send their key as X-Beaverguard-Key)")
    p.add_argument("--upstream-timeout", type=float, default=60.0, metavar="S",
                   help="seconds to wait for the upstream's answer, or between two chunks of its stream")
    p.add_argument("--max-body-bytes", type=int, default=4 * 1024 * 1024, help="larger bodies get 413")
    p.add_argument("--body-timeout", type=float, default=15.0, metavar="S",
                   help="seconds for a request body to arrive whole, else 408 and the connection is closed")
    p.add_argument("--max-in-flight", type=int, default=512, metavar="N",
                   help="requests in flight at once (per worker); one more gets 429 before its body is read")
    p.add_argument("--keep-alive-timeout", type=int, default=5, metavar="S",
                   help="seconds an idle keep-alive connection is kept open (uvicorn's timeout_keep_alive)")
    p.add_argument("--no-watch", action="store_true", help="do not reload a policy file when it changes")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_serve)


def _policies(values: list[str]) -> dict[str, Path | None]:
    from beaverguard.server.settings import DEFAULT_POLICY

    policies: dict[str, Path | None] = {}
    for value in values:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)=(.+)", value)
        name, path = (match.group(1), match.group(2)) if match and not Path(value).exists() else (DEFAULT_POLICY, value)
        if name in policies:
            raise SystemExit(f"beaverguard serve: --policy {name!r} given twice")
        policies[name] = Path(path)
    policies.setdefault(DEFAULT_POLICY, None)
    return policies


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from beaverguard.server.app import create_app
    except ImportError as exc:
        print(f"beaverguard serve needs the server extra ({exc.name} is missing): "
              "pip install 'beaverguard[server]'", file=sys.stderr)
        return 2
    from beaverguard.server.auth import ApiKeys
    from beaverguard.server.settings import ServerSettings

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per upstream call; uvicorn's access log has them
    settings = ServerSettings(
        upstream=args.upstream, policies=_policies(args.policy), model=args.model,
        shadows={name: path for name, path in _policies(args.shadow_policy).items() if path is not None},
        api_keys=ApiKeys.load(file=args.api_keys_file), upstream_auth=args.upstream_auth,
        upstream_api_key=ServerSettings.upstream_key_from_env(), upstream_timeout_s=args.upstream_timeout,
        max_body_bytes=args.max_body_bytes, body_timeout_s=args.body_timeout, max_in_flight=args.max_in_flight,
        watch=not args.no_watch)
    app = create_app(settings)
    if not settings.api_keys:
        logger.warning("beaverguard serve: no API keys configured ($BEAVERGUARD_API_KEYS, --api-keys-file): "
                       "anyone who can reach %s:%s can use it", args.host, args.port)
    logger.info("beaverguard serve: policies %s, upstream %s, %d API keys", sorted(settings.policies),
                settings.upstream, len(settings.api_keys))
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                timeout_keep_alive=args.keep_alive_timeout)
    return 0
