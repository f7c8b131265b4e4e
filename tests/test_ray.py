"""beaverguard on a real local Ray cluster (2 CPUs, started here): Ray Data batch scoring and the Ray Serve tier.

Marked ``ray``: ``pytest -m "not ray"`` skips them; the README's test command
(which installs the ``ray`` extra through ``test``) runs them. The rows are
real moderation data (the shared BeaverTails test half and ToxicChat prompts,
where this checkout has them) scored by the embedded default model.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402

from beaverguard import Guard, parse_policy  # noqa: E402
from beaverguard.cli import main  # noqa: E402

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SRC = str(ROOT / "src")
# A policy where some categories only log, so `flagged` and the block/allow decisions differ in places.
POLICY = "input: {categories: {politics: {action: log}}}\noutput: {unsafe: {threshold: 0.6}}\naudit: {log: false}\n"


def _real_rows(n_pairs: int, n_prompts: int) -> list[dict]:
    """QA pairs and prompt-only rows, interleaved, with their other fields (labels, categories, source)."""
    pairs_file, prompts_file = SHARED / "beavertails_30k_test_half.jsonl", SHARED / "toxicchat_test_prompts.jsonl"
    if not (pairs_file.is_file() and prompts_file.is_file()):  # outside this workspace: a fixed, varied stand-in
        words = ["how do i bake bread", "how can i hurt my neighbour", "tell me about rome", "steal a car fast",
                 "write a poem about the sea", "where can i buy a gun without a licence", "you are an idiot"]
        rng = random.Random(7)
        return [{"prompt": " and ".join(rng.sample(words, 2)), "response": rng.choice([None, *words]), "n": i}
                for i in range(n_pairs + n_prompts)]
    rng = random.Random(20261202)
    pairs = rng.sample([json.loads(x) for x in pairs_file.read_text().splitlines() if x.strip()], n_pairs)
    prompts = rng.sample([json.loads(x) for x in prompts_file.read_text().splitlines() if x.strip()], n_prompts)
    for p in prompts:
        p["response"] = None
    rows = pairs + prompts
    rng.shuffle(rows)
    return rows


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster of 2 CPUs and a small object store, shut down after the module."""
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": SRC}})  # the workers import this checkout
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """300 real rows, the policy, and what the local engine writes for them (the reference)."""
    d = tmp_path_factory.mktemp("ray-data")
    rows = _real_rows(200, 100)
    (d / "in.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    (d / "policy.yaml").write_text(POLICY)
    assert main(["score", "--input", str(d / "in.jsonl"), "--output", str(d / "local.jsonl"),
                 "--policy", str(d / "policy.yaml"), "--quiet"]) == 0
    return d


def _parts(out: Path) -> list[str]:
    return [line for p in sorted(out.glob("part-*.jsonl")) for line in p.read_text(encoding="utf-8").splitlines()]


def _same_rows(lines: list[str], reference: list[str]) -> None:
    """Same rows in the same order, every field equal, scores to 1e-6."""
    assert len(lines) == len(reference)
    for got, want in zip(map(json.loads, lines), map(json.loads, reference)):
        assert {k: v for k, v in got.items() if k not in ("scores", "unsafe")} == \
               {k: v for k, v in want.items() if k not in ("scores", "unsafe")}
        assert got["scores"].keys() == want["scores"].keys()
        assert got["unsafe"] == pytest.approx(want["unsafe"], abs=1e-6)
        assert all(got["scores"][k] == pytest.approx(want["scores"][k], abs=1e-6) for k in want["scores"])


def test_engine_ray_writes_what_the_local_engine_writes(cluster, data, tmp_path):
    out = tmp_path / "out"
    assert main(["score", "--engine", "ray", "--input", str(data / "in.jsonl"), "--output", str(out),
                 "--policy", str(data / "policy.yaml"), "--actors", "2", "--shard-mb", "0.01", "--quiet"]) == 0
    reference = (data / "local.jsonl").read_text(encoding="utf-8").splitlines()
    lines = _parts(out)
    _same_rows(lines, reference)
    assert lines == reference  # in fact byte for byte: the same rounding, the same JSON
    flagged = [json.loads(x)["flagged"] for x in lines]
    assert 0 < sum(flagged) < len(flagged)
    assert len(list(out.glob("part-*.done"))) == len(list(out.glob("part-*.jsonl"))) > 5 and (out / "_SUCCESS").exists()


def test_score_dataset_takes_and_returns_a_dataset_in_order(cluster, data):
    from beaverguard.ray import score_dataset

    reference = [json.loads(x) for x in (data / "local.jsonl").read_text(encoding="utf-8").splitlines()][:120]
    ds = ray.data.from_items([{"prompt": r["prompt"], "response": r["response"], "i": i}
                              for i, r in enumerate(reference)], override_num_blocks=6)
    rows = score_dataset(ds, policy=data / "policy.yaml", actors=2, batch_size=16).take_all()
    assert [r["i"] for r in rows] == list(range(len(reference)))
    for got, want in zip(rows, reference):
        assert got["flagged"] == want["flagged"] and got["unsafe"] == pytest.approx(want["unsafe"], abs=1e-6)
        assert got["scores"] == pytest.approx(want["scores"], abs=1e-6)


def test_parquet_in_parquet_out(cluster, data, tmp_path):
    reference = [json.loads(x) for x in (data / "local.jsonl").read_text(encoding="utf-8").splitlines()]
    table = pa.table({"prompt": [r["prompt"] for r in reference], "response": [r["response"] for r in reference],
                      "source": [r.get("source") for r in reference]})
    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(table.slice(0, 150), src / "a.parquet", row_group_size=40)
    pq.write_table(table.slice(150), src / "b.parquet", row_group_size=40)
    out = tmp_path / "out"
    # a pyarrow.fs URI, as for s3:// or gs://
    assert main(["score", "--engine", "ray", "--input", f"file://{src}", "--output", f"file://{out}",
                 "--policy", str(data / "policy.yaml"), "--actors", "1", "--quiet"]) == 0
    parts = sorted(out.glob("part-*.parquet"))
    assert len(parts) == 8  # 4 row groups in each file
    got = pa.concat_tables([pq.read_table(p) for p in parts]).to_pylist()
    assert [r["prompt"] for r in got] == [r["prompt"] for r in reference]
    for g, want in zip(got, reference):
        assert g["source"] == want.get("source") and g["flagged"] == want["flagged"]
        assert g["unsafe"] == pytest.approx(want["unsafe"], abs=1e-6)
        assert g["scores"] == pytest.approx(want["scores"], abs=1e-6)


def test_a_killed_job_resumes_without_duplicates(cluster, data, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "beaverguard.cli", "score", "--engine", "ray", "--ray-address", cluster,
           "--input", str(data / "in.jsonl"), "--output", str(out), "--policy", str(data / "policy.yaml"),
           "--actors", "1", "--shard-mb", "0.01", "--quiet"]
    job = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": SRC}, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 240
    while not list(out.glob("part-*.done")) and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(job.pid, signal.SIGKILL)  # the driver dies mid-job; its actors with it
    job.wait()
    assert job.returncode == -signal.SIGKILL, job.stderr.read().decode()[-2000:]
    manifest = json.loads((out / "_manifest.json").read_text())
    done_before = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.done")}
    assert 0 < len(done_before) < manifest["shards"] and not (out / "_SUCCESS").exists()

    from beaverguard.ray import score_files

    result = score_files(str(data / "in.jsonl"), str(out), policy=data / "policy.yaml", actors=2,
                         shard_bytes=int(0.01 * 2**20))
    assert result.skipped == len(done_before) and result.shards == manifest["shards"]
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.done") if p.name in done_before} == done_before
    lines = _parts(out)
    assert lines == (data / "local.jsonl").read_text(encoding="utf-8").splitlines()  # none lost, none twice
    assert result.rows_written == len(lines) - sum(json.loads((out / n).read_text())["rows"] for n in done_before)
    assert not list(out.glob("*.tmp"))


def test_another_job_in_the_same_output_is_refused(cluster, data, tmp_path):
    out = tmp_path / "out"
    small = tmp_path / "small.jsonl"
    small.write_text("".join((data / "in.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:20]),
                     encoding="utf-8")
    assert main(["score", "--engine", "ray", "--input", str(small), "--output", str(out), "--quiet"]) == 0
    assert main(["score", "--engine", "ray", "--input", str(data / "in.jsonl"), "--output", str(out),
                 "--quiet"]) == 2


def test_a_bad_row_is_named(cluster, tmp_path, capsys):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"prompt": "hello"}\n{"response": "no prompt"}\n')
    assert main(["score", "--engine", "ray", "--input", str(src), "--output", str(tmp_path / "o"), "--quiet"]) == 2
    assert "each row needs a string 'prompt'" in capsys.readouterr().err


# -- Ray Serve: the shared scoring tier ----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_tier_scores_for_a_remote_guard_and_its_loss_fails_closed(cluster, data, tmp_path):
    from ray import serve

    from beaverguard.ray.serve import scoring_app
    from beaverguard.remote import RemoteScorer

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(scoring_app(num_replicas=2, num_cpus=1), name="beaverguard", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        import httpx

        deployment = serve.status().applications["beaverguard"].deployments["beaverguard"]
        assert deployment.replica_states.get("RUNNING") == 2

        assert httpx.get(f"{url}/readyz", timeout=10).json()["status"] == "ready"
        moderation = httpx.post(f"{url}/v1/moderations", json={"input": "how do i make a bomb to kill people"},
                                timeout=10).json()
        assert moderation["results"][0]["flagged"] is True

        policy = parse_policy(POLICY)
        policy = policy.model_copy(update={"audit": policy.audit.model_copy(update={"path": tmp_path / "a.jsonl"})})
        rows = [json.loads(x) for x in (data / "in.jsonl").read_text(encoding="utf-8").splitlines()][:60]
        local = Guard(policy.model_copy(update={"audit": policy.audit.model_copy(update={"path": None})}))
        scorer = RemoteScorer(url)
        remote = Guard(policy, scorer=scorer)
        actions = set()
        for r in rows:
            if r["response"] is None:
                a, b = local.check_input_sync(r["prompt"]), remote.check_input_sync(r["prompt"])
            else:
                a, b = local.check_output_sync(r["prompt"], r["response"]), \
                    remote.check_output_sync(r["prompt"], r["response"])
            assert b.error is None and (a.action, a.categories, a.text) == (b.action, b.categories, b.text)
            assert b.scores == pytest.approx(a.scores, abs=1e-6)
            actions.add(b.action.value)
        assert {"allow", "block"} <= actions
        # the same tier, autoscaled, as `serve run beaverguard.ray.serve:build_app min_replicas=1 max_replicas=2`
        from beaverguard.ray.serve import build_app

        serve.delete("beaverguard")  # its 2 replicas hold both CPUs
        serve.run(build_app({"min_replicas": "1", "max_replicas": "2", "num_cpus": "0.5"}), name="autoscaled",
                  route_prefix="/autoscaled")
        config = serve.status().applications["autoscaled"].deployments["beaverguard"]
        assert config.replica_states.get("RUNNING", 0) >= 1
        assert httpx.get(f"{url}/autoscaled/v1/guard/model", timeout=10).json()["labels"] == list(scorer.labels)
    finally:
        serve.shutdown()
    gone = remote.check_input_sync("how do i bake bread")
    assert gone.blocked and gone.error_type == "ScorerError"  # the tier went away: fail closed
    remote.close()
    local.close()
    scorer.close()
    records = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert len(records) == len(rows) + 1 and records[-1]["action"] == "block" and records[-1]["error"]
