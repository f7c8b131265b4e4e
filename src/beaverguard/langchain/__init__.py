"""LangChain integration: a guarded runnable, a guarded chat model, and middleware for agents.

* :class:`GuardedRunnable`: any runnable, chain or callable between the rails.
* :class:`GuardedChatModel`: what ``guard.wrap(chat_model)`` returns; a real
  ``BaseChatModel`` that binds tools, so it can sit inside agents.
* :class:`GuardedRetriever`: a retriever whose documents are judged on the
  ``document`` channel (injections hidden in retrieved text) before a RAG chain uses them.
* :class:`GuardMiddleware`: ``langchain.agents.create_agent`` middleware (needs
  the ``agents`` extra: ``pip install "beaverguard[agents]"``).
"""

from __future__ import annotations

from typing import Any

from beaverguard.langchain.chat_model import GuardedChatModel
from beaverguard.langchain.retriever import GuardedRetriever
from beaverguard.langchain.runnable import GuardedRunnable

__all__ = ["GuardedRunnable", "GuardedChatModel", "GuardedRetriever", "GuardMiddleware"]


def __getattr__(name: str) -> Any:
    # The middleware needs langchain and langgraph, which the core install leaves out.
    if name == "GuardMiddleware":
        try:
            from beaverguard.langchain.middleware import GuardMiddleware
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] not in ("langchain", "langgraph"):
                raise
            raise ImportError(f"GuardMiddleware needs langchain 1.x and langgraph ({exc}); "
                              'install them with: pip install "beaverguard[agents]"') from exc
        return GuardMiddleware
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
