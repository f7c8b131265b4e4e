"""A guarded retriever: documents a RAG chain hands to the model are judged as documents first.

    retriever = GuardedRetriever(guard=guard, inner=vector_store.as_retriever())

Each retrieved document's text goes through the input rail on the ``document``
channel, where the default policy blocks an injection ("ignore your previous
instructions and ..." hidden in a web page or an e-mail) and the harm rules apply
as to any text the model reads. A document the rail blocks is dropped
(``on_block="drop"``, the default) or kept with its text replaced by the policy's
message (``"mark"``), so the chain can say that a source was withheld. Every
document's decision is in its ``metadata["beaverguard"]`` and in the audit log,
whose records name the channel.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from beaverguard._guard import Guard
from beaverguard._types import Decision

__all__ = ["GuardedRetriever"]


class GuardedRetriever(BaseRetriever):
    """``inner`` whose documents pass the guard's input rail on the ``document`` channel."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    guard: Guard
    inner: BaseRetriever
    on_block: Literal["drop", "mark"] = "drop"

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        docs = self.inner.invoke(query, config={"callbacks": run_manager.get_child()})
        return self._kept(docs, [self.guard.check_input_sync(d.page_content, channel="document") for d in docs])

    async def _aget_relevant_documents(self, query: str, *,
                                       run_manager: AsyncCallbackManagerForRetrieverRun) -> list[Document]:
        docs = await self.inner.ainvoke(query, config={"callbacks": run_manager.get_child()})
        decisions = await asyncio.gather(*(self.guard.check_input(d.page_content, channel="document") for d in docs))
        return self._kept(docs, list(decisions))

    def _kept(self, docs: list[Document], decisions: list[Decision]) -> list[Document]:
        out = []
        for doc, decision in zip(docs, decisions, strict=True):
            meta = {**doc.metadata, "beaverguard": _summary(decision)}
            if not decision.blocked:
                out.append(doc.model_copy(update={"metadata": meta}))
            elif self.on_block == "mark":
                out.append(Document(page_content=decision.text, metadata=meta, id=doc.id))
        return out


def _summary(decision: Decision) -> dict[str, Any]:
    return {"action": decision.action.value, "categories": list(decision.categories),
            "request_id": decision.request_id, "error": decision.error}
