"""An OpenAI-compatible LLM to put behind the server, and a way to run an app on a loopback port.

For tests and benchmarks: :class:`FakeUpstream` answers ``/v1/chat/completions``
from a script (plain or streamed, tool calls, an error status, a delay) and
records every request that reached it. :func:`serve_in_thread` runs any ASGI
app under uvicorn on a free loopback port, on a real socket. Run it alone for a
benchmark's upstream: ``python -m beaverguard.server.testing --port 8001``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

__all__ = ["FakeUpstream", "ServerThread", "serve_in_thread"]

Reply = str | Callable[[dict[str, Any]], str]


class FakeUpstream:
    """An OpenAI-compatible chat completions server that plays a script and records what it was sent.

    ``reply``: the answer's text (or a function of the request body). ``chunk_chars``: a streamed answer
    goes out in pieces this long. ``tool_calls``: OpenAI tool calls to answer with. ``status``: answer
    this HTTP status with an OpenAI error body instead. ``delay_s``: wait this long before answering;
    ``chunk_delay_s``: this long between two chunks of a stream.
    ``models``: the model names it knows (None: any); another gets 404 ``model_not_found``, as OpenAI answers.
    """

    def __init__(self, reply: Reply = "Mix flour, water and salt, then bake it.", *, chunk_chars: int = 8,
                 tool_calls: list[dict[str, Any]] | None = None, status: int = 200, delay_s: float = 0.0,
                 chunk_delay_s: float = 0.0, models: tuple[str, ...] | None = ("gpt-test",), record: bool = True) -> None:
        self.reply, self.chunk_chars, self.tool_calls = reply, chunk_chars, tool_calls
        self.status, self.delay_s, self.models, self.record = status, delay_s, models, record
        self.chunk_delay_s = chunk_delay_s
        self.requests: list[dict[str, Any]] = []
        self.streams_closed = 0  # streams whose client went away before the end
        self.app = Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"])])

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [r["json"] for r in self.requests]

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        if self.record:
            self.requests.append({"headers": dict(request.headers), "json": body})
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.status != 200:
            return JSONResponse({"error": {"message": f"upstream failure {self.status}", "type": "server_error",
                                           "param": None, "code": None}}, status_code=self.status)
        if self.models is not None and body.get("model") not in self.models:
            return JSONResponse({"error": {"message": f"The model `{body.get('model')}` does not exist",
                                           "type": "invalid_request_error", "param": None,
                                           "code": "model_not_found"}}, status_code=404)
        text = self.reply(body) if callable(self.reply) else self.reply
        if body.get("stream"):
            return StreamingResponse(self._stream(body["model"], text), media_type="text/event-stream")
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        n = int(body.get("n") or 1)
        return JSONResponse({
            "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
            "choices": [{"index": i, "message": message, "logprobs": None,
                         "finish_reason": "tool_calls" if self.tool_calls else "stop"} for i in range(n)],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

    async def _stream(self, model: str, text: str):
        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            return "data: " + json.dumps({"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                                          "created": int(time.time()), "model": model,
                                          "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                       "finish_reason": finish}]}) + "\n\n"
        finished = False
        try:
            yield chunk({"role": "assistant", "content": ""})
            for i in range(0, len(text), self.chunk_chars):
                if self.chunk_delay_s:
                    await asyncio.sleep(self.chunk_delay_s)
                yield chunk({"content": text[i:i + self.chunk_chars]})
            for i, call in enumerate(self.tool_calls or ()):
                yield chunk({"tool_calls": [{"index": i, **call}]})
            yield chunk({}, "tool_calls" if self.tool_calls else "stop")
            yield "data: [DONE]\n\n"
            finished = True
        finally:
            if not finished:
                self.streams_closed += 1


def _free_socket(host: str) -> socket.socket:
    # proto IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say they are TCP (else each
    # response waits ~40 ms for a delayed ACK between its headers and its body)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


class ServerThread:
    """An ASGI app under uvicorn on a free loopback port, in a daemon thread."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", timeout_s: float = 20.0) -> None:
        self._sock = _free_socket(host)
        port = self._sock.getsockname()[1]
        self.url = f"http://{host}:{port}"
        self.timeout_s = timeout_s
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on",
                                                    timeout_graceful_shutdown=2))
        failure: list[BaseException] = []

        def run() -> None:
            try:
                self.server.run(sockets=[self._sock])
            except BaseException as exc:  # noqa: BLE001 - reported to the caller below
                failure.append(exc)

        self.thread = threading.Thread(target=run, name=f"uvicorn-{port}", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if failure or not self.thread.is_alive() or time.monotonic() > deadline:
                self._sock.close()
                raise RuntimeError(f"the server on port {port} did not start") from (failure[0] if failure else None)
            time.sleep(0.01)

    def stop(self, *, wait: bool = True) -> None:
        """Ask the server to shut down (its app's lifespan ends); ``wait`` for it."""
        self.server.should_exit = True
        if wait:
            self.join()

    def join(self) -> None:
        self.thread.join(self.timeout_s)
        self._sock.close()


@contextmanager
def serve_in_thread(app: Any, *, host: str = "127.0.0.1", timeout_s: float = 20.0) -> Iterator[str]:
    """Run ``app`` under uvicorn on a free port in a thread; yield its base URL; stop it on exit."""
    running = ServerThread(app, host=host, timeout_s=timeout_s)
    try:
        yield running.url
    finally:
        running.stop()


def replies_from(path: str, default: str) -> Reply:
    """Answer each prompt with its response from a JSON Lines file of ``{"prompt", "response"}`` rows."""
    from beaverguard._messages import prompt_of

    answers: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                answers.setdefault(row["prompt"], row.get("response") or default)
    return lambda body: answers.get(prompt_of(body["messages"]), default)


def main() -> None:
    parser = argparse.ArgumentParser(description="An instant OpenAI-compatible upstream (for benchmarks).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--reply", default="Mix flour, water and salt, then bake it.")
    parser.add_argument("--pairs", help="JSON Lines of {prompt, response}: answer each prompt with its response")
    args = parser.parse_args()
    reply = replies_from(args.pairs, args.reply) if args.pairs else args.reply
    uvicorn.run(FakeUpstream(reply, record=False, models=None).app, host=args.host, port=args.port,
                log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
