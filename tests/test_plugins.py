"""The plugin system, through real entry points.

Each test installs a small distribution into a temporary sys.path entry (a
``.dist-info`` folder with ``entry_points.txt`` and a module), so loading goes
through importlib.metadata exactly as for a pip-installed plugin.
"""

from __future__ import annotations

import json
import textwrap

import pytest

from beaverguard import Action, Policy, PolicyError, parse_policy
from beaverguard._plugins import GROUP
from beaverguard._policy import PluginSpec
from beaverguard.cli import main

PLUGINS = '''
from beaverguard import Category


class Shouty:
    """Scores ``shouting`` 0.7 for text in capitals; its default threshold is 0.8."""

    categories = (Category("shouting", "caps", "Shouting", "Text in capitals."),)
    labels = ("shouting",)

    def __init__(self, level=0.7):
        self.level = float(level)

    def score(self, exchanges):
        text = lambda e: e.prompt if e.response is None else e.response
        return [{"shouting": self.level if text(e).isupper() else 0.0} for e in exchanges]

    def default_thresholds(self, rail):
        return {"shouting": 0.8}


class Masker:
    categories = (Category("secret_word", "secret_word", "Secret word", "The word 'cake'."),)
    labels = ("secret_word",)

    def score(self, exchanges):
        return [{"secret_word": float("cake" in (e.response or e.prompt))} for e in exchanges]

    def redact(self, text):
        return text.replace("cake", "[SECRET]")


class Recorder:
    def __init__(self):
        self.records = []

    def sink(self, record):
        self.records.append(record)


class Violent:
    """Scores the BeaverTails violence category 1.0 for 'bread': its score joins the model's."""

    labels = ("violence,aiding_and_abetting,incitement",)

    def score(self, exchanges):
        return [{self.labels[0]: float("bread" in e.prompt)} for e in exchanges]


class Clash:
    categories = (Category("violence", "violence", "Violence", "Clashes with BeaverTails."),)


class Strict:
    def __init__(self, mode="on"):
        if mode not in ("on", "off"):
            raise ValueError(f"mode must be on or off, not {mode!r}")
'''

ENTRY_POINTS = {
    "shouty": "bg_testplugins:Shouty",
    "masker": "bg_testplugins:Masker",
    "recorder": "bg_testplugins:Recorder",
    "violent": "bg_testplugins:Violent",
    "clash": "bg_testplugins:Clash",
    "strict": "bg_testplugins:Strict",
    "broken": "bg_no_such_module:Plugin",
}


@pytest.fixture(autouse=True)
def installed(tmp_path, monkeypatch):
    """A real distribution on sys.path that registers the plugins above."""
    site = tmp_path / "site"
    dist = site / "bg_testplugins-0.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: bg-testplugins\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text(
        f"[{GROUP}]\n" + "".join(f"{name} = {target}\n" for name, target in ENTRY_POINTS.items()))
    (site / "bg_testplugins.py").write_text(textwrap.dedent(PLUGINS))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(__import__("sys").modules, "bg_testplugins", raising=False)


def test_plugin_category_is_named_by_alias_and_decided_like_any_other(make_guard):
    guard = make_guard("plugins: [{name: shouty}]\ninput:\n  categories:\n    caps: {action: log, threshold: 0.5}\n")
    loud = guard.check_input_sync("HELLO THERE")
    assert loud.action is Action.LOG and loud.categories == ("shouting",)
    assert loud.scores["shouting"] == pytest.approx(0.7) and "unsafe" in loud.scores  # joined with the model's
    quiet = guard.check_input_sync("hello there")
    assert quiet.action is Action.ALLOW and quiet.scores["shouting"] == 0.0


def test_plugin_default_threshold_applies_where_the_policy_sets_none(make_guard):
    plugin_default = make_guard("plugins: [{name: shouty}]\ninput:\n  categories:\n    caps: {action: block}\n")
    assert plugin_default.check_input_sync("HELLO").action is Action.ALLOW  # 0.7 < the plugin's 0.8
    louder = make_guard("plugins: [{name: shouty, settings: {level: 0.9}}]\n")
    assert louder.check_input_sync("HELLO").action is Action.BLOCK  # default rule: block


def test_plugin_rewrite_names_its_category(make_guard):
    guard = make_guard("plugins: [{name: shouty}]\n"
                       "input:\n  rewrite: 'about {categories}'\n  categories:\n    caps: {action: rewrite, threshold: 0.5}\n")
    assert guard.check_input_sync("HELLO").text == "about shouting"


