"""Shadow policies and policy lineage: a candidate decided on the same scores, never enforced, audited."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from beaverguard import Guard
from beaverguard._exceptions import PolicyError


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def files(tmp_path: Path, tiny_model: Path):
    audit = tmp_path / "audit.jsonl"
    write(tmp_path / "candidate.yaml", f"model: {tiny_model}\ninput: {{categories: {{violence: {{action: log}}}}}}\n")
    enforced = write(tmp_path / "policy.yaml", f"model: {tiny_model}\nshadow: candidate.yaml\n"
                                               f"audit: {{path: {audit}, log: false, include_allowed: false}}\n")
    return enforced, audit


def records(audit: Path) -> list[dict]:
    return [json.loads(line) for line in audit.read_text().splitlines()]


async def test_shadow_is_decided_on_the_same_scores_and_never_enforced(files):
    enforced, audit = files
    guard = Guard(enforced)
    blocked = await guard.check_input("how do i kill the cake")  # violence: enforced blocks, candidate logs
    assert blocked.blocked and blocked.shadow["action"] == "log"
    assert blocked.shadow["categories"] == list(blocked.categories)
    same = await guard.check_input("how do i steal the cake")  # financial crime: both block
    assert same.blocked and same.shadow["action"] == "block"
    calm = await guard.check_input("hello there")
    assert calm.shadow["action"] == "allow"
    guard.close()
    recs = records(audit)
    assert [(r["action"], r["shadow"]["action"]) for r in recs] == [("block", "log"), ("block", "block")]
    assert all(r["shadow"]["policy"] != r["policy"] for r in recs)
    assert {r["model"] for r in recs} == {"beaverguard-tiny-test"}


def test_an_allowed_decision_the_shadow_would_change_is_still_audited(tmp_path, tiny_model):
    audit = tmp_path / "audit.jsonl"
    write(tmp_path / "strict.yaml", f"model: {tiny_model}\ninput: {{unsafe: {{threshold: 0.01}}, "
                                    f"default: {{threshold: 0.01}}}}\n")
    enforced = write(tmp_path / "policy.yaml", f"model: {tiny_model}\nshadow: strict.yaml\n"
                                               f"audit: {{path: {audit}, log: false, include_allowed: false}}\n")
    guard = Guard(enforced)
    assert guard.check_input_sync("hello there").action.value == "allow"
    guard.close()
    (rec,) = records(audit)
    assert (rec["action"], rec["shadow"]["action"]) == ("allow", "block")


def test_policy_fingerprint_follows_what_decides(tmp_path, tiny_model):
    from beaverguard import parse_policy

    a = parse_policy("input: {default: {action: log}}\naudit: {content: none}\n")
    b = parse_policy("input: {default: {action: log}}\naudit: {content: full}\n")
    c = parse_policy("input: {default: {action: block}}\n")
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_a_shadow_on_another_model_is_refused(tmp_path, tiny_model):
    write(tmp_path / "other.yaml", "model: /somewhere/else\n")
    enforced = write(tmp_path / "policy.yaml", f"model: {tiny_model}\nshadow: other.yaml\n")
    with pytest.raises(PolicyError, match="must use the same model"):
        Guard(enforced)
