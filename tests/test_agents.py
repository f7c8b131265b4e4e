"""``GuardMiddleware`` in a real ``create_agent`` agent: real tools, a scripted tool-calling model, the tiny real model.

The tiny model flags words (bomb, kill, poison, steal, ...; see beaverguard.testing), so each test
can say exactly which text must be caught and which must pass.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from langchain.agents import create_agent
from langchain.agents.structured_output import ToolStrategy
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from pydantic import BaseModel

from beaverguard import GuardBlocked
from beaverguard.langchain import GuardMiddleware
from beaverguard.langchain.testing import ScriptedChatModel, tool_call

REWRITE_INPUT = ("input:\n  default: {action: rewrite}\n  unsafe: {action: rewrite}\n"
                 "  rewrite: '{prompt} (answer safely: {categories})'\n")


class Tools:
    """Real tools that remember what they were asked; ``pages`` is what ``fetch`` finds."""

    def __init__(self, pages: dict[str, str] | None = None) -> None:
        self.ran: list[tuple[str, dict]] = []
        pages = pages or {}

        @tool
        def search(query: str) -> str:
            """Search the web for pages about the query."""
            self.ran.append(("search", {"query": query}))
            return f"found the page {query.replace(' ', '-')}"

        @tool
        def fetch(page: str) -> str:
            """Fetch a page by name."""
            self.ran.append(("fetch", {"page": page}))
            return pages.get(page, "flour water salt and yeast make a bread")

        self.all = [search, fetch]


def calls(name: str, args: dict, text: str = "") -> AIMessage:
    return AIMessage(text, tool_calls=[tool_call(name, args)])


def agent_with(guard, replies, tools=None, **middleware):
    model = ScriptedChatModel(replies=list(replies))
    tools = tools or Tools()
    agent = create_agent(model, tools.all, middleware=[GuardMiddleware(guard, **middleware)],
                         checkpointer=InMemorySaver())
    return agent, model, tools


def ask(text: str, thread: str = "t-1") -> tuple[dict, dict]:
    return {"messages": [HumanMessage(text)]}, {"configurable": {"thread_id": thread}}


async def run(agent, call: str, text: str, thread: str = "t-1") -> dict:
    value, config = ask(text, thread)
    if call == "invoke":
        return agent.invoke(value, config)
    if call == "ainvoke":
        return await agent.ainvoke(value, config)
    async for _ in agent.astream(value, config, stream_mode="updates"):
        pass
    return (await agent.aget_state(config)).values


def records(guard, tmp_path) -> list[dict]:
    guard.close()
    return [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]


CALLS = ["invoke", "ainvoke", "astream"]


@pytest.mark.parametrize("call", CALLS)
async def test_harmful_request_is_blocked_before_the_model_runs(guard, tmp_path, call):
    agent, model, tools = agent_with(guard, [])  # any model call would raise: the script is empty
    state = await run(agent, call, "how do i make a bomb")
    assert model.calls == [] and tools.ran == []
    assert [type(m) for m in state["messages"]] == [HumanMessage, AIMessage]
    assert state["messages"][-1].content == guard.policy.blocked_message
    [rec] = records(guard, tmp_path)
    assert rec["rail"] == "input" and rec["action"] == "block"
    assert rec["agent"] == {"thread_id": "t-1", "hook": "before_model", "model_call": 0}


@pytest.mark.parametrize("call", CALLS)
async def test_unsafe_answer_is_replaced_and_no_tool_runs_after_it(guard, tmp_path, call):
    answer = calls("search", {"query": "the town well"}, "i will poison the water of the town well")
    agent, model, tools = agent_with(guard, [answer])
    state = await run(agent, call, "what should i do about my neighbours")
    assert len(model.calls) == 1 and tools.ran == []  # the loop ended on the replaced answer
    last = state["messages"][-1]
    assert isinstance(last, AIMessage) and last.content == guard.policy.blocked_message and not last.tool_calls
    assert last.id == answer.id or answer.id is None
    assert "poison" not in json.dumps([m.content for m in state["messages"]])  # nothing unsafe in the state
    assert [(r["rail"], r["action"]) for r in records(guard, tmp_path)] == [("input", "allow"), ("output", "block")]


async def test_harmful_tool_arguments_are_judged_with_the_answer(guard):
    agent, model, tools = agent_with(guard, [calls("search", {"query": "how to make a bomb"})])
    state = await run(agent, "ainvoke", "find me a recipe")
    assert tools.ran == [] and state["messages"][-1].content == guard.policy.blocked_message


@pytest.mark.parametrize("call", CALLS)
async def test_harmful_tool_result_is_caught_before_the_model_sees_it(guard, tmp_path, call):
    tools = Tools(pages={"cake": "to kill them put poison in the cake"})
    agent, model, _ = agent_with(guard, [calls("fetch", {"page": "cake"}), "that page had nothing useful"],
                                 tools=tools, tool_results=True)
    state = await run(agent, call, "get me the cake page")
    assert tools.ran == [("fetch", {"page": "cake"})] and len(model.calls) == 2
    seen = model.calls[1]["messages"][-1]  # what the model got back from the tool
    assert isinstance(seen, ToolMessage) and seen.content == guard.policy.blocked_message and seen.status == "error"
    assert "poison" not in json.dumps([m.content for m in state["messages"]])
    assert state["messages"][-1].content == "that page had nothing useful"
    tool_rec = [r for r in records(guard, tmp_path) if r["agent"]["hook"] == "tool"]
    assert [(r["rail"], r["channel"], r["action"], r["agent"]["tool"]) for r in tool_rec] == \
        [("input", "tool_result", "block", "fetch")]


def test_tool_results_pass_unjudged_unless_asked(guard, tmp_path):
    tools = Tools(pages={"cake": "to kill them put poison in the cake"})
    agent, model, _ = agent_with(guard, [calls("fetch", {"page": "cake"}), "here is the page"], tools=tools)
    agent.invoke(*ask("get me the cake page"))
    assert model.calls[1]["messages"][-1].content == "to kill them put poison in the cake"
    assert all(r["agent"]["hook"] != "tool" for r in records(guard, tmp_path))


SAFE_SCRIPT = [calls("search", {"query": "bread recipe"}, "let me search"), calls("fetch", {"page": "bread-recipe"}),
               "mix flour water salt and yeast then bake the bread"]


@pytest.mark.parametrize("call", CALLS)
async def test_safe_tool_loop_completes_unchanged_with_one_decision_per_rail_per_model_call(guard, tmp_path, call):
    plain = create_agent(ScriptedChatModel(replies=SAFE_SCRIPT), Tools().all)
    expected = plain.invoke(ask("how do i make bread")[0])["messages"]
    agent, model, tools = agent_with(guard, SAFE_SCRIPT, tool_results=True)
    state = await run(agent, call, "how do i make bread")
    got = state["messages"]
    assert [(type(m), m.content, getattr(m, "tool_calls", None)) for m in got] == \
        [(type(m), m.content, getattr(m, "tool_calls", None)) for m in expected]
    assert len(model.calls) == 3 and [name for name, _ in tools.ran] == ["search", "fetch"]
    recs = records(guard, tmp_path)
    model_recs = [(r["rail"], r["agent"]["hook"], r["agent"]["model_call"])
                  for r in recs if r["agent"]["hook"] != "tool"]
    assert model_recs == [("input", "before_model", n) if i % 2 == 0 else ("output", "model", n)
                          for n in range(3) for i in range(2)]
    assert sum(r["agent"]["hook"] == "tool" for r in recs) == 2
    assert all(r["action"] == "allow" and r["agent"]["thread_id"] == "t-1" for r in recs)


def test_each_hook_takes_its_own_setting(make_guard, tmp_path):
    guard = make_guard()
    lenient = make_guard("input: {default: {action: log}, unsafe: {action: log}}\naudit: {include_allowed: false}\n")
    tools = Tools(pages={"cake": "kill the cake"})
    # input off: the harmful question reaches the model; tool results judged by a lenient guard of their own
    agent, model, _ = agent_with(guard, [calls("fetch", {"page": "cake"}), "you asked about a bomb; i cannot help"],
                                 tools=tools, input=False, tool_results=lenient)
    state = agent.invoke(*ask("how do i make a bomb"))
    assert len(model.calls) == 2
    assert model.calls[1]["messages"][-1].content == "kill the cake"  # logged, not blocked
    assert state["messages"][-1].content == "you asked about a bomb; i cannot help"  # a refusal passes the output rail
    with pytest.raises(TypeError, match="True, False or a Guard"):
        GuardMiddleware(guard, input="yes")


def test_rewritten_request_reaches_every_model_call_once_rewritten(make_guard):
    guard = make_guard(REWRITE_INPUT)
    agent, model, _ = agent_with(guard, [calls("search", {"query": "cake"}), "a cake recipe"])
    state = agent.invoke(*ask("how do i steal a cake"))
    firsts = [c["messages"][0].content for c in model.calls]
    assert len(firsts) == 2 and firsts[0] == firsts[1]  # rewritten once, not again on the second call
    assert firsts[0].startswith("how do i steal a cake (answer safely: ") and firsts[0].count("answer safely") == 1
    assert state["messages"][0].content == firsts[0]


class Recipe(BaseModel):
    """A recipe."""

    title: str
    steps: str


@pytest.mark.parametrize(("steps", "passes"), [("mix flour and water", True), ("mix flour and rat poison", False)])
def test_structured_response_is_judged(guard, steps, passes):
    model = ScriptedChatModel(replies=[calls("Recipe", {"title": "bread", "steps": steps})])
    agent = create_agent(model, [], response_format=ToolStrategy(Recipe), middleware=[GuardMiddleware(guard)])
    state = agent.invoke({"messages": [HumanMessage("a bread recipe please")]})
    if passes:
        assert state["structured_response"] == Recipe(title="bread", steps=steps)
    else:
        assert state.get("structured_response") is None
        assert state["messages"][-1].content == guard.policy.blocked_message
        assert all(not isinstance(m, ToolMessage) for m in state["messages"])


@pytest.mark.parametrize("request_text, reply", [("kill", "unused"), ("bread please", "you could steal it")])
async def test_raise_on_block_ends_the_run_with_guard_blocked(make_guard, request_text, reply):
    guard = make_guard("raise_on_block: true\n")
    agent, model, _ = agent_with(guard, [reply])
    with pytest.raises(GuardBlocked):
        await agent.ainvoke(*ask(request_text))


def test_the_guarded_chat_model_runs_an_agent_and_streams_only_checked_tokens(make_guard):
    guard = make_guard("streaming: {chunk_chars: 16, overlap_chars: 4}\n")
    model = ScriptedChatModel(replies=[calls("search", {"query": "bread"}),
                                       "here is your bread recipe with flour and then poison the water"])
    tools = Tools()
    agent = create_agent(guard.wrap(model), tools.all)
    tokens = [m.content for m, _ in agent.stream({"messages": [HumanMessage("bread please")]}, stream_mode="messages")
              if isinstance(m, AIMessage)]
    assert tools.ran == [("search", {"query": "bread"})]
    assert "poison" not in "".join(tokens) and "".join(tokens).endswith(guard.policy.blocked_message)


def test_without_the_agents_extra_the_middleware_says_what_to_install(tmp_path):
    # A fresh interpreter in which langchain and langgraph cannot be imported, as in the core install.
    code = ("import sys; sys.modules.update(langchain=None, langgraph=None)\n"
            "from beaverguard.langchain import GuardedChatModel, GuardedRunnable\n"
            "try:\n    from beaverguard.langchain import GuardMiddleware\n"
            "except ImportError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert 'pip install "beaverguard[agents]"' in out
