"""Hot reload: a good policy takes effect for the next request, a broken one changes nothing."""

import asyncio
import logging
import os
import threading
import time
from pathlib import Path

import pytest

from beaverguard import Action, Guard, ModelError, PolicyError, parse_policy

BLOCKING = "audit: {log: false}\n"
LOGGING = "audit: {log: false}\ninput:\n  default: {action: log}\n  unsafe: {action: log}\n"


@pytest.fixture
def policy_file(tmp_path: Path):
    path = tmp_path / "policy.yaml"
    path.write_text(BLOCKING)
    return path


@pytest.fixture
def file_guard(policy_file, tiny_model):
    guard = Guard(policy_file, model=tiny_model)
    yield guard
    guard.close()


def rewrite(path: Path, text: str) -> None:
    """Write ``text`` with an mtime clearly after the old one (coarse file-system clocks)."""
    old = path.stat().st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(old + 2_000_000_000, old + 2_000_000_000))


async def test_reload_rereads_the_file(file_guard, policy_file):
    assert (await file_guard.check_input("steal")).action is Action.BLOCK
    rewrite(policy_file, LOGGING)
    new = file_guard.reload()
    assert new is file_guard.policy and new.input.default.action is Action.LOG
    assert (await file_guard.check_input("steal")).action is Action.LOG


async def test_broken_file_keeps_the_old_policy_and_raises(file_guard, policy_file, caplog):
    before = file_guard.policy
    for broken in ("input: {default: {action: explode}}\n", "input: [unclosed\n", "timeout_s: -1\n"):
        rewrite(policy_file, broken)
        with caplog.at_level(logging.ERROR, logger="beaverguard"), pytest.raises(PolicyError) as err:
            file_guard.reload()
        assert str(policy_file) in str(err.value)
        assert "reload failed" in caplog.text and str(policy_file) in caplog.text
        assert file_guard.policy is before
        assert (await file_guard.check_input("steal")).blocked
    policy_file.unlink()
    with pytest.raises(PolicyError, match="cannot read"):
        file_guard.reload()
    assert file_guard.policy is before
    assert (await file_guard.check_input("steal")).blocked
    assert (await file_guard.check_input("bread")).action is Action.ALLOW


@pytest.mark.parametrize("on_error", ["block", "allow"])  # fail-open never swaps a model for none on reload
async def test_unloadable_model_keeps_the_old_policy(tmp_path, tiny_model, caplog, on_error):
    path = tmp_path / "policy.yaml"
    path.write_text(f"{BLOCKING}model: {tiny_model}\n")
    guard = Guard(path)
    try:
        before, scorer = guard.policy, guard.scorer
        rewrite(path, f"{LOGGING}on_error: {on_error}\nmodel: {tmp_path / 'nowhere'}\n")
        with caplog.at_level(logging.ERROR, logger="beaverguard"), pytest.raises(ModelError):
            guard.reload()
        assert "reload failed" in caplog.text
        assert guard.policy is before and guard.scorer is scorer
        assert (await guard.check_input("steal")).blocked
    finally:
        guard.close()


async def test_reload_with_a_policy_object_or_another_path(make_guard, tmp_path):
    guard = make_guard()
    with pytest.raises(PolicyError, match="not built from a policy file"):
        guard.reload()
    guard.reload(parse_policy(LOGGING))
    assert (await guard.check_input("steal")).action is Action.LOG
    other = tmp_path / "other.yaml"
    other.write_text(BLOCKING)
    guard.reload(other)
    assert (await guard.check_input("steal")).blocked
    rewrite(other, LOGGING)
    guard.reload()  # now it remembers the file
    assert (await guard.check_input("steal")).action is Action.LOG


async def test_in_flight_requests_finish_on_the_old_batcher_which_then_closes(policy_file, tiny_model):
    # Requests wait in the batcher for company, so they are surely in flight when the policy changes.
    policy_file.write_text(BLOCKING + "execution: {max_wait_ms: 400, batch_size: 64}\n")
    guard = Guard(policy_file, model=tiny_model)
    try:
        old_batcher, old_scorer = guard._batcher, guard.scorer
        tasks = [asyncio.create_task(guard.check_input(p)) for p in ["kill"] * 10 + ["bread"] * 10]
        while old_batcher.pending < 20:
            await asyncio.sleep(0.001)
        rewrite(policy_file, LOGGING + "execution: {batch_size: 8}\n")  # execution changed: new scorer and batcher
        guard.reload()
        assert guard._batcher is not old_batcher and guard.scorer is not old_scorer
        assert old_batcher.pending == 20 and not old_batcher.closed  # not dropped, not closed under them
        after = await guard.check_input("steal")
        assert after.action is Action.LOG and after.error is None
        decisions = await asyncio.gather(*tasks)
        assert all(d.error is None for d in decisions)
        assert [d.categories != () for d in decisions] == [True] * 10 + [False] * 10
        assert old_batcher.drain(timeout=10)
        for thread in guard._retiring:
            thread.join(timeout=10)
        assert old_batcher.closed and guard._batcher.pending == 0
    finally:
        guard.close()


