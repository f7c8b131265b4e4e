"""pytest fixtures for plugin authors: guards on the tiny real ONNX model, audit records read back.

Import them into a conftest.py: ``from beaverguard.pytest_fixtures import make_guard, tiny_model``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from beaverguard import Guard, Policy, parse_policy
from beaverguard.testing import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def audit_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


@pytest.fixture
def make_guard(tiny_model: Path, audit_path: Path):
    """Build a guard from policy YAML (or a Policy); audit records go, verbatim, to ``audit_path``."""
    guards: list[Guard] = []

    def make(policy: str | Policy = "") -> Guard:
        if isinstance(policy, str):
            policy = parse_policy(policy or "{}")
        policy = policy.model_copy(update={"audit": policy.audit.model_copy(
            update={"path": audit_path, "log": False, "content": "full"})})
        guards.append(Guard(policy, model=tiny_model))
        return guards[-1]

    yield make
    for g in guards:
        g.close()


@pytest.fixture
def audit_records(audit_path: Path):
    """Read the audit records back (close the guard first to flush them)."""
    return lambda: [json.loads(line) for line in audit_path.read_text().splitlines()]
