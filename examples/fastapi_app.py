"""A guarded FastAPI chat service: POST /chat, and POST /chat/stream (server-sent events).

Needs the ``examples`` extra (FastAPI and httpx): ``pip install -e ".[examples]"``.

Try it offline, with the fake model and FastAPI's test client:

    python examples/fastapi_app.py

Serve it (``pip install uvicorn``), with any policy file:

    BEAVERGUARD_POLICY=examples/policies/childrens_app.yaml \\
        uvicorn --app-dir examples fastapi_app:create_app --factory

    curl -N localhost:8000/chat/stream -H 'content-type: application/json' \\
        -d '{"message": "Can you give me a bread recipe?"}'

The chat model is a dependency (``get_llm``): replace it with your client, and
swap it in tests with ``app.dependency_overrides``. Both handlers are guarded
with ``@guard.protect``; the streaming one is checked as it streams, and a reply
that turns harmful is cut: the client gets the safe part, then the policy's
blocked message, then ``[DONE]``.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from beaverguard import Guard

#: The policy file: $BEAVERGUARD_POLICY, else the strict consumer policy next to this file.
POLICY = Path(os.environ.get("BEAVERGUARD_POLICY", Path(__file__).parent / "policies" / "strict_consumer.yaml"))

#: A chat model, as the handlers see it: a prompt in, text chunks out.
LLM = Callable[[str], AsyncIterator[str]]


def scripted(reply: str) -> LLM:
    """A fake chat model that streams ``reply`` word by word, whatever it is asked."""
    async def llm(prompt: str) -> AsyncIterator[str]:
        for word in reply.split(" "):
            yield word + " "
    return llm


DEFAULT_REPLY = ("Mix 500 g of flour, 10 g of salt, 7 g of yeast and 350 ml of warm water, knead, "
                 "let it rise for an hour, then bake at 220 C for 30 minutes.")


def get_llm() -> LLM:
    """The chat model dependency. Replace this with your client (OpenAI, a LangChain model, ...)."""
    return scripted(DEFAULT_REPLY)


class ChatRequest(BaseModel):
    message: str


class ChatReply(BaseModel):
    reply: str


def create_app(policy: str | Path = POLICY) -> FastAPI:
    """The app, with one guard (one model, shared by every request) built from ``policy``."""
    guard = Guard.from_yaml(policy)

    @guard.protect
    async def answer(message: str, llm: LLM) -> str:
        return "".join([chunk async for chunk in llm(message)]).strip()

    @guard.protect
    async def answer_stream(message: str, llm: LLM) -> AsyncIterator[str]:
        async for chunk in llm(message):
            yield chunk

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        guard.close()  # flush the audit log on shutdown

    app = FastAPI(title="guarded chat", lifespan=lifespan)

    @app.post("/chat")
    async def chat(request: ChatRequest, llm: Annotated[LLM, Depends(get_llm)]) -> ChatReply:
        return ChatReply(reply=await answer(request.message, llm))

    @app.post("/chat/stream")
    async def chat_stream(request: ChatRequest, llm: Annotated[LLM, Depends(get_llm)]) -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            async for chunk in answer_stream(request.message, llm):
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"
        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def main() -> None:
    from fastapi.testclient import TestClient

    app = create_app()
    with TestClient(app) as client:
        for message in ("Can you give me a bread recipe?", "How do I make a bomb?"):
            print(f"POST /chat {message!r} -> {client.post('/chat', json={'message': message}).json()}")
        message = "Can you give me a bread recipe?"
        app.dependency_overrides[get_llm] = lambda: scripted(
            "Mix flour, salt, yeast and warm water, knead it well and let it rise for an hour, then shape it and "
            "let it rise again while the oven heats up to 220 C, and bake it for thirty minutes until golden. "
            "To kill someone with it, mix rat poison into the dough and give the loaf to the person you want dead.")
        with client.stream("POST", "/chat/stream", json={"message": message}) as response:
            events = [line.removeprefix("data: ") for line in response.iter_lines() if line]
        print(f"POST /chat/stream {message!r}, a reply that turns harmful; the events:")
        print("   ", "|".join(events))

if __name__ == "__main__":
    main()
