"""A small OpenAI-compatible HTTP server for tests, on a real socket, whose answers are scripted per request:
an answer, a 429 with Retry-After, a 500, a hang, truncated JSON, a wrong number of choices. What a client sends
(paths, bodies, headers) is recorded so a test can check what went over the wire."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def completion(text: str, chat: bool = True, finish: str = "stop", n: int = 1) -> dict[str, Any]:
    choice = {"index": 0, "finish_reason": finish}
    choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
    return {
        "id": "cmpl-test",
        "object": "chat.completion" if chat else "text_completion",
        "choices": [dict(choice, index=i) for i in range(n)],
        "usage": {"prompt_tokens": 7, "completion_tokens": len(text.split()), "total_tokens": 7 + len(text.split())},
    }


@dataclass
class Reply:
    """What the server does with one request."""

    status: int = 200
    body: bytes | None = None  # None: a completion echoing the prompt
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # a hang longer than the client's timeout


def answer_for(request: dict[str, Any]) -> str:
    prompt = request["messages"][-1]["content"] if "messages" in request else request["prompt"]
    return f"Answer to [{prompt}] seed {request.get('seed')}. The answer is \\boxed{{{len(prompt)}}}."


@dataclass
class FakeOpenAI:
    """`script(k, request)` -> the Reply to the k-th request received (0-based); default: a good answer."""

    script: Callable[[int, dict[str, Any]], Reply] = lambda k, req: Reply()
    received: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reply(self, request: dict[str, Any], headers: dict[str, str]) -> Reply:
        with self.lock:
            k = len(self.received)
            self.received.append(request)
            self.headers.append(headers)
        return self.script(k, request)


def _handler(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are written apart: no delayed-ACK stall per reply

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            request = json.loads(self.rfile.read(length) or b"{}")
            request["_path"] = self.path
            reply = fake.reply(request, {k.lower(): v for k, v in self.headers.items()})
            if reply.delay_s:
                time.sleep(reply.delay_s)
            body = reply.body
            if body is None:
                body = json.dumps(completion(answer_for(request), chat="messages" in request)).encode()
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up on a hang
                pass

    return Handler


class Server(ThreadingHTTPServer):
    request_queue_size = 1024  # a burst of new connections is queued, not reset
    daemon_threads = True


@contextmanager
def serving(fake: FakeOpenAI) -> Iterator[str]:
    """The server on 127.0.0.1 and a free port for the block; yields its base URL (…/v1)."""
    server = Server(("127.0.0.1", 0), _handler(fake))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
