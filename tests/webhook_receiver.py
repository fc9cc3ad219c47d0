"""A real webhook receiver for tests: an HTTP server on 127.0.0.1 that keeps what the node POSTs and
verifies it with the package's own helper (enx_media.webhook.verify)."""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from enx_media.webhook import verify


class Receiver:
    """An HTTP server on 127.0.0.1 that keeps every request and answers 500 to the first `fail` of them,
    after `delay` seconds each, with a body of `answer_bytes` (a receiver that talks too much)."""

    def __init__(self, fail=0, delay=0.0, answer_bytes=0):
        self.requests: list[tuple[float, dict, bytes, int]] = []     # (time, headers, body, status sent)
        self.fail, self.delay, self.answer_bytes = fail, delay, answer_bytes
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                time.sleep(outer.delay)
                status = 500 if len(outer.requests) < outer.fail else 200
                outer.requests.append((time.monotonic(), dict(self.headers), body, status))
                self.send_response(status)
                self.send_header("content-length", str(outer.answer_bytes))
                self.end_headers()
                try:
                    for _ in range(outer.answer_bytes // 65536):
                        self.wfile.write(b"x" * 65536)
                except OSError:
                    pass                    # the node hung up without reading it: as it should

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def acknowledged(self, secret, since=0):
        """The events it acknowledged (from its since-th request on), verified with the secret, in arrival
        order."""
        return [verify(body, h, secret) for _, h, body, status in self.requests[since:] if status == 200]

    def wait(self, n, secret, timeout=20.0, since=0):
        end = time.monotonic() + timeout
        while len(self.acknowledged(secret, since)) < n:
            assert time.monotonic() < end, f"{len(self.acknowledged(secret, since))} of {n} events acknowledged"
            time.sleep(0.05)
        return self.acknowledged(secret, since)

    def close(self):
        self.server.shutdown()
