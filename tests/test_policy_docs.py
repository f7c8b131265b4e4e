"""The policy reference is generated from the schema, and the README carries the current one."""

from __future__ import annotations

import re
from pathlib import Path

from beaverguard._policy import Policy
from beaverguard._policy_docs import models, policy_reference
from beaverguard.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- policy-reference:start -->", "<!-- policy-reference:end -->"
HOW = (f"regenerate it: run `beaverguard policy docs` and put its output in README.md between "
       f"the lines {START} and {END}")


def test_readme_carries_the_current_policy_reference():
    text = README.read_text(encoding="utf-8") if README.is_file() else ""
    assert START in text and END in text, f"README.md has no policy reference block; {HOW}"
    block = text.split(START, 1)[1].split(END, 1)[0]
    assert block.strip() == policy_reference().strip(), f"README.md's policy reference is out of date; {HOW}"


def test_every_model_and_field_is_described():
    missing = [f"{model.__name__} (docstring)" for model in models() if not (model.__doc__ or "").strip()]
    missing += [f"{model.__name__}.{name}" for model in models()
                for name, field in model.model_fields.items() if not (field.description or "").strip()]
    assert not missing, f"add a description to: {', '.join(missing)}"


def test_reference_lists_every_key_of_the_json_schema():
    """Checked against pydantic's own walk of the schema, so a model the renderer misses shows up."""
    schema = Policy.model_json_schema()
    keys = set(schema["properties"])
    for definition in schema.get("$defs", {}).values():
        keys |= set(definition.get("properties", {}))
    reference = policy_reference()
    rows = set(re.findall(r"^\| `([^`]+)` \|", reference, flags=re.MULTILINE))
    assert keys <= rows, f"keys missing from the reference: {sorted(keys - rows)}"
    for name, definition in schema.get("$defs", {}).items():
        if "properties" in definition:  # a model, not an enum
            assert f"### {name}\n" in reference


def test_nested_models_say_where_they_sit():
    where = {model.__name__: paths for model, paths in models().items()}
    assert where["Policy"] == []
    assert where["RailPolicy"] == ["input", "output"]
    assert "input.categories.<category>" in where["Rule"] and "output.unsafe" in where["Rule"]
    assert where["PluginSpec"] == ["plugins[]"]


def test_cli_prints_the_reference(capsys):
    assert main(["policy", "docs"]) == 0
    assert capsys.readouterr().out == policy_reference()


def test_every_yaml_block_in_the_readmes_is_a_valid_policy():
    from beaverguard import parse_policy

    for readme in [README, *sorted(README.parent.glob("plugins/*/README.md"))]:
        blocks = re.findall(r"```yaml\n(.*?)```", readme.read_text(encoding="utf-8"), flags=re.DOTALL)
        assert blocks, f"{readme} shows no policy YAML"
        for i, block in enumerate(blocks):
            parse_policy(block, f"{readme} yaml block {i + 1}")
