"""``beaverguard serve``: a guarding gateway in front of any OpenAI-compatible LLM.

    pip install "beaverguard[server]"
    beaverguard serve --policy policy.yaml --upstream http://127.0.0.1:8000/v1

Point an OpenAI client's base URL at it: ``/v1/chat/completions`` runs the input
rail, the upstream LLM and the output rail (streamed answers through the
streaming rail); ``/v1/moderations`` answers in OpenAI's moderation schema;
``/v1/guard/check``, ``/v1/guard/score`` and ``/v1/guard/model`` expose the
guard itself. In Python, ``create_app(ServerSettings(...))`` builds the ASGI app.

Importing this package loads nothing heavy (the command line imports it to add
``serve``); ``create_app`` and ``ServerSettings`` load FastAPI on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "ServerSettings", "ApiKeys"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from beaverguard.server.app import create_app

        return create_app
    if name == "ServerSettings":
        from beaverguard.server.settings import ServerSettings

        return ServerSettings
    if name == "ApiKeys":
        from beaverguard.server.auth import ApiKeys

        return ApiKeys
    raise AttributeError(f"module 'beaverguard.server' has no attribute {name!r}")
