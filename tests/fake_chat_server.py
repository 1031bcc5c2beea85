"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1 for tests (no network, no key)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "fake-model-1"


class FakeChatServer:
    """A minimal OpenAI-compatible server. ``script`` is a queue of responses, one per incoming request
    (either endpoint); when it is empty every request gets a good answer. Each scripted response is a dict with
    optional ``status``, ``headers``, ``body`` (JSON-able), ``delay`` (seconds to sleep first), ``content``."""

    def __init__(self) -> None:
        self.script: list[dict] = []
        self.requests: list[dict] = []
        self.default_delay = 0.0
        self.models = [MODEL, "other-model"]
        self.responder: Callable[[dict], str] | None = None  # payload -> answer text (default: echo)
        self._lock = threading.Lock()
        self._in_flight = 0
        self.peak_in_flight = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:
                server._handle(self, None)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                server._handle(self, json.loads(self.rfile.read(length) or b"{}"))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def _handle(self, h: BaseHTTPRequestHandler, payload: dict | None) -> None:
        with self._lock:
            self.requests.append({"method": h.command, "path": h.path, "headers": {k.lower(): v for k, v in h.headers.items()}, "json": payload})
            step = self.script.pop(0) if self.script else {}
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
        try:
            time.sleep(step.get("delay", self.default_delay))
            status = step.get("status", 200)
            body = step.get("body")
            if body is None:
                body = self._good_body(h.path, payload, step) if status == 200 else {"error": {"message": "boom"}}
            data = json.dumps(body).encode()
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            for name, value in step.get("headers", {}).items():
                h.send_header(name, value)
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass
        finally:
            with self._lock:
                self._in_flight -= 1

    def _good_body(self, path: str, payload: dict | None, step: dict) -> dict:
        if path.endswith("/models"):
            if step.get("no_models"):
                return {"error": {"message": "not found"}}
            return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "t"}
                                               for m in self.models]}
        last = payload["messages"][-1]["content"]
        default = self.responder(payload) if self.responder else f"echo: {last}"
        content = step.get("content", default)
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": payload["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": step.get("finish_reason", "stop")}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
        }

    def chat_requests(self) -> list[dict]:
        return [r for r in self.requests if r["path"].endswith("/chat/completions")]

    def __enter__(self) -> "FakeChatServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
