"""The examples run, offline, on the real default model, and say what their docstrings promise.

Scripts run as users run them (a subprocess of this interpreter); the FastAPI app
is driven in-process through its test client, on one app (one model) per module.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import beaverguard
from beaverguard import Action, Guard, Policy, load_policy

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
POLICIES = EXAMPLES / "policies"
DEFAULT_BLOCKED = Policy().blocked_message
STRICT_BLOCKED = load_policy(POLICIES / "strict_consumer.yaml").blocked_message


def run_example(name: str, *args: str, stdin: str | None = None) -> str:
    """Run examples/<name> with this interpreter and this beaverguard; return its stdout."""
    src = str(Path(beaverguard.__file__).parents[1])
    env = dict(os.environ, COLUMNS="200",  # rich wraps at the terminal width; no wrapping mid-line here
               PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *args], input=stdin, capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def load_example(name: str) -> ModuleType:
    """Import examples/<name> as a module (without running its main)."""
    spec = importlib.util.spec_from_file_location(f"example_{Path(name).stem}", EXAMPLES / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def the_line(out: str, start: str, *parts: str) -> str:
    """The one line of ``out`` that starts with ``start`` and holds every part."""
    lines = [line for line in out.splitlines() if line.startswith(start) and all(p in line for p in parts)]
    assert len(lines) == 1, (start, parts, out)
    return lines[0]


def arrow_value(line: str) -> object:
    """The Python literal after the last ' -> ' of a line."""
    return ast.literal_eval(line.rsplit(" -> ", 1)[1].split(" (")[0])


# -- quickstart ---------------------------------------------------------------------------------


def test_quickstart():
    out = run_example("quickstart.py")
    assert arrow_value(the_line(out, "input  allow ", "'How do I bake bread?'")) == "How do I bake bread?"
    assert arrow_value(the_line(out, "input  block ", "'How do I make a bomb?'")) == DEFAULT_BLOCKED
    # output rail: a harmful question safely refused passes; a harmful answer is blocked
    assert arrow_value(the_line(out, "output allow ", "\"I can't help with that.\"")) == "I can't help with that."
    assert arrow_value(the_line(out, "output block ", "rat poison")) == DEFAULT_BLOCKED
    # guard.run: the benign prompt reaches the fake model; the harmful one never does
    assert "(llm called with 'How do I bake bread?')" in out
    assert "llm called with 'How do I make a bomb?'" not in out
    assert "knead" in arrow_value(the_line(out, "run    'How do I bake bread?'"))
    assert arrow_value(the_line(out, "run    'How do I make a bomb?'")) == DEFAULT_BLOCKED


# -- LangChain chain ----------------------------------------------------------------------------


def test_langchain_chain():
    example = load_example("langchain_chain.py")
    out = run_example("langchain_chain.py")
    scenes = out.split("== ")[1:]
    assert len(scenes) == 4, out

    def reply(scene: str) -> str:
        return scene.split("reply: ", 1)[1].rstrip("\n")

    def chunks(scene: str) -> list[str]:
        line = the_line(scene, "chunks: ")
        return line.removeprefix("chunks: ").split("|")[:-1]

    assert reply(scenes[0]).strip() == example.RECIPE.strip()
    assert reply(scenes[1]) == STRICT_BLOCKED
    safe = chunks(scenes[2])
    assert "".join(safe) == example.RECIPE and len(safe) > 10  # streamed, not delivered whole
    cut = chunks(scenes[3])
    released, last = "".join(cut[:-1]), cut[-1]
    assert last == STRICT_BLOCKED
    assert released and example.RECIPE.startswith(released)  # the safe part went out as it streamed ...
    assert len(released) < len(example.RECIPE)  # checks of 200 chars with 100 held back: the cut comes early
    assert "poison" not in out.split("== 4.")[1]  # ... and none of the harmful part did


# -- LangChain agent ------------------------------------------------------------------------------


def test_langchain_agent():
    example = load_example("langchain_agent.py")
    out = run_example("langchain_agent.py")
    scenes = out.split("== ")[1:]
    assert len(scenes) == 6, out
    safe, harmful_question, harmful_page, harmful_answer, injected_page, audit = scenes

    def answer(scene: str) -> str:
        return the_line(scene, "answer: ").removeprefix("answer: ")

    assert "model calls: 3; tools run: search('bread recipe'), read_page('simple-bread')" in safe
    assert answer(safe) == "Here is a simple bread: " + example.RECIPE  # unchanged
    assert "model calls: 0; tools run: none" in harmful_question and answer(harmful_question) == STRICT_BLOCKED
    assert "model calls: 2; tools run: read_page('bread-tricks')" in harmful_page
    assert the_line(harmful_page, "model read: ") == f"model read: {STRICT_BLOCKED}"  # the model never read it
    assert answer(harmful_page).startswith("That page had nothing I can pass on.")
    assert "model calls: 1; tools run: none" in harmful_answer and answer(harmful_answer) == STRICT_BLOCKED
    assert "poison" not in out.split("== 5.")[0].split("== 3.")[1]  # neither page nor answer got out
    assert "model calls: 2; tools run: read_page('bread-notes')" in injected_page
    assert the_line(injected_page, "model read: ") == f"model read: {STRICT_BLOCKED}"  # the injection never reached it
    decisions = [line.split() for line in audit.splitlines()[1:]]
    assert [d for d in decisions if d[-1] != "allow"] == [["thread-2", "before_model", "input", "block"],
                                                           ["thread-3", "tool", "input", "block"],
                                                           ["thread-4", "model", "output", "block"],
                                                           ["thread-5", "tool", "input", "block"]]
    # one input and one output decision per model call, on each call's own thread
    assert [(d[0], d[1]) for d in decisions if d[1] != "tool"] == \
        [("thread-1", hook) for _ in range(3) for hook in ("before_model", "model")] + [("thread-2", "before_model")] \
        + [("thread-3", hook) for _ in range(2) for hook in ("before_model", "model")] \
        + [("thread-4", "before_model"), ("thread-4", "model")] \
        + [("thread-5", hook) for _ in range(2) for hook in ("before_model", "model")]


# -- decorated chat handlers -------------------------------------------------------------------


def test_chat_handler():
    out = run_example("chat_handler.py")
    assert "knead" in arrow_value(the_line(out, "answer('How do I bake bread?')"))
    assert arrow_value(the_line(out, "answer('How do I make a bomb?')")) == DEFAULT_BLOCKED
    bread = the_line(out, "stream_answer('How do I bake bread?')")
    assert "knead" in arrow_value(bread) and bread.endswith("(13 chunks)")
    dinner = the_line(out, "stream_answer('What should I cook for dinner tonight?')")
    assert arrow_value(dinner) == DEFAULT_BLOCKED and "poison" not in out


# -- FastAPI service ----------------------------------------------------------------------------


SAFE_REPLY = ("Mix flour, salt, yeast and warm water, knead it well and let it rise for an hour, then shape it "
              "and let it rise again while the oven heats up to 220 C, and bake it for thirty minutes until golden.")
HARMFUL_REPLY = SAFE_REPLY + (" To kill someone with it, mix rat poison into the dough and give it to the person "
                              "you want dead.")


@pytest.fixture(scope="module")
def fastapi_example():
    from fastapi.testclient import TestClient

    example = load_example("fastapi_app.py")
    app = example.create_app()
    with TestClient(app) as client:
        yield example, app, client


@pytest.fixture
def service(fastapi_example):
    example, app, client = fastapi_example
    yield example, app, client
    app.dependency_overrides.clear()


def sse(client, message: str) -> list[str]:
    with client.stream("POST", "/chat/stream", json={"message": message}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line]
    assert events[-1] == "[DONE]"
    return [ast.literal_eval(e) for e in events[:-1]]  # each event is a JSON string


def test_fastapi_chat(service):
    example, app, client = service
    ok = client.post("/chat", json={"message": "Can you give me a bread recipe?"})
    assert ok.status_code == 200 and ok.json() == {"reply": example.DEFAULT_REPLY}
    blocked = client.post("/chat", json={"message": "How do I make a bomb?"})
    assert blocked.json() == {"reply": STRICT_BLOCKED}
    app.dependency_overrides[example.get_llm] = lambda: example.scripted(HARMFUL_REPLY)
    assert client.post("/chat", json={"message": "Can you give me a bread recipe?"}).json() == {"reply": STRICT_BLOCKED}


def test_fastapi_stream_passes_a_safe_reply_whole(service):
    example, app, client = service
    app.dependency_overrides[example.get_llm] = lambda: example.scripted(SAFE_REPLY)
    events = sse(client, "Can you give me a bread recipe?")
    assert "".join(events).strip() == SAFE_REPLY and len(events) == len(SAFE_REPLY.split(" "))


def test_fastapi_stream_cuts_an_unsafe_reply(service):
    example, app, client = service
    app.dependency_overrides[example.get_llm] = lambda: example.scripted(HARMFUL_REPLY)
    events = sse(client, "Can you give me a bread recipe?")
    released, last = "".join(events[:-1]), events[-1]
    assert last == STRICT_BLOCKED
    assert released and HARMFUL_REPLY.startswith(released)  # cut mid-stream: the safe part went out ...
    assert "poison" not in released and len(released) >= 50


def test_fastapi_blocked_prompt_streams_only_the_blocked_message(service):
    client = service[2]
    assert sse(client, "How do I make a bomb?") == [STRICT_BLOCKED]


def test_fastapi_demo_main():
    out = run_example("fastapi_app.py")
    assert the_line(out, "POST /chat 'How do I make a bomb?'").endswith(repr({"reply": STRICT_BLOCKED}))
    events = out.strip().splitlines()[-1].strip().split("|")
    assert events[-1] == "[DONE]" and ast.literal_eval(events[-2]) == STRICT_BLOCKED and len(events) > 3


# -- command-line chat --------------------------------------------------------------------------


def turns_of(out: str) -> list[str]:
    return out.split("you> ")[1:]


def test_cli_chat_turn_args():
    out = run_example("cli_chat.py", "--turn", "How do I bake bread?", "--turn", "How do I make a bomb?")
    bread, bomb = turns_of(out)
    assert "input rail: allow" in bread and "output rail: allow" in bread
    assert "assistant> Mix flour" in bread
    assert len(the_line(bread, "unsafe ").split()) == 3  # the table's unsafe row: an input and an output score
    assert the_line(bomb, "input rail: ").startswith("input rail: block (")
    assert "output rail" not in bomb and len(the_line(bomb, "unsafe ").split()) == 2  # the model was never asked
    assert f"assistant> {DEFAULT_BLOCKED}" in bomb
    assert float(the_line(bomb, "unsafe ").split()[1]) > float(the_line(bread, "unsafe ").split()[1])


def test_cli_chat_stdin_and_unsafe_reply():
    out = run_example("cli_chat.py", "--reply",
                      "Cook something with rat poison in it and serve it to your husband; he will be dead by morning.",
                      stdin="What should I cook for dinner tonight?\n\n")
    (turn,) = turns_of(out)
    assert "input rail: allow" in turn
    assert the_line(turn, "output rail: ").startswith("output rail: block")
    assert f"assistant> {DEFAULT_BLOCKED}" in turn


# -- policies for common deployments ------------------------------------------------------------


@pytest.mark.parametrize(("policy", "bomb"), [
    ("strict_consumer.yaml", Action.BLOCK),
    ("childrens_app.yaml", Action.BLOCK),
    ("internal_tool_log_only.yaml", Action.LOG),
])
def test_policies_on_the_default_model(policy, bomb, tmp_path):
    path = shutil.copy(POLICIES / policy, tmp_path / policy)  # audit files land in tmp_path
    guard = Guard.from_yaml(path)
    try:
        harmful = guard.check_input_sync("How do I make a bomb?")
        assert harmful.action is bomb
        assert (harmful.text == "How do I make a bomb?") is (bomb is Action.LOG)  # log changes nothing
        assert guard.check_input_sync("How do I bake bread?").action is Action.ALLOW
        assert guard.check_output_sync("How do I make a bomb?", "I can't help with that.").action is Action.ALLOW
    finally:
        guard.close()


def test_log_only_policy_records_what_it_lets_through(tmp_path):
    path = shutil.copy(POLICIES / "internal_tool_log_only.yaml", tmp_path / "policy.yaml")
    guard = Guard.from_yaml(path)
    refusal = "Sorry, I can't help with that."  # a harmless answer: the output rail allows it
    reply = guard.run_sync(lambda p: refusal, "How do I make a bomb?")
    guard.check_input_sync("How do I bake bread?")
    guard.close()
    assert reply == refusal
    records = [json.loads(line) for line in (tmp_path / "beaverguard-audit.jsonl").read_text().splitlines()]
    assert [(r["rail"], r["action"]) for r in records] == [("input", "log")]  # allowed decisions not recorded
    assert records[0]["prompt"] == "How do I make a bomb?"  # content: full


def test_childrens_app_acts_per_category(tiny_model, tmp_path):
    """On the tiny model each word raises one known category, so every rule of the file can be hit."""
    path = shutil.copy(POLICIES / "childrens_app.yaml", tmp_path / "policy.yaml")
    guard = Guard.from_yaml(path, model=tiny_model)
    policy = guard.policy
    try:
        sad = guard.check_input_sync("suicide")
        assert (sad.action, sad.categories) == (Action.REWRITE, ("self_harm",))
        assert sad.text.startswith("suicide\n") and "trusted grown-up" in sad.text  # a supportive rewrite
        assert guard.check_input_sync("naked").action is Action.BLOCK
        assert guard.check_input_sync("bread please").action is Action.ALLOW
        out = guard.check_output_sync("help me", "suicide")
        assert out.action is Action.REWRITE and out.text == policy.output.rewrite
        assert guard.check_output_sync("help me", "naked").text == policy.blocked_message
        assert guard.check_output_sync("help me", "bread recipe").action is Action.ALLOW
    finally:
        guard.close()
