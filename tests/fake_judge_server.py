"""A local judge server speaking the OpenAI chat-completions and Anthropic messages wire formats.

It prefers the response with the higher number in it ("score 7" beats "score 3"), so a consistent judge gives
the same winner in both orders. The first request for each distinct prompt gets a fault chosen by the prompt's
hash: HTTP 429, HTTP 500, a reply slower than the client's timeout, a body that is not JSON, or an answer that is
not a verdict. Later requests for that prompt succeed. Every request is recorded with its outcome.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = ["429", "500", "timeout", "bad_json", "bad_verdict", None]
NULL_CONTENT = "<null>"


def _number(text: str) -> int:
    found = re.findall(r"\d+", text)
    return int(found[0]) if found else 0


class FakeJudge:
    def __init__(self, expected_key: str, slow_s: float = 1.0, faults: bool = True, always: str | None = None):
        self.expected_key, self.slow_s, self.faults, self.always = expected_key, slow_s, faults, always
        self.lock = threading.Lock()
        self.seen: dict[str, int] = {}
        self.log: list[dict] = []  # one entry per request: prompt hash, outcome
        handler = self._handler()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def answered(self) -> list[str]:
        """Prompt hashes that got a valid verdict."""
        return [e["prompt"] for e in self.log if e["outcome"] == "verdict"]

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _send(self, code: int, body: bytes, headers: dict | None = None):
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_POST(self):
                anthropic = self.path == "/v1/messages"
                key = (
                    self.headers.get("x-api-key")
                    if anthropic
                    else (self.headers.get("authorization") or "").removeprefix("Bearer ")
                )
                request = json.loads(self.rfile.read(int(self.headers["content-length"])))
                prompt = request["messages"][0]["content"]
                digest = hashlib.sha256(prompt.encode()).hexdigest()
                with fake.lock:
                    attempt = fake.seen.get(digest, 0)
                    fake.seen[digest] = attempt + 1
                if key != fake.expected_key:
                    fake.log.append({"prompt": digest, "outcome": "401"})
                    return self._send(401, b'{"error": "bad key"}')
                fault = FAULTS[int(digest, 16) % len(FAULTS)] if fake.faults and attempt == 0 else None
                fake.log.append({"prompt": digest, "outcome": fault or "verdict"})
                if fault == "429":
                    return self._send(429, b'{"error": "rate limited"}', {"retry-after": "0"})
                if fault == "500":
                    return self._send(500, b'{"error": "boom"}')
                if fault == "timeout":
                    time.sleep(fake.slow_s)
                if fault == "bad_json":
                    return self._send(200, b'{"choices": [')
                a = prompt.split("[Response A]")[1].split("[Response B]")[0]
                b = prompt.split("[Response B]")[1].split("Which response")[0]
                text = fake.always or (
                    "A" if _number(a) > _number(b) else "B" if _number(b) > _number(a) else "Neutral"
                )
                if fault == "bad_verdict":
                    text = "Both responses have merits, hard to say."
                if text == NULL_CONTENT:  # a refusal or a tool call: OpenAI sends "content": null
                    text = None
                if anthropic:
                    body = {
                        "id": "msg",
                        "type": "message",
                        "role": "assistant",
                        "content": [{"type": "text", "text": text}],
                        "stop_reason": "end_turn",
                    }
                else:
                    body = {
                        "id": "cmpl",
                        "object": "chat.completion",
                        "choices": [
                            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                        ],
                    }
                self._send(200, json.dumps(body).encode(), {"content-type": "application/json"})

        return Handler
