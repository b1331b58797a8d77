"""A registry that serves whatever a test puts in it, on loopback: manifests and blobs by
reference, with no validation, plus faults (short bodies, a lying manifest endpoint), for the
"no traceback, one line, nothing left" contract of the pull path."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.fixtures.registry import free_port

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class HostileRegistry:
    def __init__(self) -> None:
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.manifests: dict[str, tuple[bytes, str]] = {}   # tag or digest -> (body, type)
        self.blobs: dict[str, bytes] = {}
        self.short_blobs = False       # send half the body, then close
        self.lie_manifest: bytes | None = None    # serve this for every manifest digest
        self.requests: list[str] = []
        reg = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:
                reg.handle(self, True)

            def do_HEAD(self) -> None:
                reg.handle(self, False)

        self.srv = ThreadingHTTPServer(("127.0.0.1", self.port), H)
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.srv.shutdown()
        self.srv.server_close()

    def blob(self, data: bytes) -> dict[str, Any]:
        d = digest(data)
        self.blobs[d] = data
        return {"mediaType": "application/octet-stream", "digest": d, "size": len(data)}

    def manifest(self, body: bytes | dict[str, Any], tag: str | None = None,
                 media_type: str = MT_MANIFEST) -> dict[str, Any]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        d = digest(raw)
        self.manifests[d] = (raw, media_type)
        if tag:
            self.manifests[tag] = (raw, media_type)
        return {"mediaType": media_type, "digest": d, "size": len(raw),
                "platform": {"os": "linux", "architecture": "amd64"}}

    def handle(self, h: BaseHTTPRequestHandler, body_wanted: bool) -> None:
        self.requests.append(h.path)
        parts = h.path.split("?")[0].split("/")
        if h.path.rstrip("/") == "/v2":
            return self._send(h, 200, b"{}", "application/json", body_wanted)
        if len(parts) >= 5 and parts[-2] == "manifests":
            ref = parts[-1]
            found = self.manifests.get(ref)
            if found is None:
                return self._send(h, 404, b'{"errors":[]}', "application/json", body_wanted)
            body, mt = found
            if self.lie_manifest is not None and ref.startswith("sha256:"):
                body = self.lie_manifest
            return self._send(h, 200, body, mt, body_wanted, digest(found[0]))
        if len(parts) >= 5 and parts[-2] == "blobs":
            data = self.blobs.get(parts[-1])
            if data is None:
                return self._send(h, 404, b"", "application/json", body_wanted)
            return self._send(h, 200, data, "application/octet-stream", body_wanted,
                              short=self.short_blobs)
        return self._send(h, 404, b"", "text/plain", body_wanted)

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, code: int, body: bytes, ctype: str, with_body: bool,
              dcd: str | None = None, short: bool = False) -> None:
        h.send_response(code)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        if dcd:
            h.send_header("Docker-Content-Digest", dcd)
        if short:
            h.send_header("Connection", "close")
        h.end_headers()
        if with_body:
            h.wfile.write(body[:len(body) // 2] if short else body)
        if short:
            h.wfile.flush()
            h.close_connection = True
