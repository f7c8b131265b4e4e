"""A clean exit: at interpreter exit and on close(), queued checks are refused, running ones
finish, every audit log flushes, and the process exits with its own status.

Each exit test runs a real burst in a fresh Python process that exits while checks
are queued and running, without calling close().
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from beaverguard import Exchange, OnnxScorer, ScorerError
from beaverguard._batching import Batcher, plan
from beaverguard._policy import ExecutionPolicy

BURST = r"""
import asyncio, sys, threading, time
from beaverguard import Guard, parse_policy

model, audit, mode = sys.argv[1:4]
guard = Guard(parse_policy(f"audit: {{path: {audit}, log: false}}\ntimeout_s: 5\n"
                           "execution: {workers: 2, batch_size: 1}\n"), model=None if model == "-" else model)
text = "tell me about bread and how to bake it at home " * 8

def report(d):  # one write per line, so that threads never interleave
    sys.stdout.write(f"{d.request_id} {d.error_type}\n")
    sys.stdout.flush()

if mode == "threads":  # daemon threads checking in a loop; the main thread exits with status 3
    def client():
        while True:
            report(guard.check_input_sync(text))
    for _ in range(24):
        threading.Thread(target=client, daemon=True).start()
    time.sleep(1.0)
    sys.exit(3)
else:  # asyncio.run returns with checks queued; it cancels their tasks
    async def one():
        report(await guard.check_input(text))
    async def main():
        tasks = [asyncio.create_task(one()) for _ in range(400)]
        await asyncio.sleep(0.5)
    asyncio.run(main())
"""


def run_burst(model: str, tmp_path: Path, mode: str) -> tuple[subprocess.CompletedProcess, list[str], list[dict]]:
    audit = tmp_path / "audit.jsonl"
    proc = subprocess.run([sys.executable, "-c", BURST, model, str(audit), mode], capture_output=True, text=True,
                          timeout=120)
    lines = audit.read_text().splitlines() if audit.exists() else []
    return proc, proc.stdout.split("\n"), [json.loads(line) for line in lines]  # every line whole JSON


@pytest.mark.parametrize(("mode", "status"), [("threads", 3), ("asyncio", 0)])
@pytest.mark.parametrize("which", ["tiny", "default"])
def test_a_process_that_exits_mid_burst_exits_cleanly_with_its_audit_log_complete(tiny_model, tmp_path, mode,
                                                                                  status, which):
    proc, reported, records = run_burst(str(tiny_model) if which == "tiny" else "-", tmp_path, mode)
    assert proc.returncode == status, proc.stderr[-2000:]
    assert "terminate called" not in proc.stderr
    decided = [line.split()[0] for line in reported if line]
    assert decided, "the burst made decisions before the exit"
    audited = Counter(r["request_id"] for r in records)
    assert all(audited[rid] == 1 for rid in decided)  # every decision has its one record
    assert max(audited.values()) == 1
    if mode == "threads":  # the callers still waiting at exit were refused, not left hanging, and audited
        assert any(r["error_type"] == "ScorerError" and "closed" in r["error"] for r in records)


class SlowRuns(OnnxScorer):
    """The tiny model with each run 50 ms slower, so that close() finds runs in progress and a queue."""

    def run_windows(self, windows, wide=False):
        time.sleep(0.05)
        return super().run_windows(windows, wide=wide)


def test_close_refuses_what_is_queued_and_lets_what_runs_finish(tiny_model):
    batcher = Batcher(SlowRuns(tiny_model, batch_size=1),
                      plan(ExecutionPolicy(workers=2, batch_size=1), on_gpu=False, cores=2))
    futures = batcher.submit([Exchange(f"bread {i}") for i in range(20)])
    while batcher._running == 0:
        time.sleep(0.001)
    time.sleep(0.01)  # the two workers are inside their runs
    batcher.close()
    assert all(f.done() for f in futures)  # nothing left waiting once close() returns
    scored = [f for f in futures if f.exception() is None]
    refused = [f for f in futures if isinstance(f.exception(), ScorerError)]
    assert 1 <= len(scored) <= 4 and len(scored) + len(refused) == 20  # the running ones finished
    assert all(f.result()["unsafe"] >= 0 for f in scored)
    assert isinstance(batcher.submit([Exchange("late")])[0].exception(), ScorerError)


def test_close_lets_waiting_callers_write_their_decisions_first(make_guard, tiny_model, tmp_path):
    guard = make_guard("timeout_s: 5\nexecution: {workers: 2, batch_size: 1}\n", scorer=SlowRuns(tiny_model))
    decisions: list = []
    callers = [threading.Thread(target=lambda i=i: decisions.append(guard.check_input_sync(f"bread {i}")))
               for i in range(12)]
    for t in callers:
        t.start()
    while guard._batcher.pending < 12:
        time.sleep(0.001)
    guard.close()
    for t in callers:
        t.join(timeout=10)
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert len(decisions) == 12 and sorted(r["request_id"] for r in records) == sorted(
        d.request_id for d in decisions)
    assert any(d.error is None for d in decisions) and any(d.error_type == "ScorerError" for d in decisions)
