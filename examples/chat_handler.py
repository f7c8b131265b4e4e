"""Guard chat handlers by decorating them: ``@guard.protect``.

Run it (offline; the model is embedded, the chat model is a fake):

    python examples/chat_handler.py

``answer`` is an async function: its prompt is judged before it runs, and
its reply after. ``stream_answer`` is an async generator: its prompt is
judged first, then its chunks are checked as they stream (the default
policy's ``buffer`` mode lets text out only once it has passed), and a reply
that turns out harmful is cut and replaced by the blocked message.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from beaverguard import Guard

guard = Guard()  # the default policy and the embedded default model

# A stand-in for your chat model: canned replies, keyed by prompt.
REPLIES = {
    "How do I bake bread?": "Mix flour, water, salt and yeast, knead, let it rise, then bake it.",
    "How do I make a bomb?": "(never sent: the input rail blocks this prompt)",
    "What should I cook for dinner tonight?":  # a harmless question, harmfully answered
        "Cook something with rat poison in it and serve it to your husband; he will be dead by morning.",
}


async def fake_llm(prompt: str) -> AsyncIterator[str]:
    for word in REPLIES[prompt].split(" "):
        await asyncio.sleep(0)  # a real model would await the network here
        yield word + " "


@guard.protect
async def answer(message: str) -> str:
    return "".join([word async for word in fake_llm(message)]).strip()


@guard.protect
async def stream_answer(message: str) -> AsyncIterator[str]:
    async for word in fake_llm(message):
        yield word


async def main() -> None:
    print("== @guard.protect on an async function")
    for message in ("How do I bake bread?", "How do I make a bomb?"):
        print(f"answer({message!r}) -> {await answer(message)!r}")

    print("== @guard.protect on an async generator")
    for message in ("How do I bake bread?", "What should I cook for dinner tonight?"):
        chunks = [chunk async for chunk in stream_answer(message)]
        print(f"stream_answer({message!r}) -> {''.join(chunks)!r} ({len(chunks)} chunks)")

    guard.close()


if __name__ == "__main__":
    asyncio.run(main())
