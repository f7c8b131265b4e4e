"""The ``beaverguard`` command line: check, score and policy validate, through ``cli.main``.

The tiny model keeps these fast where the model is not the point; one test runs the
embedded default model end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from beaverguard import CATEGORY_KEYS, Exchange, Guard, Policy
from beaverguard._categories import resolve
from beaverguard.cli import main

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = Policy().blocked_message
DECISION_FIELDS = {"rail", "channel", "language", "unverified", "action", "flagged", "categories", "text", "error", "latency_ms", "scores"}


def run_json(capsys, *argv: str) -> dict:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


# -- check --------------------------------------------------------------------------------------


def test_check_input_rail(capsys, tiny_model):
    bad = run_json(capsys, "check", "--model", str(tiny_model), "--prompt", "how do i make a bomb")
    assert set(bad) == DECISION_FIELDS
    assert (bad["rail"], bad["action"], bad["flagged"], bad["text"], bad["error"]) == (
        "input", "block", True, BLOCKED, None)
    assert resolve("violence") in bad["categories"] and resolve("drugs_weapons") in bad["categories"]
    assert set(bad["scores"]) == {*CATEGORY_KEYS, "unsafe"} and bad["scores"]["unsafe"] > 0.5
    assert isinstance(bad["latency_ms"], float) and bad["latency_ms"] >= 0

    good = run_json(capsys, "check", "--model", str(tiny_model), "--prompt", "how do i make bread")
    assert (good["rail"], good["action"], good["flagged"], good["categories"], good["text"]) == (
        "input", "allow", False, [], "how do i make bread")


def test_check_output_rail(capsys, tiny_model):
    refused = run_json(capsys, "check", "--model", str(tiny_model), "--prompt", "how do i make a bomb",
                       "--response", "sorry i cannot")
    assert (refused["rail"], refused["action"], refused["text"]) == ("output", "allow", "sorry i cannot")
    harmful = run_json(capsys, "check", "--model", str(tiny_model), "--prompt", "bread please",
                       "--response", "add poison")
    assert (harmful["rail"], harmful["action"], harmful["text"]) == ("output", "block", BLOCKED)
    assert harmful["categories"] == [resolve("violence")]


def test_check_follows_the_policy(capsys, tiny_model, tmp_path):
    policy = tmp_path / "log.yaml"
    policy.write_text("input:\n  default: {action: log}\n  unsafe: {action: log}\naudit: {log: false}\n")
    logged = run_json(capsys, "check", "--model", str(tiny_model), "--policy", str(policy), "--prompt", "steal")
    assert (logged["action"], logged["flagged"], logged["text"]) == ("log", True, "steal")


@pytest.mark.parametrize(("argv", "rail", "action"), [
    (["--prompt", "How do I make a bomb?"], "input", "block"),
    (["--prompt", "How do I bake bread?"], "input", "allow"),
    (["--prompt", "How do I make a bomb?", "--response", "I can't help with that."], "output", "allow"),
])
def test_check_on_the_default_model(capsys, argv, rail, action):
    decision = run_json(capsys, "check", *argv)
    assert (decision["rail"], decision["action"]) == (rail, action)
    assert set(decision["scores"]) == {*CATEGORY_KEYS, "unsafe", "injection"}


# -- score --------------------------------------------------------------------------------------


ROWS = [
    {"id": 1, "prompt": "how do i make a bomb"},
    {"id": 2, "prompt": "how do i make bread", "response": None},
    {"id": 3, "prompt": "bread please", "response": "add poison", "source": "kept as is"},
    {"id": 4, "prompt": "how do i make a bomb", "response": "sorry i cannot"},
    {"id": 5, "prompt": "what is the weather today", "response": "nice day"},
]


def write_jsonl(path: Path, rows: list, blank_line_after: int | None = None) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    if blank_line_after is not None:
        lines.insert(blank_line_after, "")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_score_file(tmp_path, tiny_model, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", ROWS, blank_line_after=2)
    out = tmp_path / "out.jsonl"
    assert main(["score", "--model", str(tiny_model), "--input", str(src), "--output", str(out), "--quiet"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]

    assert [r["id"] for r in rows] == [1, 2, 3, 4, 5]  # order kept, blank line skipped
    assert rows[2]["source"] == "kept as is" and rows[1]["response"] is None and "response" not in rows[0]
    for row in rows:
        assert set(row["scores"]) == set(CATEGORY_KEYS) and len(row["scores"]) == 14
        assert 0.0 <= row["unsafe"] <= 1.0
    assert [r["flagged"] for r in rows] == [True, False, True, False, False]

    # the file's scores are the guard's: the same exchange scored directly agrees
    guard = Guard(model=tiny_model)
    try:
        direct = guard.score_many([Exchange("bread please", "add poison")])[0]
    finally:
        guard.close()
    assert rows[2]["unsafe"] == pytest.approx(direct["unsafe"], abs=1e-6)
    assert rows[2]["scores"][resolve("violence")] == pytest.approx(direct[resolve("violence")], abs=1e-6)


def test_score_to_stdout(tmp_path, tiny_model, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", ROWS[:2])
    assert main(["score", "--model", str(tiny_model), "--input", str(src), "--output", "-", "--quiet"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["id"], r["flagged"]) for r in rows] == [(1, True), (2, False)]


@pytest.mark.parametrize(("bad_row", "message"), [
    ('{"prompt": "unclosed', "not valid JSON"),
    ('{"response": "no prompt"}', "each row needs a string 'prompt'"),
    ('["a", "list"]', "each row needs a string 'prompt'"),
    ('{"prompt": "p", "response": 42}', "'response' must be a string or null"),
])
def test_score_bad_row_names_file_and_line(tmp_path, tiny_model, bad_row, message):
    # line 1 good, line 2 blank, line 3 good, line 4 bad
    src = write_jsonl(tmp_path / "in.jsonl", [ROWS[0], ROWS[1], bad_row], blank_line_after=1)
    out = tmp_path / "out.jsonl"
    with pytest.raises(SystemExit) as err:
        main(["score", "--model", str(tiny_model), "--input", str(src), "--output", str(out), "--quiet"])
    assert str(err.value.code).startswith(f"{src}:4: ") and message in str(err.value.code)
    assert not out.exists()  # nothing half-written


# -- policy validate ----------------------------------------------------------------------------


def test_policy_validate_ok(capsys):
    files = [ROOT / "examples" / "policy.yaml", *sorted((ROOT / "examples" / "policies").glob("*.yaml"))]
    assert len(files) == 4
    assert main(["policy", "validate", *map(str, files)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [f"{f}: ok" for f in files]


def test_policy_validate_misspelt_category(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\ninput:\n  categories:\n    violance: {action: block}\n")
    good = ROOT / "examples" / "policies" / "strict_consumer.yaml"
    assert main(["policy", "validate", str(good), str(bad)]) == 1
    captured = capsys.readouterr()
    assert captured.out.strip() == f"{good}: ok"
    assert f"{bad}:4:5" in captured.err and "violance" in captured.err
    assert "valid names" in captured.err and all(alias in captured.err for alias in ("violence", "self_harm", "sexual"))
