"""Helpers the server tests share (a module of its own: `conftest` is a name every test folder has)."""

from __future__ import annotations

from pathlib import Path

from beaverguard import Policy, parse_policy


def policy(yaml_text: str, audit_path: Path) -> Policy:
    """A policy from YAML whose audit goes to ``audit_path``: verbatim and not logged, unless the YAML says."""
    parsed = parse_policy(yaml_text or "{}")
    given = parsed.audit.model_fields_set
    audit = {"path": audit_path, **({} if "log" in given else {"log": False}),
             **({} if "content" in given else {"content": "full"})}
    return parsed.model_copy(update={"audit": parsed.audit.model_copy(update=audit)})


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]