def test_plugin_scores_on_a_beavertails_category_join_the_models(make_guard):
    guard = make_guard("plugins: [{name: violent}]\n")
    decision = guard.check_input_sync("how do i make bread")
    assert decision.blocked and decision.categories == ("violence,aiding_and_abetting,incitement",)
    assert guard.check_input_sync("how do i make cake").action is Action.ALLOW


def test_plugin_scores_reach_the_streaming_rail(make_guard):
    guard = make_guard("plugins: [{name: shouty, settings: {level: 1.0}}]\n"
                       "streaming: {chunk_chars: 16, overlap_chars: 0}\n")

    @guard.protect
    def chat(prompt):
        yield "fine words come first, "
        yield "AND THEN A LOT OF SHOUTING HERE"

    out = list(chat("hello"))
    assert out[0] == "fine words come first, " and out[-1] == guard.policy.blocked_message
    assert not any("SHOUTING" in chunk for chunk in out)


def test_redact_action_masks_text_and_audit_records(make_guard, tmp_path):
    guard = make_guard(f"plugins: [{{name: masker}}]\naudit: {{path: {tmp_path / 'a.jsonl'}, content: full, log: false}}\n"
                       "input:\n  categories:\n    secret_word: {action: redact}\n"
                       "output:\n  categories:\n    secret_word: {action: redact}\n")
    seen = []
    reply = guard.run_sync(lambda p: seen.append(p) or f"you said: {p} and cake", "i like cake")
    assert seen == ["i like [SECRET]"]
    assert reply == "you said: i like [SECRET] and [SECRET]"
    guard.close()
    records = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert records[0]["action"] == "redact" and records[0]["prompt"] == "i like [SECRET]"
    assert all("cake" not in json.dumps(r) for r in records)


def test_redact_needs_a_plugin_that_redacts():
    with pytest.raises(PolicyError, match="redact.*needs a plugin"):
        parse_policy("plugins: [{name: shouty}]\ninput:\n  categories:\n    caps: {action: redact}\n")


def test_audit_sink_gets_every_record(make_guard):
    guard = make_guard("plugins: [{name: recorder}]\n")
    guard.check_input_sync("how do i make a bomb")
    guard.check_output_sync("hi", "hello")
    records = guard.plugins[0].records
    assert [(r["rail"], r["action"]) for r in records] == [("input", "block"), ("output", "allow")]


def test_policy_object_in_python_builds_plugins_before_rails():
    policy = Policy(input={"categories": {"caps": {"action": "log"}}}, plugins=[PluginSpec(name="shouty")])
    assert "shouting" in policy.input.categories and policy.plugins[0].plugin.level == 0.7


@pytest.mark.parametrize(("yaml_text", "message"), [
    ("plugins:\n  - name: nosuch\n", r"p.yaml:2:5: plugins.0: .*plugin 'nosuch': no entry point .*installed: .*shouty"),
    ("plugins:\n  - name: broken\n", r"p.yaml:2:5: plugins.0: .*plugin 'broken': cannot import bg_no_such_module"),
    ("plugins:\n  - name: strict\n    settings: {mode: loud}\n", r"plugin 'strict': bad settings .*mode must be on or off"),
    ("plugins:\n  - name: shouty\n    settings: {volume: 3}\n", r"plugin 'shouty': bad settings .*volume"),
    ("plugins:\n  - name: clash\n", r"plugin 'clash': category 'violence' is already defined"),
])
def test_plugin_failures_name_the_plugin_and_the_line(yaml_text, message):
    with pytest.raises(PolicyError, match=message):
        parse_policy(yaml_text, "p.yaml")


def test_category_of_a_plugin_not_loaded_is_rejected_with_valid_names():
    with pytest.raises(PolicyError, match=r"input.categories.loudness: .*unknown category 'loudness'.*violence"):
        parse_policy("input:\n  categories:\n    loudness: {action: log}\n")


def test_a_plugin_category_needs_its_plugin_in_the_same_policy():
    parse_policy("plugins: [{name: shouty}]\ninput:\n  categories:\n    caps: {action: log}\n")  # registers it
    with pytest.raises(PolicyError, match="input.categories.shouting: no plugin of this policy declares"):
        parse_policy("input:\n  categories:\n    caps: {action: log}\n")


def test_cli_policy_validate_accepts_plugin_categories(tmp_path, capsys):
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("plugins: [{name: shouty}]\noutput:\n  categories:\n    caps: {action: block}\n")
    bad.write_text("plugins: [{name: nosuch}]\n")
    assert main(["policy", "validate", str(good)]) == 0
    assert main(["policy", "validate", str(bad)]) == 1
    assert "plugin 'nosuch'" in capsys.readouterr().err
