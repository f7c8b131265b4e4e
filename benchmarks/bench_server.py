"""The server under load: throughput and p50/p99 at 1, 32 and 128 clients, and its cost over the in-process guard.

    python benchmarks/bench_server.py [--repeats 2] [--data FILE]

On loopback only. ``beaverguard serve`` runs as its own process on the
embedded model, in front of an instant OpenAI-compatible upstream (a second
process, ``python -m beaverguard.server.testing``) that answers each
BeaverTails prompt with its BeaverTails response. Clients are one asyncio
process holding one keep-alive HTTP/1.1 connection each, driven by h11 (httpx's
async client slows down past a few requests in flight: on this machine 735
requests/s to the instant upstream with one in flight, 419 with 32, so it
would have been the thing measured). Two endpoints:

* ``/v1/moderations``, one prompt per request: one input-rail check;
* ``/v1/chat/completions``: input rail, the upstream, output rail on the answer.

The in-process guard does the same exchanges in the client process: for a
moderation, ``guard.check_input``; for a chat, ``check_input``, the same HTTP
call to the same upstream, then ``check_output``, which is what an app that
embeds the guard does (with httpx, as the server calls its upstream). The policy logs instead of blocking, so every request
takes the whole path; audit records are off on both sides. Each level runs the
server and the in-process guard alternately, ``--repeats`` times, each pass
bounded in requests and seconds; figures are medians over the passes.
Everything shares the machine's cores: the clients' own work (JSON, HTTP) is
part of what the server variant costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import Counter
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import h11
import httpx

from _common import DEFAULT_DATA, ROOT, load_pairs, median, pct, report, table

from beaverguard import Guard, load_policy

LEVELS = (1, 32, 128)
#: Requests per pass at each level, and the most seconds a pass may take.
COUNTS = {1: 150, 32: 500, 128: 800}
MAX_PASS_S = 20.0
POLICY = """\
# Every rule logs, so every request takes the whole path (both rails, the upstream); no audit records.
input: {default: {action: log}, unsafe: {action: log}}
output: {default: {action: log}, unsafe: {action: log}}
audit: {log: false}
"""

#: Sends request ``i`` on a client's own connection; returns "ok", or what went wrong ("429", "ScorerOverloaded").
Send = Callable[[int, "Connection"], Awaitable[str]]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, process: subprocess.Popen, what: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"{what} exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    sys.exit(f"{what} did not start in {timeout_s} s")


class Connection:
    """One keep-alive HTTP/1.1 client connection (h11 over asyncio streams): a client that costs little."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None

    async def post(self, path: str, body: dict) -> tuple[int, dict]:
        if self.reader is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            self.h11 = h11.Connection(h11.CLIENT)
        data = json.dumps(body).encode()
        headers = [("host", "127.0.0.1"), ("content-type", "application/json"), ("content-length", str(len(data)))]
        self.writer.write(self.h11.send(h11.Request(method="POST", target=path, headers=headers))
                          + self.h11.send(h11.Data(data=data)) + self.h11.send(h11.EndOfMessage()))
        status, chunks = 0, []
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                self.h11.receive_data(await self.reader.read(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
        self.h11.start_next_cycle()
        return status, json.loads(b"".join(chunks))

    def close(self) -> None:
        if self.reader is not None:
            self.writer.close()


async def load(send: Send, n_items: int, clients: int, count: int, port: int) -> dict[str, float]:
    """``count`` requests (at most MAX_PASS_S seconds) from ``clients`` concurrent clients."""
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    next_i = 0
    deadline = time.perf_counter() + MAX_PASS_S

    async def client() -> None:
        nonlocal next_i
        connection = Connection(port)
        try:
            while next_i < count and time.perf_counter() < deadline:
                i, next_i = next_i, next_i + 1
                t0 = time.perf_counter()
                outcome = await send(i % n_items, connection)
                latencies.append(time.perf_counter() - t0)
                if outcome != "ok":
                    failures[outcome] += 1
        finally:
            connection.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - start
    return {"n": len(latencies), "rps": len(latencies) / elapsed, "p50": pct(latencies, 50) * 1000,
            "p99": pct(latencies, 99) * 1000, "failures": failures}


async def run(args: argparse.Namespace) -> str:
    pairs = load_pairs(max(COUNTS.values()), **({"path": args.data} if args.data else {}))
    prompts = [p for p, _ in pairs]
    work = Path(tempfile.mkdtemp(prefix="bench-server-"))
    (work / "pairs.jsonl").write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in pairs))
    (work / "policy.yaml").write_text(POLICY)
    up_port, gw_port = _port(), _port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    upstream = subprocess.Popen([sys.executable, "-m", "beaverguard.server.testing", "--port", str(up_port),
                                 "--pairs", str(work / "pairs.jsonl")], env=env)
    server = subprocess.Popen([sys.executable, "-m", "beaverguard.cli", "serve", "--policy", str(work / "policy.yaml"),
                               "--upstream", f"http://127.0.0.1:{up_port}/v1", "--port", str(gw_port),
                               "--log-level", "warning", "--no-watch"], env=env)
    guard = Guard(load_policy(work / "policy.yaml"))
    try:
        _wait(f"http://127.0.0.1:{up_port}/", upstream, "the upstream")
        _wait(f"http://127.0.0.1:{gw_port}/readyz", server, "beaverguard serve")
        return await measure(args, prompts, pairs, guard, gw_port, f"http://127.0.0.1:{up_port}/v1")
    finally:
        guard.close()
        for process in (server, upstream):
            process.terminate()
            process.wait(30)


