"""An HTTP proxy in front of a test registry that injects faults on demand."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

from tests.fixtures.registry import free_port


class FaultProxy:
    def __init__(self, upstream: str, host: str = "127.0.0.1",
                 upstream_auth: tuple[str, str] | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.upstream_auth = upstream_auth   # a CDN-like proxy that authorises by itself
        self.port = free_port()
        self.host = f"{host}:{self.port}"
        self.lock = threading.Lock()
        self.fail_5xx = 0            # answer this many requests with 500 first
        self.cut_blobs = 0           # cut this many blob responses half-way
        self.cut_match = ""          # ... only blobs whose path contains this
        self.corrupt_blob: str | None = None   # flip a byte in this blob
        self.redirect_blobs_to: str | None = None   # base URL to 307 blob GETs to
        self.seen: list[dict[str, str]] = []
        proxy = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:
                proxy.handle(self, "GET")

            def do_HEAD(self) -> None:
                proxy.handle(self, "HEAD")

        self.srv = ThreadingHTTPServer(("127.0.0.1", self.port), H)
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def _take(self, attr: str) -> bool:
        with self.lock:
            n = getattr(self, attr)
            if n > 0:
                setattr(self, attr, n - 1)
                return True
            return False

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        self.seen.append({"path": h.path, "authorization": h.headers.get("Authorization", ""),
                          "range": h.headers.get("Range", "")})
        if self._take("fail_5xx"):
            h.send_response(500)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        is_blob = "/blobs/sha256:" in h.path
        if is_blob and self.redirect_blobs_to and method == "GET":
            h.send_response(307)
            h.send_header("Location", self.redirect_blobs_to + h.path)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        fwd = {k: v for k, v in h.headers.items()
               if k.lower() in ("accept", "authorization", "range")}
        r = requests.request(method, self.upstream + h.path, headers=fwd, timeout=30,
                             allow_redirects=False, auth=self.upstream_auth)
        body = r.content
        if is_blob and self.corrupt_blob and self.corrupt_blob in h.path and body:
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        cut = (is_blob and method == "GET" and len(body) > 64 and self.cut_match in h.path
               and self._take("cut_blobs"))
        h.send_response(r.status_code)
        for k, v in r.headers.items():
            if k.lower() in ("content-type", "docker-content-digest", "www-authenticate",
                             "content-range", "location"):
                h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        if cut:
            h.send_header("Connection", "close")
        h.end_headers()
        if method == "GET":
            h.wfile.write(body[: len(body) // 2] if cut else body)
        if cut:
            h.wfile.flush()
            h.close_connection = True
            h.connection.close()

    def stop(self) -> None:
        self.srv.shutdown()
        self.srv.server_close()
