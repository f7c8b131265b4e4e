"""The core stays free of Ray: nothing imports it until ``score --engine ray``, which says how to install it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"})


def test_the_core_and_the_remote_scorer_do_not_import_ray():
    done = _run("import sys, beaverguard, beaverguard.cli, beaverguard.remote\n"
                "print(sorted(m for m in ('ray', 'pyarrow', 'httpx') if m in sys.modules))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_engine_ray_without_ray_names_the_extra(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "hello"}\n')
    done = _run("import sys; sys.modules['ray'] = None  # as if Ray were not installed\n"
                "from beaverguard.cli import main\n"
                f"sys.exit(main(['score', '--engine', 'ray', '--input', {str(src)!r}, '--output', "
                f"{str(tmp_path / 'out')!r}]))")
    assert done.returncode == 2, done.stderr
    assert 'pip install "beaverguard[ray]"' in done.stderr
