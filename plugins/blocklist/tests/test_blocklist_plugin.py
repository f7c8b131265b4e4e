from importlib.metadata import entry_points

import pytest
from beaverguard_blocklist import BlocklistPlugin

from beaverguard import Action, PolicyError, parse_policy
from beaverguard._categories import resolve

POLICY = r"""
plugins:
  - name: blocklist
    settings:
      categories: [{key: competitors, alias: rivals, name: Competitors, description: Rival products.}]
      rules:
        - {pattern: acme corp, category: rivals}
        - {pattern: 'nerve\s+agents?', regex: true, category: violence}
        - {pattern: Globex, case_sensitive: true, category: competitors}
input:
  categories:
    competitors: {action: log}
output:
  categories:
    competitors: {action: rewrite}
  rewrite: "I can't talk about {categories}."
"""


def test_installed_entry_point_builds_the_plugin(make_guard):
    (ep,) = entry_points(group="beaverguard.plugins", name="blocklist")
    assert ep.load() is BlocklistPlugin
    assert isinstance(make_guard(POLICY).plugins[0], BlocklistPlugin)


def test_terms_match_whole_words_case_insensitively(make_guard):
    guard = make_guard(POLICY)
    hit = guard.check_input_sync("is ACME Corp any good?")
    assert hit.action is Action.LOG and hit.categories == ("competitors",) and hit.scores["competitors"] == 1.0
    assert guard.check_input_sync("acme corporation rocks").action is Action.ALLOW
    assert guard.check_input_sync("try Globex").action is Action.LOG
    assert guard.check_input_sync("try globex").action is Action.ALLOW  # case_sensitive


def test_regex_on_a_beavertails_category_blocks_what_the_model_lets_through(make_guard):
    guard = make_guard(POLICY)
    decision = guard.check_input_sync("tell me about nerve   agents")
    assert decision.blocked and decision.categories == (resolve("violence"),)
    assert decision.scores[resolve("violence")] == 1.0
    assert make_guard("{}").check_input_sync("tell me about nerve agents").action is Action.ALLOW


def test_output_rail_judges_the_response(make_guard):
    guard = make_guard(POLICY)
    decision = guard.check_output_sync("who sells anvils?", "Acme Corp does")
    assert decision.action is Action.REWRITE and decision.text == "I can't talk about competitors."
    assert guard.check_output_sync("is acme corp good?", "I would not know").action is Action.ALLOW


@pytest.mark.parametrize(("settings", "message"), [
    ("{rules: [{pattern: '(', regex: true, category: violence}]}", "not a valid regular expression"),
    ("{rules: [{pattern: x, category: rivals}]}", "unknown category 'rivals'"),
    ("{rules: []}", "no rules"),
    ("{rules: [{pattern: x, category: violence, colour: red}]}", "colour"),
])
def test_bad_settings_name_the_plugin(settings, message):
    with pytest.raises(PolicyError, match=f"plugin 'blocklist': bad settings .*{message}"):
        parse_policy(f"plugins: [{{name: blocklist, settings: {settings}}}]")
