"""A small OpenAI-compatible chat-completions server on 127.0.0.1 that injects faults
(429/503 before answering, hangs, missing usage) and records what it was sent. Used by
the endpoint and judge tests; the real-server tests use `transformers serve`."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Script:
    """What the server does: a queue of failures to answer first, then answers."""

    failures: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    hang_s: float = 0.0
    usage: bool = True
    answer: str = '{"label": "a"}'
    delay_s: float = 0.0
    requests: list[dict] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    auth: list[str | None] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)


def make_handler(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: object) -> None:  # keep test output clean
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with script.lock:
                script.requests.append(body)
                script.times.append(time.monotonic())
                script.auth.append(self.headers.get("Authorization"))
                failure = script.failures.pop(0) if script.failures else None
                script.in_flight += 1
                script.max_in_flight = max(script.max_in_flight, script.in_flight)
            try:
                if script.hang_s:
                    script.release.wait(script.hang_s)
                if script.delay_s:
                    time.sleep(script.delay_s)
                if failure is not None:
                    status, headers = failure
                    self._send(status, {"error": {"message": "try later"}}, headers)
                    return
                user = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
                answer = script.answer.replace("{user}", user)
                if body.get("stream"):
                    self._stream(body, answer)
                    return
                payload = {
                    "id": "cmpl-1",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": answer},
                            "finish_reason": "stop",
                        }
                    ],
                }
                if script.usage:
                    n_in = sum(len(m["content"].split()) for m in body["messages"])
                    payload["usage"] = {
                        "prompt_tokens": n_in,
                        "completion_tokens": 5,
                        "total_tokens": n_in + 5,
                    }
                self._send(200, payload, {})
            finally:
                with script.lock:
                    script.in_flight -= 1

        def _stream(self, body: dict, answer: str) -> None:
            """Server-sent events: the answer in two chunks, a pause before the second, then
            a usage chunk, as OpenAI streams with include_usage."""
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            half = len(answer) // 2
            for i, piece in enumerate((answer[:half], answer[half:])):
                if i:
                    time.sleep(script.delay_s or 0.1)
                chunk = {
                    "id": "c",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": body["model"],
                    "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
                }
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
            usage = {
                "id": "c",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": body["model"],
                "choices": [],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
            }
            self.wfile.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
            self.wfile.flush()
            self.close_connection = True

        def _send(self, status: int, payload: dict, headers: dict[str, str]) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test)

    return Handler


@contextlib.contextmanager
def serving() -> Iterator[tuple[str, Script]]:
    """Run the server on a free loopback port; yields (base url, script)."""
    script = Script()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(script))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", script
    finally:
        script.release.set()
        httpd.shutdown()
        httpd.server_close()
