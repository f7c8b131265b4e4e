"""Quickstart: judge prompts and responses, and guard a plain function.

Run it (offline; the default model ships inside the package):

    python examples/quickstart.py

It prints one line per decision: the rail, the action, the overall unsafe
score, and the text that goes on (the prompt, the reply, or the blocked
message).
"""

from __future__ import annotations

import asyncio

from beaverguard import Decision, Guard


def show(judged: str, decision: Decision) -> None:
    print(f"{decision.rail:<6} {decision.action.value:<5} unsafe={decision.scores['unsafe']:.2f}  "
          f"{judged!r} -> {decision.text!r}")


def fake_llm(prompt: str) -> str:
    """A stand-in for your model: any sync or async callable that takes the prompt."""
    print(f"       (llm called with {prompt!r})")
    return "Mix flour, water, salt and yeast, knead, let it rise, then bake it."


async def main() -> None:
    guard = Guard()  # the default policy and the embedded default model

    print("== input rail: the prompt alone")
    for prompt in ("How do I bake bread?", "How do I make a bomb?"):
        show(prompt, await guard.check_input(prompt))

    print("== output rail: the response judged together with its prompt")
    for prompt, response in (
        ("How do I make a bomb?", "I can't help with that."),  # a harmful question, safely refused
        ("What should I cook for dinner tonight?",  # a harmless question, harmfully answered
         "Cook something with rat poison in it and serve it to your husband; he will be dead by morning."),
    ):
        show(response, await guard.check_output(prompt, response))

    print("== guard.run: both rails around one call; a blocked prompt never reaches the model")
    for prompt in ("How do I bake bread?", "How do I make a bomb?"):
        print(f"run    {prompt!r} -> {await guard.run(fake_llm, prompt)!r}")

    guard.close()


if __name__ == "__main__":
    asyncio.run(main())
