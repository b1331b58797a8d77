"""Image references: ``alpine`` -> ``docker.io/library/alpine:latest``, tags and digests."""

from __future__ import annotations

import re
from dataclasses import dataclass

from zfsimage.errors import BadReference, InvalidName

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_DIGEST_RE = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")
_HOST_RE = re.compile(r"^(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]+)?$")


def check_digest(digest: str, what: str = "digest") -> str:
    """Return the digest if it is ``sha256:<64 lowercase hex>`` (or sha512); raise otherwise.

    Digests become file and dataset names, so they are validated before any use (CVE-2024-3727).
    """
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        raise InvalidName(f"{what} {digest!r} is not a valid digest; expected sha256:<64 hex>")
    return digest


@dataclass(frozen=True)
class Reference:
    registry: str       # as written by the user, normalised: docker.io, ghcr.io, 127.0.0.1:5000
    repository: str     # library/alpine
    tag: str | None     # None when only a digest was given
    digest: str | None

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def target(self) -> str:
        """What to ask the registry for: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.registry, self.repository, self.tag, check_digest(digest))

    def __str__(self) -> str:
        s = self.name
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s


def parse_reference(ref: str) -> Reference:
    """Parse with Docker's normalisation; raise BadReference naming the bad part."""
    if not isinstance(ref, str) or not ref.strip():
        raise BadReference("image reference is empty; set `image` to e.g. alpine:3.20")
    s = ref.strip()
    if len(s) > 512 or any(c.isspace() for c in s):
        raise BadReference(f"image reference {ref!r} contains whitespace or is too long")
    digest = None
    if "@" in s:
        s, digest = s.split("@", 1)
        if not _DIGEST_RE.match(digest):
            raise BadReference(
                f"image reference {ref!r} has an invalid digest {digest!r}; "
                "expected @sha256:<64 lowercase hex>")
    registry = DOCKER_HUB
    rest = s
    first, sep, remainder = s.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, rest = first, remainder
        if not _HOST_RE.match(registry):
            raise BadReference(f"image reference {ref!r} has an invalid registry host "
                                  f"{registry!r}")
    if registry in ("index.docker.io", "registry-1.docker.io"):
        registry = DOCKER_HUB
    tag = None
    last_slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > last_slash:
        rest, tag = rest[:colon], rest[colon + 1:]
        if not _TAG_RE.match(tag):
            raise BadReference(f"image reference {ref!r} has an invalid tag {tag!r}")
    if registry == DOCKER_HUB and "/" not in rest:
        rest = f"library/{rest}"
    if not rest or not _NAME_RE.match(rest):
        hint = " (repository names must be lowercase)" if rest.lower() != rest else ""
        raise BadReference(f"image reference {ref!r} has an invalid repository name "
                              f"{rest!r}{hint}")
    if len(registry) + 1 + len(rest) > 255:
        raise BadReference(f"image reference {ref!r} is longer than 255 characters")
    if tag is None and digest is None:
        tag = "latest"
    return Reference(registry, rest, tag, digest)
