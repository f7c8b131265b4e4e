"""Shared fixtures: a tiny real ONNX model built once per session, and guards on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from beaverguard import Guard, Policy, parse_policy
from beaverguard.pytest_fixtures import tiny_model  # noqa: F401  (the plugins' fixture, shared)


@pytest.fixture
def make_guard(tiny_model: Path, tmp_path: Path):
    """Build a guard on the tiny model from YAML text (audit to a file in tmp_path).

    Unlike the plugins' ``make_guard``, the policy's own audit settings stand (path,
    content mode), so the audit tests can set them; keyword arguments go to ``Guard``.
    """
    guards: list[Guard] = []

    def make(yaml_text: str = "", **kwargs) -> Guard:
        policy: Policy = parse_policy(yaml_text or "{}")
        if policy.audit.path is None:
            policy = policy.model_copy(update={"audit": policy.audit.model_copy(
                update={"path": tmp_path / "audit.jsonl", "log": False})})
        guard = Guard(policy, model=tiny_model, **kwargs)
        guards.append(guard)
        return guard

    yield make
    for g in guards:
        g.close()


@pytest.fixture
def guard(make_guard) -> Guard:
    return make_guard()