async def test_unchanged_model_and_execution_keep_the_scorer(file_guard, policy_file):
    scorer = file_guard.scorer
    rewrite(policy_file, LOGGING)
    file_guard.reload()
    assert file_guard.scorer is scorer


def test_reload_under_concurrent_sync_load_drops_nothing(file_guard, policy_file):
    # A long timeout: on a loaded machine a check may be slow, which is not what this test is about; a check
    # dropped or refused by a batcher retired under it fails it whatever the timeout.
    file_guard.reload(parse_policy(BLOCKING + "timeout_s: 120\n"))
    errors, results = [], []
    stop = threading.Event()

    def client():
        while not stop.is_set():
            try:
                results.append(file_guard.check_input_sync("kill"))
            except Exception as exc:  # pragma: no cover - the assertion below reports it
                errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(6):
            execution = f"timeout_s: 120\nexecution: {{batch_size: {i + 1}}}\n"
            rewrite(policy_file, (LOGGING if i % 2 else BLOCKING) + execution)
            file_guard.reload()
            time.sleep(0.02)  # let the clients reach the new batcher before the next swap
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    assert results and [d.error for d in results if d.error] == []
    assert all(d.action in (Action.BLOCK, Action.LOG) for d in results)


def test_a_retired_batcher_finishes_what_it_was_given_and_hands_on_what_comes_later(tiny_model):
    """No check slips in between a retired batcher's drain and its close (it would be refused as closed)."""
    from beaverguard import Exchange, OnnxScorer
    from beaverguard._batching import Batcher, plan
    from beaverguard._policy import ExecutionPolicy

    scorer = OnnxScorer(tiny_model, batch_size=1)
    old, new = (Batcher(scorer, plan(ExecutionPolicy(workers=2, batch_size=1), on_gpu=False), timeout_s=30)
                for _ in range(2))
    try:
        retiring = threading.Thread(target=old.retire, args=(new,))
        with old._cond:  # a caller in the middle of a submit when the reload begins (nothing queued yet) ...
            retiring.start()
            time.sleep(0.05)
            assert old.successor is None  # ... is not overtaken: the hand-over waits for its submit
            during = old.submit([Exchange("scone")])  # (the lock is re-entrant: this is that caller's submit)
        retiring.join(timeout=30)
        assert old.closed and old.successor is new
        after = old.submit([Exchange("cake")])  # a caller that fetched the old batcher before the swap
        assert new.pending + new.batches_run >= 1  # went to the successor
        assert all(f.result(timeout=30)["unsafe"] >= 0 for f in during + after)  # none refused as closed
    finally:
        old.close()
        new.close()


def test_watch_reloads_on_change_and_survives_a_broken_file(policy_file, tiny_model, caplog):
    guard = Guard(policy_file, model=tiny_model, watch=True)
    try:
        guard._watch_stop.set()  # replace the default 1 s poll with a fast one for the test
        guard._watch_stop = None
        guard.watch(interval_s=0.02)

        def wait_for(predicate) -> bool:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if predicate():
                    return True
                time.sleep(0.01)
            return False

        rewrite(policy_file, LOGGING)
        assert wait_for(lambda: guard.policy.input.default.action is Action.LOG)
        assert guard.check_input_sync("steal").action is Action.LOG
        current = guard.policy
        with caplog.at_level(logging.ERROR, logger="beaverguard"):
            rewrite(policy_file, "input: {default: {action: explode}}\n")
            assert wait_for(lambda: "reload failed" in caplog.text)
        assert guard.policy is current
        rewrite(policy_file, BLOCKING)
        assert wait_for(lambda: guard.policy.input.default.action is Action.BLOCK)
        assert guard.check_input_sync("steal").blocked
    finally:
        guard.close()
    assert guard._watch_stop.is_set()


def test_watch_needs_a_file(make_guard):
    with pytest.raises(PolicyError, match="nothing to watch"):
        make_guard().watch()
