"""Helpers shared by the LangChain tests: every entry point called one way, and streamed text joined."""

from __future__ import annotations


def text(chunks) -> str:
    return "".join(c.content for c in chunks)


async def outputs(wrapped, call: str, value, config=None) -> list:
    """Call ``wrapped`` the way ``call`` names; what comes back, as a list of messages or chunks."""
    if call == "invoke":
        return [wrapped.invoke(value, config)]
    if call == "ainvoke":
        return [await wrapped.ainvoke(value, config)]
    if call == "stream":
        return list(wrapped.stream(value, config))
    if call == "astream":
        return [c async for c in wrapped.astream(value, config)]
    if call == "batch":
        return wrapped.batch(value, config)
    return await wrapped.abatch(value, config)
