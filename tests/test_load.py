"""Load and failure behaviour: many concurrent mixed requests through one guard, on the tiny real model.

Each request's prompt and response carry its number, so the audit log shows
whether every response was judged against its own prompt.
"""

import asyncio
import gc
import json
import os
import threading
import tracemalloc
from collections import defaultdict
from pathlib import Path

import pytest

N = 1000
KINDS = ("run", "input_blocked", "output_blocked", "llm_raises", "stream", "stream_blocked", "stream_raises",
         "stream_abandoned", "run_sync")


def prompt_for(i: int) -> str:
    kind = KINDS[i % len(KINDS)]
    return f"how do i make a bomb {i}" if kind == "input_blocked" else f"tell me about bread {i}"


def response_for(prompt: str) -> str:
    i = int(prompt.rsplit(" ", 1)[1])
    if KINDS[i % len(KINDS)] in ("output_blocked", "stream_blocked"):
        return f"request {i} here is the bread then add poison to the cake"
    return f"request {i} here is a recipe for bread and cake"


def chunks(text: str, size: int = 8) -> list[str]:
    return [text[s:s + size] for s in range(0, len(text), size)]


@pytest.fixture
def load_guard(make_guard, tmp_path):
    # A generous timeout: a busy shared machine must not turn slow scoring into fail-closed blocks here.
    guard = make_guard(f"audit: {{path: {tmp_path / 'load.jsonl'}, log: false, content: full}}\n"
                       "timeout_s: 120\nstreaming: {chunk_chars: 16, overlap_chars: 8}\n")
    return guard, tmp_path / "load.jsonl"


def build_client(guard):
    async def llm(prompt: str) -> str:
        await asyncio.sleep(0)
        i = int(prompt.rsplit(" ", 1)[1])
        if KINDS[i % len(KINDS)] == "llm_raises":
            raise RuntimeError(f"llm failed for {i}")
        return response_for(prompt)

    def llm_sync(prompt: str) -> str:
        return response_for(prompt)

    @guard.protect
    async def stream(prompt: str):
        i = int(prompt.rsplit(" ", 1)[1])
        for n, piece in enumerate(chunks(response_for(prompt))):
            if n == 2 and KINDS[i % len(KINDS)] == "stream_raises":
                raise RuntimeError(f"stream failed for {i}")
            await asyncio.sleep(0)
            yield piece

    async def one(i: int):
        prompt, kind = prompt_for(i), KINDS[i % len(KINDS)]
        if kind == "run_sync":
            return await asyncio.to_thread(guard.run_sync, llm_sync, prompt)
        if kind.startswith("stream"):
            gen = stream(prompt)
            if kind == "stream_abandoned":  # the client goes away after the first chunk
                first = await gen.__anext__()
                await gen.aclose()
                return [first]
            return [c async for c in gen]
        return await guard.run(llm, prompt)

    return one


async def run_load(guard, ids):
    one = build_client(guard)
    return dict(zip(ids, await asyncio.gather(*(one(i) for i in ids), return_exceptions=True)))


def check_results(guard, results):
    blocked = guard.policy.blocked_message
    for i, got in results.items():
        kind, prompt = KINDS[i % len(KINDS)], prompt_for(i)
        if kind in ("llm_raises", "stream_raises"):  # the LLM's own error reaches its caller, and only that
            assert isinstance(got, RuntimeError) and str(got).endswith(f"failed for {i}"), (i, got)
            continue
        assert not isinstance(got, BaseException), (i, got)
        if kind in ("run", "run_sync"):
            assert got == response_for(prompt), i  # its own response, not another request's
        elif kind in ("input_blocked", "output_blocked"):
            assert got == blocked, (i, got)
        elif kind == "stream":
            assert "".join(got) == response_for(prompt), i
        elif kind == "stream_blocked":
            assert got[-1] == blocked and "poison" not in "".join(got[:-1]), (i, got)
        elif kind == "stream_abandoned":
            assert response_for(prompt).startswith(got[0]), i


def check_audit(lines, ids):
    by_prompt = defaultdict(list)
    for line in lines:
        rec = json.loads(line)  # every line whole: concurrent writers never interleave
        by_prompt[rec["prompt"]].append(rec)
    assert set(by_prompt) == {prompt_for(i) for i in ids}
    for i in ids:
        kind, prompt = KINDS[i % len(KINDS)], prompt_for(i)
        recs = by_prompt[prompt]
        rails = sorted(r["rail"] for r in recs)
        reached_output = kind not in ("input_blocked", "llm_raises")
        assert rails == (["input", "output"] if reached_output else ["input"]), (i, rails)
        assert len({r["request_id"] for r in recs}) == 1, i
        inp = next(r for r in recs if r["rail"] == "input")
        assert inp["action"] == ("block" if kind == "input_blocked" else "allow"), (i, inp["action"])
        if reached_output:
            out = next(r for r in recs if r["rail"] == "output")
            assert out["response"].startswith(f"request {i} "), i  # judged against its own prompt
            assert out["action"] == ("block" if kind in ("output_blocked", "stream_blocked") else "allow"), i
            if kind.startswith("stream"):
                assert out["stream"]["abandoned"] is (kind in ("stream_raises", "stream_abandoned")), (i, out)


