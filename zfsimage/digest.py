"""Digests, DiffIDs and ChainIDs."""

from __future__ import annotations

import hashlib
from typing import Any

from zfsimage.reference import check_digest


def hasher_for(digest: str) -> Any:
    """A fresh hashlib object of the digest's algorithm (sha256 or sha512)."""
    algo = check_digest(digest).split(":", 1)[0]
    return hashlib.new(algo)


def digest_of(data: bytes, algo: str = "sha256") -> str:
    return f"{algo}:{hashlib.new(algo, data).hexdigest()}"


def chain_ids(diff_ids: list[str] | tuple[str, ...]) -> list[str]:
    """ChainID(L0)=DiffID(L0); ChainID(L0..n)=sha256(ChainID(L0..n-1) + " " + DiffID(n))."""
    out: list[str] = []
    for d in diff_ids:
        if not out:
            out.append(d)
        else:
            out.append("sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest())
    return out


def hex_of(digest: str) -> str:
    return check_digest(digest).split(":", 1)[1]
