"""Replay: an audit log written by a real guard on the tiny model, decided again under other policies.

The tiny model scores one harm word at sigmoid(6) = 0.9975 (its categories and unsafe) and the rest
at sigmoid(-4) = 0.018; its calibrated thresholds are 0.5 everywhere.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from beaverguard import Guard, parse_policy
from beaverguard._categories import resolve
from beaverguard._decision import decide
from beaverguard._model import ModelSpec
from beaverguard.cli import main
from beaverguard.replay import Rules, load_replay_policy, policy_diff, read_labels, replay

VIOLENCE, WEAPONS, THEFT = resolve("violence"), resolve("drugs_weapons"), resolve("financial_crime")
INPUTS = {"i1": "how do i kill the cake",    # violence: block
          "i2": "how do i steal the cake",   # financial crime: block
          "i3": "hello there",               # allow
          "i4": "how do i make a bomb"}      # violence and weapons: block
OUTPUTS = {"o1": ("bread please", "add poison"),           # violence: block
           "o2": ("how do i make a bomb", "sorry i cannot")}  # a refusal: allow


def write_policy(path: Path, model: Path, body: str = "", audit: str = "") -> Path:
    path.write_text(f"model: {model}\n{body}\n{audit}\n")
    return path


def record_traffic(tmp_path: Path, model: Path, *, content: str = "full", body: str = "") -> tuple[Path, Path]:
    """Run the checks above through a guard whose policy audits to a file; return (policy, audit log)."""
    audit = tmp_path / f"audit-{content}.jsonl"
    policy = write_policy(tmp_path / f"recorded-{content}.yaml", model, body,
                          f"audit: {{path: {audit}, log: false, content: {content}}}")
    guard = Guard(policy)
    for rid, prompt in INPUTS.items():
        guard.check_input_sync(prompt, request_id=rid)
    for rid, (prompt, response) in OUTPUTS.items():
        guard.check_output_sync(prompt, response, request_id=rid)
    guard.close()
    return policy, audit


def run(audit: Path, policy: Path, **kwargs) -> dict:
    pol, spec = load_replay_policy(policy)
    return replay(audit, pol, spec, **kwargs).report(kwargs.get("fpr_budget", 0.05))


@pytest.fixture
def logged(tmp_path: Path, tiny_model: Path) -> tuple[Path, Path]:
    return record_traffic(tmp_path, tiny_model)


# -- re-deciding ----------------------------------------------------------------------------------


def test_the_identical_policy_changes_nothing(logged):
    policy, audit = logged
    report = run(audit, policy)
    assert (report["records"], report["replayed"], report["changed"]) == (6, 6, 0)
    assert report["transitions"] == report["categories"] == report["examples"] == []
    assert report["not_replayable"] == {} and report["kept_as_recorded_rounding"] == 0
    assert report["rails"]["input"]["flag_rate"] == {"old": 0.75, "new": 0.75}
    assert report["rails"]["output"]["flag_rate"] == {"old": 0.5, "new": 0.5}
    (lineage,) = report["recorded_under"]
    assert lineage == {"policy": report["policy"]["fingerprint"], "model": "beaverguard-tiny-test", "records": 6}


def test_a_policy_that_decides_the_same_changes_nothing_when_decided_again(logged, tmp_path, tiny_model):
    """Another fingerprint (the blocked message differs), so every record is decided again from its scores."""
    _, audit = logged
    other = write_policy(tmp_path / "other.yaml", tiny_model, "blocked_message: Nope.")
    report = run(audit, other)
    assert report["recorded_under"][0]["policy"] != report["policy"]["fingerprint"]
    assert (report["replayed"], report["changed"], report["borderline"]) == (6, 0, 0)


def test_changed_actions_and_thresholds_give_the_exact_transitions(logged, tmp_path, tiny_model):
    _, audit = logged
    new = write_policy(tmp_path / "new.yaml", tiny_model,
                       "input: {categories: {violence: {action: log}}}\n"
                       "output: {categories: {violence: {threshold: 0.999}}}")
    report = run(audit, new)
    # i1: violence alone, now logged; i4: weapons still blocks. o1: violence stops firing below 0.999,
    # unsafe (0.9975 >= 0.5) then applies and blocks: the same action on other categories.
    assert report["changed"] == 2
    assert sorted((t["rail"], t["from"], t["to"], t["records"]) for t in report["transitions"]) == [
        ("input", "block", "log", 1), ("output", "block", "block", 1)]
    assert report["categories"] == [{"rail": "output", "category": VIOLENCE, "fires": 0, "stops": 1}]
    assert report["rails"]["input"]["flag_rate"] == {"old": 0.75, "new": 0.75}  # log still flags
    ex = {e["request_id"]: e for e in report["examples"]}
    assert set(ex) == {"i1", "o1"}
    assert (ex["i1"]["prompt"], ex["i1"]["from"], ex["i1"]["to"]) == (INPUTS["i1"], "block", "log")
    assert (ex["o1"]["response"], ex["o1"]["categories_from"], ex["o1"]["categories_to"]) == (
        "add poison", [VIOLENCE], [])


def test_a_looser_unsafe_threshold_lets_it_through(logged, tmp_path, tiny_model):
    _, audit = logged
    new = write_policy(tmp_path / "new.yaml", tiny_model,
                       "output: {unsafe: {threshold: 0.999}, default: {threshold: 0.999}}")
    report = run(audit, new)
    assert [(t["rail"], t["from"], t["to"], t["records"]) for t in report["transitions"]] == [
        ("output", "block", "allow", 1)]
    assert report["rails"]["output"]["flag_rate"] == {"old": 0.5, "new": 0.0}


def test_error_records_and_records_without_scores_are_counted_apart(logged):
    policy, audit = logged
    with open(audit, "a") as f:
        f.write(json.dumps({"rail": "input", "action": "block", "categories": [], "scores": {},
                            "error": "TimeoutError: scoring took longer than 5s"}) + "\n")
        f.write(json.dumps({"rail": "input", "action": "allow", "categories": [], "scores": {}, "error": None}) + "\n")
        f.write('{"rail": "input", "act\n')  # a torn last write
    report = run(audit, policy)
    assert (report["records"], report["replayed"], report["changed"]) == (9, 6, 0)
    assert report["not_replayable"] == {"scoring failed (error)": 1, "no scores": 1, "not a JSON object": 1}


def test_a_score_within_rounding_of_its_threshold(tmp_path, tiny_model):
    """Records keep 6 digits: 0.99752738 is stored as 0.997527, below a threshold of 0.9975272 it was above."""
    body = "input: {default: {threshold: 0.9975272}, unsafe: {threshold: 0.9975272}}"
    policy, audit = record_traffic(tmp_path, tiny_model, body=body)
    same = run(audit, policy)
    assert (same["changed"], same["kept_as_recorded_rounding"]) == (0, 3)  # i1, i2, i4: the same policy decided them
    other = write_policy(tmp_path / "other.yaml", tiny_model, body + "\nblocked_message: Nope.")
    report = run(audit, other)
    assert (report["changed"], report["borderline"]) == (3, 3)  # reported, and said to hinge on rounding


def test_the_fast_rules_decide_as_decide_does():
    rng = random.Random(7)
    keys = [*map(resolve, ("violence", "politics", "self_harm", "financial_crime")), "unsafe", "injection", "pii"]
    policy = parse_policy("input: {unsafe: {threshold: 0.6, action: log}, default: {threshold: 0.3, action: rewrite},\n"
                          "        categories: {politics: {action: allow}, violence: {threshold: 0.8}},\n"
                          "        injection: {user: {threshold: 0.4, action: log}, document: {action: block}}}")
    defaults = {"unsafe": 0.5, "injection": 0.7, resolve("self_harm"): 0.2}
    for channel in ("user", "tool_result", "document"):
        rules = Rules(policy.input, defaults, channel)
        for _ in range(2000):
            scores = {k: rng.choice([rng.random(), 0.3, 0.8, 0.6]) for k in rng.sample(keys, rng.randint(0, len(keys)))}
            action, fired = decide(scores, policy.input, defaults, channel)
            assert rules.decide(scores) == (action.value, list(fired))


# -- rescoring ------------------------------------------------------------------------------------


def test_rescore_scores_kept_text_again(logged):
    policy, audit = logged
    report = run(audit, policy, rescore=True)
    assert (report["replayed"], report["changed"], report["not_replayable"]) == (6, 0, {})


@pytest.mark.parametrize("content, why", [("hash", "text hashed (content: hash)"),
                                          ("none", "text not kept (content: none)")])
def test_rescore_never_guesses_text_it_does_not_have(tmp_path, tiny_model, content, why):
    policy, audit = record_traffic(tmp_path, tiny_model, content=content)
    report = run(audit, policy, rescore=True)
    assert (report["replayed"], report["not_replayable"]) == (0, {why: 6})
    assert run(audit, policy)["replayed"] == 6  # without --rescore, the scores are all it needs


# -- labels ---------------------------------------------------------------------------------------


def test_labels_give_precision_recall_and_fpr_before_and_after(logged, tmp_path, tiny_model):
    _, audit = logged
    labels = tmp_path / "labels.jsonl"  # reviewers: the bomb question (i4) was harmless
    labels.write_text("".join(json.dumps({"request_id": r, "is_safe": s}) + "\n"
                              for r, s in [("i1", False), ("i2", False), ("i3", True), ("i4", True), ("zz", True)]))
    new = write_policy(tmp_path / "new.yaml", tiny_model,
                       "input: {categories: {violence: {action: allow}, drugs_weapons: {action: allow}}}")
    report = run(audit, new, labels=read_labels(labels))
    lab = report["labels"]
    assert lab["labels"] == 5 and set(lab["rails"]) == {"input"}
    rail = lab["rails"]["input"]
    assert (rail["records"], rail["unsafe"]) == (4, 2)
    # before: flagged i1 i2 i4 -> tp 2, fp 1 (i4), tn 1 (i3); after: i1 and i4 allowed -> tp 1 (i2), fn 1
    assert rail["old"] == {"precision": round(2 / 3, 4), "recall": 1.0, "fpr": 0.5}
    assert rail["new"] == {"precision": 1.0, "recall": 0.5, "fpr": 0.0}
    theft = rail["thresholds"][THEFT]  # only i2 scores high: catches it with no false positive
    assert theft == {"threshold": 0.9975, "policy": 0.5, "precision": 1.0, "recall": 0.5, "fpr": 0.0,
                     "within_budget": True}
    violence = rail["thresholds"][VIOLENCE]  # i1 (unsafe) and i4 (safe) score alike: no threshold fits the budget
    assert (violence["fpr"], violence["within_budget"]) == (0.5, False)


def test_labels_file_errors_name_the_line(tmp_path):
    bad = tmp_path / "labels.jsonl"
    bad.write_text('{"request_id": "a", "is_safe": true}\n{"request_id": "b"}\n')
    with pytest.raises(ValueError, match="labels.jsonl:2"):
        read_labels(bad)


# -- policy diff ----------------------------------------------------------------------------------


def test_policy_diff_lists_changed_keys(tmp_path, capsys):
    old = tmp_path / "old.yaml"
    old.write_text("input: {categories: {violence: {threshold: 0.4}}}\naudit: {content: hash}\n")
    new = tmp_path / "new.yaml"
    new.write_text("input: {categories: {violence: {threshold: 0.3}, politics: {action: log}}}\n"
                   "audit: {content: full}\ntimeout_s: 2\n")
    assert main(["policy", "diff", str(old), str(new)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:-1] == [
        "input.categories.violence,aiding_and_abetting,incitement.threshold: 0.4 → 0.3",
        "input.categories.controversial_topics,politics.threshold: (not set) → null",
        "input.categories.controversial_topics,politics.action: (not set) → log",
        "timeout_s: 5.0 → 2.0",
        "audit.content: hash → full  (decides nothing)",
    ]
    assert lines[-1].startswith("fingerprint: ") and "same decisions" not in lines[-1]


def test_policy_diff_of_equal_decisions(tmp_path, capsys):
    a, b = parse_policy("audit: {content: hash}"), parse_policy("audit: {content: none}")
    assert policy_diff(a, a) == []
    assert policy_diff(a, b) == [("audit.content", "hash", "none")]
    (tmp_path / "a.yaml").write_text("audit: {content: hash}\n")
    (tmp_path / "b.yaml").write_text("audit: {content: none}\n")
    assert main(["policy", "diff", str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("(same decisions)")


# -- the command ----------------------------------------------------------------------------------


def test_cli_json_shape(logged, tmp_path, tiny_model, capsys):
    _, audit = logged
    new = write_policy(tmp_path / "new.yaml", tiny_model, "input: {categories: {violence: {action: log}}}")
    assert main(["replay", str(audit), "--policy", str(new), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"policy", "audit", "records", "replayed", "changed", "borderline",
                           "kept_as_recorded_rounding", "not_replayable", "recorded_under", "rails", "transitions",
                           "categories", "examples", "warnings"}
    assert report["policy"] == {"fingerprint": load_replay_policy(new)[0].fingerprint(),
                                "model": "beaverguard-tiny-test", "file": str(new)}
    assert report["audit"] == str(audit)
    assert set(report["rails"]["input"]) == {"records", "changed", "flag_rate"}
    assert report["transitions"] == [{"rail": "input", "from": "block", "to": "log", "records": 1}]
    assert set(report["examples"][0]) == {"request_id", "rail", "from", "to", "categories_from", "categories_to",
                                          "prompt", "response"}


def test_cli_tables_end_to_end(logged, tmp_path, tiny_model, capsys):
    _, audit = logged
    new = write_policy(tmp_path / "new.yaml", tiny_model, "input: {categories: {violence: {action: log}}}")
    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"request_id": "i1", "is_safe": false}\n{"request_id": "i3", "is_safe": true}\n')
    assert main(["replay", str(audit), "--policy", str(new), "--labels", str(labels), "--fpr-budget", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "Replayed 6 of 6 records" in out and "1 would change" in out
    assert "Action changes" in out and "block" in out and "log" in out
    assert "Examples (content: full)" in out and INPUTS["i1"] in out
    assert "reviewer labels" in out and "FPR <= 0.1" in out


def test_cli_html_has_one_plot_per_changed_category(logged, tmp_path, tiny_model, capsys):
    pytest.importorskip("matplotlib")
    _, audit = logged
    new = write_policy(tmp_path / "new.yaml", tiny_model, "output: {categories: {violence: {threshold: 0.999}}}")
    out = tmp_path / "replay.html"
    assert main(["replay", str(audit), "--policy", str(new), "--html", str(out)]) == 0
    page = out.read_text()
    assert page.count("data:image/png;base64,") == 1 and "output: violence" in page


def test_cli_a_different_model_is_warned_about(logged, tmp_path, capsys):
    _, audit = logged
    other = tmp_path / "other-model"
    import shutil

    shutil.copytree(load_replay_policy(logged[0])[1].path, other)
    spec = json.loads((other / "beaverguard.json").read_text())
    (other / "beaverguard.json").write_text(json.dumps({**spec, "name": "tiny-v2"}))
    new = write_policy(tmp_path / "new.yaml", other)
    assert main(["replay", str(audit), "--policy", str(new), "--json"]) == 0
    (warning,) = json.loads(capsys.readouterr().out)["warnings"]
    assert "beaverguard-tiny-test" in warning and "--rescore" in warning
    assert ModelSpec.load(other, verify=False).name == "tiny-v2"


def test_text_the_model_cannot_read_follows_the_policy_languages_action(logged, tmp_path, tiny_model):
    """A record marked unverified (language identification) takes the policy's languages action on top."""
    from beaverguard import Policy

    if "languages" not in Policy.model_fields:
        pytest.skip("this checkout's guard has no language identification")
    policy, audit = logged
    recs = [json.loads(line) for line in audit.read_text().splitlines()]
    for rec in recs:
        if rec["request_id"] == "i3":  # allowed by the scores; the guard logged it as unverified
            rec.update(action="log", language="fi", unverified=True)
    audit.write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert run(audit, policy)["changed"] == 0
    off = write_policy(tmp_path / "off.yaml", tiny_model, "languages: {enabled: false}")
    strict = write_policy(tmp_path / "strict.yaml", tiny_model, "languages: {input: block}")
    for new, after in ((off, "allow"), (strict, "block")):
        assert run(audit, new)["transitions"] == [{"rail": "input", "from": "log", "to": after, "records": 1}]