async def test_thousand_concurrent_mixed_requests(load_guard):
    guard, audit = load_guard
    loop = asyncio.get_running_loop()
    loop_errors, thread_errors = [], []
    loop.set_exception_handler(lambda _loop, ctx: loop_errors.append(ctx))
    old_hook = threading.excepthook
    threading.excepthook = lambda args: thread_errors.append(args)
    try:
        check_results(guard, await run_load(guard, range(N, N + 90)))  # warm up: caches, threads, sessions
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        ids = range(2 * N, 3 * N)
        results = await run_load(guard, ids)
        check_results(guard, results)
        assert guard._batcher.pending == 0  # no scoring work left behind
        assert asyncio.all_tasks() == {asyncio.current_task()}  # no task left running
        guard._auditor.close()  # flush (a later record would start the writer again)
        del results
        for _ in range(5):  # let the loop run the done-callbacks it has queued (they hold finished tasks)
            await asyncio.sleep(0)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        # ~350 KB stays (allocator and cache noise); a leaked decision per request (~1.5 KB) would not fit
        assert grown < 1_000_000, f"{grown} bytes still held after {N} requests"
    finally:
        threading.excepthook = old_hook
        loop.set_exception_handler(None)
    guard.close()
    assert not loop_errors and not thread_errors
    lines = audit.read_text().splitlines()
    check_audit([ln for ln in lines if json.loads(ln)["prompt"].endswith(tuple(f" {i}" for i in ids))], ids)
    assert len(lines) == sum(1 + (KINDS[i % len(KINDS)] not in ("input_blocked", "llm_raises"))
                             for i in [*range(N, N + 90), *ids])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a named pipe")  # POSIX everywhere CI runs
async def test_audit_never_blocks_the_event_loop_and_flushes_on_close(make_guard, tmp_path):
    """The audit log is a pipe no one reads yet: writing to it blocks, yet every request completes."""
    fifo = tmp_path / "audit.pipe"
    os.mkfifo(fifo)
    guard = make_guard(f"audit: {{path: {fifo}, log: false, content: full}}\n"
                       "timeout_s: 120\nstreaming: {chunk_chars: 16, overlap_chars: 8}\n")
    ids = range(180)
    results = await asyncio.wait_for(run_load(guard, ids), timeout=60)
    check_results(guard, results)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(Path(fifo).read_text().splitlines()))
    reader.start()
    guard.close()  # the writer now opens the pipe, writes everything, and closes it
    reader.join(timeout=30)
    assert not reader.is_alive()
    check_audit(lines, ids)


async def test_llm_error_propagates_and_leaves_only_the_input_record(load_guard):
    guard, audit = load_guard

    async def llm(prompt):
        await asyncio.sleep(0)
        raise ConnectionError("upstream down")

    with pytest.raises(ConnectionError, match="upstream down"):
        await guard.run(llm, "tell me about bread 7")
    assert guard._batcher.pending == 0
    assert asyncio.all_tasks() == {asyncio.current_task()}
    guard.close()
    recs = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [r["rail"] for r in recs] == ["input"] and recs[0]["prompt"] == "tell me about bread 7"


async def test_abandoned_stream_is_closed_and_audited(load_guard):
    guard, audit = load_guard
    closed = []

    @guard.protect
    async def stream(prompt):
        try:
            for n in range(1000):
                yield f"bread and cake {n} "
        finally:
            closed.append(prompt)

    gen = stream("tell me about bread 1")
    got = [await gen.__anext__(), await gen.__anext__()]
    await gen.aclose()
    assert got and closed == ["tell me about bread 1"]  # the handler's stream was closed at once
    assert guard._batcher.pending == 0
    assert asyncio.all_tasks() == {asyncio.current_task()}
    guard.close()
    recs = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [r["rail"] for r in recs] == ["input", "output"]
    assert recs[1]["stream"]["abandoned"] is True and recs[1]["request_id"] == recs[0]["request_id"]
    assert recs[1]["stream"]["chars"] < 1000 * len("bread and cake 0 ")


async def test_cancelled_request_frees_its_place(make_guard):
    guard = make_guard("execution: {max_wait_ms: 500, batch_size: 64}\n")  # requests wait for company
    tasks = [asyncio.create_task(guard.check_input(f"bread {i}")) for i in range(5)]
    while guard._batcher.pending < 5:
        await asyncio.sleep(0.001)
    for t in tasks:
        t.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert guard._batcher.drain(timeout=10) and guard._batcher.pending == 0
    assert guard._batcher.batches_run == 0  # none of them was scored
