"""Resolve a task's user and group against the *task's* /etc/passwd and /etc/group.

The files are opened component by component with O_NOFOLLOW below the rootfs, so a symlinked
/etc/passwd in an image cannot make us read a host file.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from jails.errors import SpecError


@dataclass(frozen=True)
class ResolvedUser:
    uid: int
    gid: int
    additional_gids: tuple[int, ...]
    name: str | None
    home: str


def _read_in_root(rootfs: Path, rel: str) -> str:
    fd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        parts = rel.strip("/").split("/")
        for part in parts[:-1]:
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            nfd = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = nfd
        ffd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        with os.fdopen(ffd, "r", encoding="utf-8", errors="replace") as f:
            return f.read(4 * 1024 * 1024)
    except OSError:
        return ""
    finally:
        os.close(fd)


def _table(text: str) -> list[list[str]]:
    return [ln.split(":") for ln in text.splitlines() if ln and not ln.startswith("#")]


def resolve_user(rootfs: Path, user: str, group: str | None) -> ResolvedUser:
    passwd = [r for r in _table(_read_in_root(rootfs, "etc/passwd")) if len(r) >= 7]
    groups = [r for r in _table(_read_in_root(rootfs, "etc/group")) if len(r) >= 3]
    entry = next((r for r in passwd if r[0] == user), None)
    if entry is None and user.isdigit():
        entry = next((r for r in passwd if r[2] == user), None)
    if entry is not None:
        name: str | None = entry[0]
        uid, gid, home = int(entry[2]), int(entry[3]), entry[5] or "/"
    elif user.isdigit():
        name, uid, gid, home = None, int(user), 0, "/"  # as docker: unknown uid runs with gid 0
    else:
        raise SpecError("user", f"{user!r} is not in the image's /etc/passwd; use a numeric uid")
    if group is not None:
        g = next((r for r in groups if r[0] == group), None)
        if g is not None:
            gid = int(g[2])
        elif group.isdigit():
            gid = int(group)
        else:
            raise SpecError(
                "group", f"{group!r} is not in the image's /etc/group; use a numeric gid"
            )
    extra: list[int] = []
    if name is not None:
        for g in groups:
            if len(g) >= 4 and name in g[3].split(",") and g[2].isdigit():
                gnum = int(g[2])
                if gnum != gid and gnum not in extra:
                    extra.append(gnum)
    return ResolvedUser(uid, gid, tuple(extra), name, home)


class UserCache:
    """Users resolved per root content: roots with one ``root_id`` (a task's image layer chain)
    have the same /etc/passwd and /etc/group, so a start of an image run before needs no look
    into its root and can write its config while the root is still being cloned. An empty id is
    never cached; neither is a user the root does not have (the error is raised each time)."""

    def __init__(self, size: int = 512) -> None:
        self._size = size
        self._mu = threading.Lock()
        self._known: OrderedDict[tuple[str, str, str | None], ResolvedUser] = OrderedDict()

    def get(self, root_id: str, user: str, group: str | None) -> ResolvedUser | None:
        if not root_id:
            return None
        with self._mu:
            found = self._known.get((root_id, user, group))
            if found is not None:
                self._known.move_to_end((root_id, user, group))
            return found

    def resolve(self, rootfs: Path, root_id: str, user: str, group: str | None
                ) -> ResolvedUser:
        found = self.get(root_id, user, group)
        if found is not None:
            return found
        found = resolve_user(rootfs, user, group)
        if root_id:
            with self._mu:
                self._known[(root_id, user, group)] = found
                while len(self._known) > self._size:
                    self._known.popitem(last=False)
        return found
