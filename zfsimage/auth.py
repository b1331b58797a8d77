"""Registry credentials: plugin config, Docker-style config.json, credential helpers;
and parsing of ``WWW-Authenticate`` challenges."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from zfsimage.errors import AuthError


@dataclass(frozen=True)
class RegistryAuth:
    """Credentials for one registry. ``identity_token`` is an OAuth2 refresh token."""

    username: str = ""
    password: str = ""
    identity_token: str = ""

    @property
    def empty(self) -> bool:
        return not (self.username or self.password or self.identity_token)

    def __repr__(self) -> str:  # never print secrets
        return f"RegistryAuth(username={self.username!r}, password=***)"


def _config_keys(host: str) -> list[str]:
    keys = [host, f"https://{host}", f"http://{host}", f"https://{host}/v1/",
            f"https://{host}/v2/"]
    if host in ("docker.io", "registry-1.docker.io", "index.docker.io"):
        keys += ["https://index.docker.io/v1/", "index.docker.io", "docker.io",
                 "registry-1.docker.io"]
    return keys


def credentials_from_helper(helper: str, host: str) -> RegistryAuth | None:
    """Credentials for ``host`` from ``docker-credential-<helper> get``; None when it has none."""
    binary = shutil.which(f"docker-credential-{helper}")
    if binary is None:
        raise AuthError(f"credential helper docker-credential-{helper} is not installed "
                        "(install it on this client or remove it from the config)")
    try:
        cp = subprocess.run([binary, "get"], input=host.encode(), capture_output=True,
                            timeout=30, check=False)
    except subprocess.TimeoutExpired as exc:
        raise AuthError(f"credential helper docker-credential-{helper} timed out") from exc
    if cp.returncode != 0:
        msg = cp.stdout.decode(errors="replace").strip() + cp.stderr.decode(errors="replace")
        if "credentials not found" in msg.lower():
            return None
        raise AuthError(f"credential helper docker-credential-{helper} failed for {host}: "
                        f"{msg.strip()}")
    try:
        obj = json.loads(cp.stdout)
        user, secret = str(obj.get("Username", "")), str(obj.get("Secret", ""))
    except (ValueError, AttributeError) as exc:
        raise AuthError(f"credential helper docker-credential-{helper} printed invalid "
                        "JSON") from exc
    if user == "<token>":
        return RegistryAuth(identity_token=secret)
    return RegistryAuth(user, secret)


def from_docker_config(path: Path, host: str) -> RegistryAuth | None:
    """Credentials for ``host`` from a Docker ``config.json`` (auths, credHelpers, credsStore)."""
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise AuthError(f"Docker config {path} cannot be read: {exc}") from exc
    if not isinstance(obj, dict):
        raise AuthError(f"Docker config {path} is not a JSON object")
    helpers = obj.get("credHelpers") or {}
    for key in _config_keys(host):
        if isinstance(helpers, dict) and key in helpers:
            return credentials_from_helper(str(helpers[key]), host)
    auths = obj.get("auths") or {}
    for key in _config_keys(host):
        entry = auths.get(key) if isinstance(auths, dict) else None
        if not isinstance(entry, dict):
            continue
        if entry.get("identitytoken"):
            return RegistryAuth(identity_token=str(entry["identitytoken"]))
        if entry.get("auth"):
            try:
                raw = base64.b64decode(str(entry["auth"])).decode()
                user, _, pw = raw.partition(":")
            except (ValueError, UnicodeDecodeError) as exc:
                raise AuthError(f"Docker config {path}: `auth` for {key} is not base64 "
                                "user:password") from exc
            return RegistryAuth(user, pw)
        if entry.get("username"):
            return RegistryAuth(str(entry["username"]), str(entry.get("password", "")))
    store = obj.get("credsStore")
    if isinstance(store, str) and store:
        return credentials_from_helper(store, host)
    return None


_PARAM_RE = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*,?')


@dataclass(frozen=True)
class Challenge:
    scheme: str               # "bearer" or "basic"
    params: dict[str, str]


def parse_challenge(header: str) -> Challenge | None:
    """Parse ``Bearer realm="…",service="…",scope="…"`` (RFC 7235 auth-params; values may
    contain commas inside quotes)."""
    header = header.strip()
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        m = _PARAM_RE.match(rest, pos)
        if not m or m.end() == pos:
            break
        v = m.group(2)
        if v.startswith('"'):
            v = re.sub(r"\\(.)", r"\1", v[1:-1])
        params[m.group(1).lower()] = v
        pos = m.end()
    return Challenge(scheme.lower(), params)
