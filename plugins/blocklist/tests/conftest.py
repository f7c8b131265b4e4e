"""Fixtures shared by every beaverguard plugin: guards on the tiny real ONNX model."""

from beaverguard.pytest_fixtures import audit_path, audit_records, make_guard, tiny_model  # noqa: F401
