from pathlib import Path

import pytest

from beaverguard import Action, PolicyError, load_policy, parse_policy
from beaverguard._categories import CATEGORIES, resolve
from beaverguard._decision import decide
from beaverguard._policy import RailPolicy

ROOT = Path(__file__).resolve().parents[1]


def test_misspelt_category_names_file_line_and_valid_names(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("input:\n  categories:\n    violence: {threshold: 0.4}\n    violense:\n      action: block\n")
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    message = str(err.value)
    assert f"{path}:4:5" in message
    assert "input.categories.violense" in message
    for c in CATEGORIES:
        assert c.alias in message


def test_every_bad_key_is_reported_with_its_line():
    with pytest.raises(PolicyError) as err:
        parse_policy("output:\n  unsafe: {threshold: 1.5, action: nuke}\nbogus: 1\n", "p.yaml")
    message = str(err.value)
    assert "p.yaml:2:" in message and "output.unsafe.threshold" in message
    assert "output.unsafe.action" in message and "'block'" in message
    assert "p.yaml:3:1: bogus" in message


def test_invalid_yaml_and_non_mapping():
    with pytest.raises(PolicyError, match=r"p.yaml:\d+:\d+: not valid YAML"):
        parse_policy("input:\n  - [unclosed\n", "p.yaml")
    with pytest.raises(PolicyError, match="must be a mapping"):
        parse_policy("- a\n- b\n", "p.yaml")


def test_missing_file_is_a_policy_error(tmp_path):
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "nope.yaml")


def test_rewrite_template_placeholders_are_checked():
    with pytest.raises(PolicyError, match="unknown placeholder"):
        parse_policy("input:\n  rewrite: 'hello {user}'\n")
    assert parse_policy("input:\n  rewrite: 'Be safe: {prompt} ({categories})'\n").input.rewrite


def test_aliases_and_keys_both_work():
    p = parse_policy("input:\n  categories:\n    sexual: {action: rewrite}\n"
                     "    'violence,aiding_and_abetting,incitement': {action: log}\n")
    assert set(p.input.categories) == {resolve("sexual"), resolve("violence")}


def test_example_policies_validate():
    files = sorted((ROOT / "examples").glob("**/*.yaml"))
    assert files, "examples/ has no policy files"
    for f in files:
        load_policy(f)


def test_strictest_action_wins():
    rail = parse_policy("input:\n  default: {action: log, threshold: 0.5}\n  unsafe: {action: allow}\n"
                        "  categories:\n    violence: {action: block}\n    sexual: {action: rewrite}\n").input
    scores = {k: 0.0 for k in ("unsafe", resolve("violence"), resolve("sexual"), resolve("privacy"))}
    assert decide(scores, rail, {}) == (Action.ALLOW, ())
    assert decide({**scores, resolve("privacy"): 0.9}, rail, {})[0] is Action.LOG
    assert decide({**scores, resolve("privacy"): 0.9, resolve("sexual"): 0.9}, rail, {})[0] is Action.REWRITE
    action, fired = decide({**scores, resolve("sexual"): 0.9, resolve("violence"): 0.6}, rail, {})
    assert action is Action.BLOCK and set(fired) == {resolve("sexual"), resolve("violence")}


def test_threshold_defaults_come_from_the_model_unless_set():
    rail = RailPolicy()
    key = resolve("violence")
    assert decide({key: 0.3}, rail, {key: 0.2})[0] is Action.BLOCK
    assert decide({key: 0.3}, rail, {key: 0.4})[0] is Action.ALLOW
    set_rail = parse_policy("input:\n  categories:\n    violence: {threshold: 0.25}\n").input
    assert decide({key: 0.3}, set_rail, {key: 0.4})[0] is Action.BLOCK
