"""The streaming output rail: where a stream is cut, what is audited, and what scoring costs."""

import asyncio
import concurrent.futures
import json

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

from beaverguard import OnnxScorer
from beaverguard._streaming import aguard_stream, guard_stream

SAFE = "here is a nice bread recipe with flour and water and salt "
UNSAFE_WORD = "kill"


def streaming(mode: str, chunk: int = 16, overlap: int = 4) -> str:
    return f"streaming: {{mode: {mode}, chunk_chars: {chunk}, overlap_chars: {overlap}}}\n"


def records(guard, tmp_path) -> list[dict]:
    guard.close()  # flushes the audit writer
    return [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]


def output_record(guard, tmp_path) -> dict:
    [rec] = [r for r in records(guard, tmp_path) if r["rail"] == "output"]
    return rec


class CountingScorer:
    """The real tiny-model scorer, counting the calls and response characters it scores."""

    def __init__(self, inner: OnnxScorer) -> None:
        self.inner, self.labels = inner, inner.labels
        self.default_thresholds = inner.default_thresholds
        self.calls = 0
        self.chars = 0

    def score(self, exchanges):
        self.calls += 1
        self.chars += sum(len(e.response or "") for e in exchanges)
        return self.inner.score(exchanges)


# -- where a stream is cut --------------------------------------------------------------------

async def test_buffer_mode_releases_nothing_of_the_unsafe_chunk(make_guard, tmp_path):
    guard = make_guard(streaming("buffer"))
    reply = SAFE + "then you " + UNSAFE_WORD + " them all and " + SAFE
    chunks = [c async for c in guard.wrap(GenericFakeChatModel(messages=iter([reply]))).astream("bread please")]
    released = "".join(c.content for c in chunks[:-1])
    assert chunks[-1].content == guard.policy.blocked_message
    assert reply.startswith(released) and UNSAFE_WORD not in released
    assert len(released) >= len(SAFE) - 16  # the safe text before it did go out
    rec = output_record(guard, tmp_path)
    assert rec["action"] == "block" and rec["stream"]["mode"] == "buffer"
    assert rec["stream"]["stopped_at"] == len(released) and not rec["stream"]["abandoned"]


def test_stream_first_stops_right_after_the_failing_check(make_guard, tmp_path):
    chunk_chars = 16
    guard = make_guard(streaming("stream_first", chunk=chunk_chars))
    reply = SAFE + "then you " + UNSAFE_WORD + " them all and " + SAFE * 3
    chunks = list(guard.wrap(GenericFakeChatModel(messages=iter([reply]))).stream("bread please"))
    released = "".join(c.content for c in chunks[:-1])
    assert chunks[-1].content == guard.policy.blocked_message
    assert reply.startswith(released) and UNSAFE_WORD in released  # already out: it stays out
    unsafe_end = reply.index(UNSAFE_WORD) + len(UNSAFE_WORD)
    longest_chunk = max(len(c.content) for c in chunks[:-1])
    assert len(released) - unsafe_end < chunk_chars + longest_chunk  # stopped at the first check after it
    rec = output_record(guard, tmp_path)
    assert rec["action"] == "block" and rec["stream"]["stopped_at"] == len(released)


@pytest.mark.parametrize("mode", ["buffer", "stream_first"])
async def test_plain_string_streams_and_rewrite_message(make_guard, tmp_path, mode):
    guard = make_guard(streaming(mode) + "output:\n  default: {action: rewrite}\n  unsafe: {action: rewrite}\n"
                       "  rewrite: 'Withheld: {categories}'\n")

    async def pieces():
        for word in (SAFE + "now steal the car " + SAFE).split(" "):
            yield word + " "

    out = [c async for c in aguard_stream(guard, "bread please", pieces(), "rid-1")]
    assert all(isinstance(c, str) for c in out) and out[-1].startswith("Withheld: ")
    assert ("steal" in "".join(out[:-1])) is (mode == "stream_first")
    rec = output_record(guard, tmp_path)
    assert rec["request_id"] == "rid-1" and rec["action"] == "rewrite"
    assert rec["stream"]["stopped_at"] == len("".join(out[:-1]))


@pytest.mark.parametrize("mode", ["buffer", "stream_first"])
def test_safe_stream_passes_whole_with_one_record(make_guard, tmp_path, mode):
    guard = make_guard(streaming(mode))
    reply = SAFE * 3
    pieces = [reply[i:i + 5] for i in range(0, len(reply), 5)]
    out = list(guard_stream(guard, "bread", iter(pieces), "rid"))
    assert out == pieces
    rec = output_record(guard, tmp_path)
    assert rec["action"] == "allow" and rec["stream"]["stopped_at"] is None
    assert rec["stream"]["chars"] == len(reply) and rec["stream"]["checks"] >= len(reply) // 20


