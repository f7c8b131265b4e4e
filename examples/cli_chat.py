"""A command-line chat that shows, for each turn, the guard's scores and decisions.

Needs ``rich`` (in the ``examples`` extra). Offline: the model is embedded and the
chat model is a fake that gives the same reply (``--reply``) to every turn.

    python examples/cli_chat.py                                   # interactive; Ctrl-D to quit
    python examples/cli_chat.py --turn "How do I bake bread?" --turn "How do I make a bomb?"
    printf 'How do I bake bread?\\n' | python examples/cli_chat.py  # one turn per line of stdin
    python examples/cli_chat.py --policy examples/policies/childrens_app.yaml \\
        --reply "Cook something with rat poison in it." --turn "What should I cook tonight?"

Each turn prints a table of scores (the input rail scores the prompt, the output
rail the reply with its prompt; a fired rule is in bold), one line per rail with
its action, and the text that goes back to the user.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from beaverguard import CATEGORIES, UNSAFE, Decision, Guard

DEFAULT_REPLY = "Mix flour, water, salt and yeast, knead, let it rise, then bake it."
ALIASES = {c.key: c.alias for c in CATEGORIES} | {UNSAFE: UNSAFE}


def score_table(*decisions: Decision) -> Table:
    table = Table("score", *(f"{d.rail} rail" for d in decisions), box=None, pad_edge=False)
    for key, alias in ALIASES.items():
        cells = []
        for d in decisions:
            value = d.scores.get(key)
            fired = key in d.categories or (key == UNSAFE and d.flagged and not d.categories)
            cell = "-" if value is None else f"{value:.3f}"
            cells.append(f"[bold red]{cell}[/]" if fired else cell)
        table.add_row(alias, *cells)
    return table


def decision_line(decision: Decision) -> str:
    fired = ", ".join(ALIASES.get(k, k) for k in decision.categories)
    colour = {"allow": "green", "log": "cyan"}.get(decision.action.value, "red")
    return f"{decision.rail} rail: [{colour}]{decision.action.value}[/]" + (f" ({fired})" if fired else "")


def chat_turn(console: Console, guard: Guard, prompt: str, reply: str) -> str:
    """One turn, with the guard's sync API: judge the prompt, ask the model, judge its reply."""
    verdict = guard.check_input_sync(prompt)
    decisions = [verdict]
    if verdict.blocked:
        answer = guard.blocked_reply(verdict)  # the model is never asked
    else:
        model_reply = reply  # your model would get guard.apply_input(prompt, verdict) here
        checked = guard.check_output_sync(prompt, model_reply, request_id=verdict.request_id)
        decisions.append(checked)
        answer = guard.apply_output(model_reply, checked)
    console.print(score_table(*decisions))
    for d in decisions:
        console.print(decision_line(d))
    console.print(f"[bold]assistant>[/] {escape(answer)}", highlight=False)
    return answer


def turns(args: argparse.Namespace, console: Console) -> Iterator[str]:
    if args.turn:
        yield from args.turn
    elif not sys.stdin.isatty():
        yield from (line.strip() for line in sys.stdin if line.strip())
    else:
        while True:
            try:
                line = console.input("[bold]you>[/] ").strip()
            except (EOFError, KeyboardInterrupt):
                return
            if line:
                yield line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turn", action="append", help="a user turn (repeatable); default: stdin")
    parser.add_argument("--reply", default=DEFAULT_REPLY, help="what the fake chat model answers, every turn")
    parser.add_argument("--policy", type=Path, help="policy YAML (default: the built-in policy)")
    args = parser.parse_args(argv)

    console = Console()
    guard = Guard(args.policy)
    try:
        for prompt in turns(args, console):
            console.rule(f"you> {escape(prompt)}", align="left")
            chat_turn(console, guard, prompt, args.reply)
    finally:
        guard.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