async def measure(args, prompts, pairs, guard: Guard, gateway_port: int, upstream: str) -> str:
    results: dict[tuple[str, str, int], list[dict[str, float]]] = {}
    limits = httpx.Limits(max_connections=max(LEVELS), max_keepalive_connections=max(LEVELS))
    async with httpx.AsyncClient(base_url=upstream, limits=limits, timeout=60) as llm:
        def chat_body(i: int) -> dict:
            return {"model": "bench", "messages": [{"role": "user", "content": prompts[i]}]}

        def outcome(status: int, ok: bool) -> str:
            return "ok" if status == 200 and ok else str(status)

        def judged(*decisions) -> str:
            return next((d.error_type for d in decisions if d.error_type), "ok")

        async def server_moderation(i: int, connection: Connection) -> str:
            status, body = await connection.post("/v1/moderations", {"input": prompts[i]})
            return outcome(status, len(body.get("results", ())) == 1)

        async def server_chat(i: int, connection: Connection) -> str:
            status, body = await connection.post("/v1/chat/completions", chat_body(i))
            return outcome(status, bool(body.get("choices")))

        async def guard_moderation(i: int, connection: Connection) -> str:
            return judged(await guard.check_input(prompts[i]))

        async def guard_chat(i: int, connection: Connection) -> str:
            messages = chat_body(i)["messages"]
            verdict = await guard.check_input(messages)
            if verdict.blocked:  # refused (overload) or failed: as the server, no upstream call
                return judged(verdict)
            r = await llm.post("chat/completions", json={**chat_body(i), "messages": guard.apply_input(messages,
                                                                                                     verdict)})
            answer = r.json()["choices"][0]["message"]
            return judged(verdict, await guard.check_output(messages, answer))

        variants = {"moderations": {"server": server_moderation, "in-process": guard_moderation},
                    "chat": {"server": server_chat, "in-process": guard_chat}}
        for sends in variants.values():  # warm up both sides: connections, sessions, the batcher's estimates
            for send in sends.values():
                await load(send, len(prompts), 8, 64, gateway_port)
        for endpoint, sends in variants.items():
            for clients in LEVELS:
                for _ in range(args.repeats):
                    for name, send in sends.items():
                        got = await load(send, len(prompts), clients, COUNTS[clients], gateway_port)
                        results.setdefault((endpoint, name, clients), []).append(got)
                        print(f"{endpoint:11} {name:10} {clients:3} clients: {got['rps']:6.1f}/s "
                              f"p50 {got['p50']:6.1f} ms p99 {got['p99']:7.1f} ms ({got['n']} requests)", flush=True)
    return render(results, args)


def render(results, args) -> str:
    def m(endpoint: str, name: str, clients: int, key: str) -> float:
        return median([r[key] for r in results[(endpoint, name, clients)]])

    rows = []
    for endpoint in ("moderations", "chat"):
        for clients in LEVELS:
            s = {k: m(endpoint, "server", clients, k) for k in ("rps", "p50", "p99")}
            g = {k: m(endpoint, "in-process", clients, k) for k in ("rps", "p50", "p99")}
            failures = "; ".join(
                f"{name}: " + ", ".join(f"{n} {kind}" for kind, n in sorted(total.items()))
                for name in ("server", "in-process")
                if (total := sum((r["failures"] for r in results[(endpoint, name, clients)]), Counter())))
            rows.append([f"`/v1/{'chat/completions' if endpoint == 'chat' else endpoint}`", clients,
                         f"{s['rps']:.0f}", f"{s['p50']:.1f}", f"{s['p99']:.1f}",
                         f"{g['rps']:.0f}", f"{g['p50']:.1f}", f"{g['p99']:.1f}",
                         f"{s['rps'] / g['rps']:.2f}x", f"{s['p50'] - g['p50']:+.1f}", failures or "none"])
    body = table(["endpoint", "clients", "server req/s", "p50 ms", "p99 ms", "in-process req/s", "p50 ms",
                  "p99 ms", "server/in-process throughput", "p50 overhead ms", "not answered"], rows)
    passes = ", ".join(f"{c} clients: {COUNTS[c]}" for c in LEVELS)
    return (f"{body}\n\nRequests per pass ({passes}; at most {MAX_PASS_S:.0f} s a pass), {args.repeats} passes "
            f"per variant, alternating server and in-process; medians over the passes. `not answered`: requests "
            "without a result, over all the row's passes: the server's by HTTP status (429: admission control "
            "refused a check that could not be scored within `timeout_s`), the in-process guard's by the "
            "decision's error type. Policy: every rule logs (so every request takes both rails and the upstream), "
            "audit records off, embedded default model, default execution plan.\n")


def main() -> None:
    logging.getLogger("beaverguard").setLevel(logging.ERROR)  # refusals are counted in the table, not logged
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data", type=Path, help=f"JSON Lines of prompt/response rows (default: {DEFAULT_DATA})")
    args = parser.parse_args()
    body = asyncio.run(run(args))
    report("server", "beaverguard serve under load: throughput, p50/p99, and overhead against the in-process guard",
           body, packages=("fastapi", "uvicorn", "uvloop", "httptools", "httpx", "starlette"))


if __name__ == "__main__":
    main()
