"""Deterministic, length- and charset-safe names for jails and containers.

A jail name may not contain ``.`` (the jail hierarchy separator, jail(8)); runc container ids must
match ``[A-Za-z0-9_+.-]+``. The intersection we use is ``[A-Za-z0-9_-]``, at most 63 characters so
that the name also fits in hostnames, cgroup paths and unix socket paths comfortably.
"""

from __future__ import annotations

import hashlib
import re

MAX_NAME_LEN = 63
_SAFE = re.compile(r"[^A-Za-z0-9_-]")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


def jail_name(alloc_id: str, task_name: str) -> str:
    """``xc-<first 8 of alloc id>-<task>``; a short hash is appended when the task name had to be
    altered (unsafe characters or length), so two different task names never collide."""
    if not alloc_id:
        raise ValueError("alloc_id must not be empty")
    if not task_name:
        raise ValueError("task_name must not be empty")
    alloc8 = _SAFE.sub("", alloc_id.replace("-", ""))[:8].lower()
    if not alloc8:
        raise ValueError(f"alloc_id {alloc_id!r} has no usable characters")
    task = _SAFE.sub("_", task_name)
    prefix = f"xc-{alloc8}-"
    if task == task_name and len(prefix) + len(task) <= MAX_NAME_LEN:
        return prefix + task
    digest = hashlib.sha256(f"{alloc_id}\0{task_name}".encode()).hexdigest()[:8]
    room = MAX_NAME_LEN - len(prefix) - len(digest) - 1
    return f"{prefix}{task[:room]}-{digest}"


def is_valid_name(name: str) -> bool:
    return bool(NAME_RE.match(name))
