"""Distribution-API client on ``requests``: manifests, blobs, auth, retries.

Every byte is checked against the digest it is pinned to. ``Authorization`` is never sent to a
host other than the registry: requests drops it on cross-host redirects (``should_strip_auth``),
``trust_env`` is off so ``.netrc`` cannot re-attach credentials, and layer ``urls`` are not used.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import requests
import urllib3

from zfsimage.auth import RegistryAuth, parse_challenge
from zfsimage.digest import hasher_for
from zfsimage.errors import (
    AuthError,
    DigestMismatch,
    ImageError,
    ImageNotFound,
    RegistryUnavailable,
)
from zfsimage.manifest import ACCEPT, MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES, Descriptor
from zfsimage.reference import Reference

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class RegistryOptions:
    insecure_registries: tuple[str, ...] = ()   # hosts reached over plain HTTP (operator opt-in)
    retries: int = 4                            # attempts on connection errors / 5xx / 429
    backoff_s: float = 0.2                      # first sleep; doubles each attempt
    timeout_s: float = 30.0                     # connect and per-read timeout
    user_agent: str = "nomad-driver-xc/0.1"


@dataclass(frozen=True)
class FetchedManifest:
    data: bytes
    content_type: str
    digest: str


class RegistryClient:
    """One client per registry host; thread-safe (a session per thread, a shared token cache)."""

    def __init__(self, host: str, auth: RegistryAuth | None = None,
                 options: RegistryOptions | None = None):
        self.host = host
        self.auth = auth if auth is not None and not auth.empty else None
        self.opts = options or RegistryOptions()
        scheme = "http" if host in self.opts.insecure_registries else "https"
        self.base = f"{scheme}://{host}"
        self._local = threading.local()
        self._tokens: dict[str, str] = {}       # scope -> "Bearer x" / "Basic y"
        self._lock = threading.Lock()

    # -- plumbing -------------------------------------------------------------------------

    def _session(self) -> requests.Session:
        s: requests.Session | None = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            s.trust_env = False
            s.headers["User-Agent"] = self.opts.user_agent
            self._local.session = s
        return s

    def _basic(self) -> str | None:
        if self.auth is None or not self.auth.username:
            return None
        raw = f"{self.auth.username}:{self.auth.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _fetch_token(self, params: dict[str, str], scope: str) -> str:
        realm = params.get("realm")
        if not realm or not realm.startswith(("https://", "http://")):
            raise AuthError(f"registry {self.host} sent a Bearer challenge without a usable realm")
        query: dict[str, str] = {}
        if params.get("service"):
            query["service"] = params["service"]
        query["scope"] = params.get("scope") or scope
        headers: dict[str, str] = {}
        basic = self._basic()
        try:
            if self.auth is not None and self.auth.identity_token:
                form = {"grant_type": "refresh_token", "refresh_token": self.auth.identity_token,
                        "service": query.get("service", ""), "scope": query["scope"],
                        "client_id": "nomad-driver-xc"}
                r = self._session().post(realm, data=form, timeout=self.opts.timeout_s)
            else:
                if basic:
                    headers["Authorization"] = basic
                r = self._session().get(realm, params=query, headers=headers,
                                        timeout=self.opts.timeout_s)
        except requests.RequestException as exc:
            raise RegistryUnavailable(f"token service {realm} is unreachable: {exc}") from exc
        if r.status_code in (401, 403):
            raise AuthError(f"token service {realm} refused the credentials for {self.host} "
                            f"(HTTP {r.status_code}); check the registry username/password")
        if r.status_code >= 500:
            raise RegistryUnavailable(f"token service {realm} answered HTTP {r.status_code}")
        if r.status_code != 200:
            raise AuthError(f"token service {realm} answered HTTP {r.status_code}")
        try:
            body = r.json()
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not token:
            raise AuthError(f"token service {realm} returned no token")
        return f"Bearer {token}"

    def _authorize(self, resp: requests.Response, scope: str) -> str:
        """Answer a 401 challenge; return the Authorization value to retry with."""
        ch = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
        if ch is None:
            raise AuthError(f"registry {self.host} answered 401 without a challenge")
        if ch.scheme == "basic":
            basic = self._basic()
            if basic is None:
                raise AuthError(f"registry {self.host} requires a username and password; "
                                "configure auth for it")
            return basic
        if ch.scheme == "bearer":
            return self._fetch_token(ch.params, scope)
        raise AuthError(f"registry {self.host} uses unsupported auth scheme {ch.scheme!r}")

    def _request(self, method: str, path: str, repo: str, *, headers: dict[str, str] | None = None,
                 stream: bool = False, what: str) -> requests.Response:
        """Send with auth and retries; return a 2xx response or raise a typed error."""
        scope = f"repository:{repo}:pull"
        url = self.base + path
        attempt = 0
        reauthed = False
        while True:
            hdrs = dict(headers or {})
            with self._lock:
                tok = self._tokens.get(scope)
            if tok:
                hdrs["Authorization"] = tok
            try:
                r = self._session().request(method, url, headers=hdrs, stream=stream,
                                            timeout=self.opts.timeout_s, allow_redirects=True)
            except (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError) as exc:
                attempt += 1
                if attempt >= self.opts.retries:
                    raise RegistryUnavailable(f"registry {self.host} is unreachable while "
                                              f"fetching {what}: {type(exc).__name__}") from exc
                time.sleep(self.opts.backoff_s * 2 ** (attempt - 1))
                continue
            except requests.RequestException as exc:
                raise RegistryUnavailable(f"request to {self.host} for {what} failed: "
                                          f"{exc}") from exc
            if r.status_code == 401 and not reauthed:
                r.close()
                value = self._authorize(r, scope)
                with self._lock:
                    self._tokens[scope] = value
                reauthed = True
                continue
            if r.status_code in (401, 403):
                r.close()
                raise AuthError(f"registry {self.host} denied access to {what} "
                                f"(HTTP {r.status_code}); check the credentials for {repo}")
            if r.status_code == 404:
                r.close()
                raise ImageNotFound(f"{what} was not found on registry {self.host} (HTTP 404)")
            if r.status_code == 429 or r.status_code >= 500:
                r.close()
                attempt += 1
                if attempt >= self.opts.retries:
                    raise RegistryUnavailable(f"registry {self.host} answered HTTP "
                                              f"{r.status_code} for {what}; try again later")
                delay = self.opts.backoff_s * 2 ** (attempt - 1)
                ra = r.headers.get("Retry-After", "")
                if ra.isdigit():
                    delay = min(max(delay, float(ra)), 30.0)
                time.sleep(delay)
                continue
            if not 200 <= r.status_code < 300:
                r.close()
                raise ImageError(f"registry {self.host} answered HTTP {r.status_code} for {what}")
            return r

    @staticmethod
    def _read_capped(r: requests.Response, cap: int, what: str) -> bytes:
        buf = bytearray()
        for chunk in r.iter_content(64 * 1024):
            buf += chunk
            if len(buf) > cap:
                r.close()
                raise ImageError(f"{what} is larger than {cap} bytes; refusing it")
        return bytes(buf)

    # -- API ------------------------------------------------------------------------------

    def head_manifest(self, ref: Reference) -> str | None:
        """Digest the tag points to now (cheap; not counted as a pull), or None if not given."""
        r = self._request("HEAD", f"/v2/{ref.repository}/manifests/{ref.target}", ref.repository,
                          headers={"Accept": ACCEPT}, what=f"manifest {ref}")
        d = r.headers.get("Docker-Content-Digest")
        r.close()
        return d or None

    def get_manifest(self, ref: Reference, target: str | None = None) -> FetchedManifest:
        """GET a manifest or index; the digest is computed over the exact bytes received."""
        tgt = target or ref.target
        what = f"manifest {ref.name}:{tgt}" if not tgt.startswith("sha") else \
            f"manifest {ref.name}@{tgt}"
        try:
            r = self._request("GET", f"/v2/{ref.repository}/manifests/{tgt}", ref.repository,
                              headers={"Accept": ACCEPT}, stream=True, what=what)
            data = self._read_capped(r, MAX_MANIFEST_BYTES, what)
        except requests.RequestException as exc:
            raise RegistryUnavailable(f"reading {what} from {self.host} failed: {exc}") from exc
        algo = tgt.split(":", 1)[0] if ":" in tgt else "sha256"
        h = hasher_for(f"{algo}:" + "0" * (64 if algo == "sha256" else 128))
        h.update(data)
        digest = f"{algo}:{h.hexdigest()}"
        if ":" in tgt and digest != tgt:
            raise DigestMismatch(f"{what} has digest {digest}, not the requested {tgt}")
        header = r.headers.get("Docker-Content-Digest")
        if header and header.startswith("sha256:") and algo == "sha256" and header != digest:
            raise DigestMismatch(f"{what}: Docker-Content-Digest {header} does not match the "
                                 f"body's digest {digest}")
        return FetchedManifest(data, r.headers.get("Content-Type", ""), digest)

    def get_blob_bytes(self, ref: Reference, desc: Descriptor, what: str) -> bytes:
        """Fetch a small blob (config) fully into memory, verified."""
        cap = min(desc.size, MAX_CONFIG_BYTES)
        if desc.size > MAX_CONFIG_BYTES:
            raise ImageError(f"{what} {desc.digest} is {desc.size} bytes; refusing over "
                             f"{MAX_CONFIG_BYTES}")
        for attempt in range(self.opts.retries):
            r = self._request("GET", f"/v2/{ref.repository}/blobs/{desc.digest}", ref.repository,
                              stream=True, what=f"{what} {desc.digest}")
            try:
                data = self._read_capped(r, cap, f"{what} {desc.digest}")
            except requests.RequestException as exc:
                if attempt + 1 >= self.opts.retries:
                    raise RegistryUnavailable(f"download of {what} {desc.digest} from "
                                              f"{self.host} was cut: {exc}") from exc
                continue
            verify_bytes(data, desc, what)
            return data
        raise RegistryUnavailable(f"download of {what} {desc.digest} failed")

    def download_blob(self, ref: Reference, desc: Descriptor, dest: Path,
                      progress: Callable[[int], None] | None = None) -> None:
        """Stream a blob into ``dest`` verifying size and digest; resume with Range on cuts.

        On any failure ``dest`` is removed; on success it holds exactly the pinned bytes.
        """
        st = _Progress(hasher_for(desc.digest))
        attempt = 0
        try:
            with open(dest, "wb") as out:
                while True:
                    hdrs = {"Range": f"bytes={st.got}-"} if st.got else {}
                    r = self._request("GET", f"/v2/{ref.repository}/blobs/{desc.digest}",
                                      ref.repository, headers=hdrs, stream=True,
                                      what=f"layer {desc.digest}")
                    if st.got and r.status_code != 206:
                        # the server ignored Range: start over
                        out.seek(0)
                        out.truncate()
                        st = _Progress(hasher_for(desc.digest))
                    try:
                        _copy_stream(r, out, st, desc, progress)
                        break
                    except (requests.RequestException, urllib3.exceptions.HTTPError,
                            ConnectionError, TimeoutError) as exc:
                        attempt += 1
                        if attempt >= self.opts.retries:
                            raise RegistryUnavailable(
                                f"download of layer {desc.digest} from {self.host} was cut "
                                f"after {st.got} of {desc.size} bytes; try again later") from exc
                        time.sleep(self.opts.backoff_s * 2 ** (attempt - 1))
                    finally:
                        r.close()
            if st.got != desc.size:
                raise DigestMismatch(f"blob {desc.digest} is {st.got} bytes, the manifest says "
                                     f"{desc.size}")
            actual = f"{desc.digest.split(':')[0]}:{st.h.hexdigest()}"
            if actual != desc.digest:
                raise DigestMismatch(f"blob {desc.digest} downloaded from {self.host} has digest "
                                     f"{actual}; the registry served wrong bytes")
        except BaseException:
            dest.unlink(missing_ok=True)
            raise


class _Progress:
    """Bytes received so far and their running hash; survives a cut connection."""

    def __init__(self, h: Any) -> None:
        self.h = h
        self.got = 0


def _copy_stream(r: requests.Response, out: BinaryIO, st: _Progress, desc: Descriptor,
                 progress: Callable[[int], None] | None) -> None:
    raw = r.raw
    while True:
        chunk = raw.read(CHUNK, decode_content=False)
        if not chunk:
            break
        if st.got + len(chunk) > desc.size:
            raise DigestMismatch(f"blob {desc.digest} is larger than the {desc.size} bytes the "
                                 "manifest says; refusing it")
        st.h.update(chunk)
        out.write(chunk)
        st.got += len(chunk)
        if progress is not None:
            progress(len(chunk))
    if st.got < desc.size:
        # a clean EOF before the declared size is a cut connection
        raise ConnectionError(f"stream ended at {st.got} of {desc.size} bytes")


def verify_bytes(data: bytes, desc: Descriptor, what: str) -> None:
    if len(data) != desc.size:
        raise DigestMismatch(f"{what} {desc.digest} is {len(data)} bytes, expected {desc.size}")
    h = hasher_for(desc.digest)
    h.update(data)
    actual = f"{desc.digest.split(':')[0]}:{h.hexdigest()}"
    if actual != desc.digest:
        raise DigestMismatch(f"{what} {desc.digest} has digest {actual}; the registry served "
                             "wrong bytes")

