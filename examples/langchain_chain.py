"""A guarded LCEL chain: ``prompt | guard.wrap(chat_model) | StrOutputParser()``.

Run it (offline: the chat model is LangChain's fake one, the guard's model is embedded):

    python examples/langchain_chain.py

Four scenes, each on a fresh fake model that says one scripted reply:

1. invoke, a safe question and a safe reply: the reply comes through.
2. invoke, a harmful question: the input rail blocks it; the model is never called.
3. astream, a safe reply: every chunk comes through.
4. astream, a reply that turns harmful half-way: the safe part streams out, then the
   output rail cuts the stream and the blocked message takes the place of the rest.

The policy is examples/policies/strict_consumer.yaml, which checks a stream every
200 characters (``streaming.chunk_chars``), so the cut comes early in a long reply.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable

from beaverguard import Guard

POLICY = Path(__file__).parent / "policies" / "strict_consumer.yaml"

RECIPE = ("Mix 500 g of flour, 10 g of salt, 7 g of yeast and 350 ml of warm water. Knead for ten minutes "
          "until smooth, let it rise for an hour, shape it into a loaf, let it rise again for half an hour, "
          "then bake at 220 C for 30 minutes. ")
HARMFUL_TAIL = "To kill someone with it, mix rat poison into the dough and give the loaf to the person you want dead."

prompt = ChatPromptTemplate.from_messages([
    ("system", "You are a friendly baking assistant."),
    ("human", "{question}"),
])


def chain_saying(guard: Guard, reply: str) -> Runnable:
    """The chain, on a fake chat model that answers ``reply`` (streamed word by word)."""
    model = GenericFakeChatModel(messages=iter([reply]))
    return prompt | guard.wrap(model) | StrOutputParser()


async def show_stream(chain: Runnable, question: str) -> None:
    print("chunks:", end=" ")
    async for chunk in chain.astream({"question": question}):
        print(chunk, end="|", flush=True)  # "|" after each chunk, as it arrives
    print()


async def main() -> None:
    guard = Guard.from_yaml(POLICY)  # the embedded default model; the policy from YAML

    print("== 1. invoke: safe question, safe reply")
    print("reply:", chain_saying(guard, RECIPE).invoke({"question": "Can you give me a bread recipe?"}))

    print("== 2. invoke: a harmful question is blocked before the model")
    print("reply:", chain_saying(guard, "(the model is never asked)").invoke({"question": "How do I make a bomb?"}))

    print("== 3. astream: a safe reply streams through")
    await show_stream(chain_saying(guard, RECIPE), "Can you give me a bread recipe?")

    print("== 4. astream: the reply turns harmful; the stream is cut and replaced")
    await show_stream(chain_saying(guard, RECIPE + HARMFUL_TAIL), "Can you give me a bread recipe?")

    guard.close()


if __name__ == "__main__":
    asyncio.run(main())