def test_log_and_block_in_different_checks_keep_the_block(make_guard, tmp_path):
    # One check fires a category set to log; a later one fires only the overall score, whose rule
    # blocks. Merged into one set of scores, the category would win and say "log": the record must
    # repeat what stopped the stream, and the stream must end with the blocked message.
    guard = make_guard(streaming("buffer") + "output:\n  categories:\n    financial_crime: {action: log}\n"
                       "    violence: {threshold: 1.0}\n")
    pieces = ["you can steal bread ", "from the shop ", "and kill ", "them all ", "today "]
    out = list(guard_stream(guard, "bread", iter(pieces), "rid"))
    # The first piece passed its check but sat in the held-back overlap when the block came.
    assert out == [guard.policy.blocked_message]
    rec = output_record(guard, tmp_path)
    assert rec["action"] == "block" and rec["stream"]["stopped_at"] == 0


# -- concurrency, abandonment --------------------------------------------------------------

async def test_concurrent_streams_never_mix_text(make_guard):
    guard = make_guard(streaming("buffer", chunk=16, overlap=4))
    replies = [f"bread recipe {i} with flour {i} and water {i} " * 3 + ("kill now " if i % 4 == 0 else "")
               + f"and salt {i} thanks" for i in range(20)]

    async def one(i: int) -> str:
        wrapped = guard.wrap(GenericFakeChatModel(messages=iter([replies[i]])))
        return "".join([c.content async for c in wrapped.astream(f"bread recipe {i}")])

    outs = await asyncio.gather(*(one(i) for i in range(20)))
    for i, out in enumerate(outs):
        if i % 4 == 0:
            assert out.endswith(guard.policy.blocked_message) and "kill" not in out
            assert replies[i].startswith(out[: -len(guard.policy.blocked_message)])
        else:
            assert out == replies[i]


@pytest.mark.parametrize("mode", ["buffer", "stream_first"])
async def test_abandoned_stream_is_audited_once_and_leaves_no_pending_check(make_guard, tmp_path, monkeypatch,
                                                                             mode):
    guard = make_guard(streaming(mode))
    futures: list[concurrent.futures.Future] = []
    submit = guard._batcher.submit
    monkeypatch.setattr(guard._batcher, "submit", lambda ex: futures.extend(fs := submit(ex)) or fs)
    wrapped = guard.wrap(GenericFakeChatModel(messages=iter(["breadbreadbreadbread " + SAFE * 4])))
    stream = wrapped.astream("bread please")
    async for _ in stream:
        break
    submitted = len(futures)  # the consumer leaves here: closing must score nothing more
    await stream.aclose()
    # a check still queued is cancelled; one already running finishes, and no one waits for it
    concurrent.futures.wait([f for f in futures if not f.cancelled()], timeout=5)
    assert all(f.done() for f in futures) and submitted >= 2  # the input check and at least one output check
    rec = output_record(guard, tmp_path)
    assert rec["stream"]["abandoned"] and rec["stream"]["chars"] < len(SAFE * 4)
    assert len(futures) == submitted  # nothing scored after the consumer left


def test_abandoned_sync_stream_is_audited_once(make_guard, tmp_path):
    guard = make_guard(streaming("stream_first"))
    gen = guard_stream(guard, "bread", iter([SAFE] * 10), "rid")
    assert next(gen) == SAFE
    gen.close()
    rec = output_record(guard, tmp_path)
    assert rec["stream"]["abandoned"] and rec["stream"]["chars"] == len(SAFE)


def test_failing_source_is_audited_and_raises(make_guard, tmp_path):
    guard = make_guard(streaming("buffer"))

    def source():
        yield SAFE
        raise ConnectionError("model went away")

    with pytest.raises(ConnectionError):
        list(guard_stream(guard, "bread", source(), "rid"))
    assert output_record(guard, tmp_path)["stream"]["abandoned"]


def test_disabled_output_rail_streams_at_once_without_scoring(make_guard, tiny_model, tmp_path):
    scorer = CountingScorer(OnnxScorer(tiny_model))
    guard = make_guard("output: {enabled: false}\n" + streaming("buffer"), scorer=scorer)
    gen = guard_stream(guard, "bread", iter(["kill ", "them"] * 20), "rid")
    assert next(gen) == "kill "  # not held back for a check that never comes
    assert list(gen) == ["them"] + ["kill ", "them"] * 19
    assert scorer.calls == 0


# -- cost ------------------------------------------------------------------------------------

def test_scoring_work_grows_linearly_with_the_response(make_guard, tiny_model):
    chunk_chars, overlap = 64, 32
    scored = {}
    for n in (800, 1600, 3200, 6400):
        scorer = CountingScorer(OnnxScorer(tiny_model))
        guard = make_guard(streaming("buffer", chunk=chunk_chars, overlap=overlap), scorer=scorer)
        reply = ("flour and water " * (n // 16 + 1))[:n]
        pieces = [reply[i:i + 7] for i in range(0, n, 7)]
        assert "".join(guard_stream(guard, "bread", iter(pieces), "rid")) == reply
        scored[n] = scorer.chars
        # every character is scored, plus the overlap (and at most one piece) per check
        assert n <= scorer.chars <= n * (1 + (overlap + 7) / chunk_chars) + chunk_chars
        assert scorer.calls <= n / chunk_chars + 2
    assert scored[6400] / scored[800] < 8 * 1.1  # 8x the text, about 8x the work (quadratic would be 64x)
