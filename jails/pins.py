"""Bind-mount sources pinned by file descriptor (Linux), so a path swapped after it was checked
cannot redirect a mount.

A bind source reaches runc as a path, which runc resolves again when it mounts. A task that can
write in a directory above another task's source (a shared host volume) could swap a component
for a symlink in between. So each source is opened component by component without following
symlinks, the object held is bind-mounted through ``/proc/self/fd/N`` (which names the open object,
not a path) onto a pin point under ``<state_root>/pins/<task>/`` that only root can reach, and
runc is given the pin point. Pins are private mounts (nothing propagates from or to them) and are
unmounted as soon as the task's own mounts exist; the task keeps its copies.

Pin points are only ever rmdir'ed or unlinked after a detach, never removed recursively: a pin
still mounted holds the user's data.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from jails.errors import JailError
from jails.sourcefd import open_source

MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

_libc: ctypes.CDLL | None = None


def _c() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _mount(source: str | None, target: str, flags: int) -> None:
    src = source.encode() if source is not None else None
    if _c().mount(src, target.encode(), None, ctypes.c_ulong(flags), None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), target)


def _detach(target: str) -> None:
    if _c().umount2(target.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):  # not a mount point (any more): done
            raise OSError(err, os.strerror(err), target)


class Pins:
    """Pin points of every task under one state root."""

    def __init__(self, state_root: Path) -> None:
        self.root = Path(state_root) / "pins"

    def points(self, name: str, count: int) -> list[Path]:
        """Where ``pin`` puts the task's ``count`` sources, in order (known before pinning, so
        the container's config can name them without pinning anything)."""
        return [self.root / name / str(i) for i in range(count)]

    def pin(self, name: str, sources: Sequence[Path]) -> list[Path]:
        """Pin each source; return the pin points in order. All or nothing."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        task = self.root / name
        self.release(name)  # a crashed start of this very name
        task.mkdir(mode=0o700)
        out: list[Path] = []
        try:
            for i, source in enumerate(sources):
                fd = open_source(str(source))
                try:
                    at = task / str(i)  # as points() says
                    if stat.S_ISDIR(os.fstat(fd).st_mode):
                        at.mkdir(mode=0o700)
                    else:
                        at.touch(mode=0o600)
                    _mount(f"/proc/self/fd/{fd}", str(at), MS_BIND | MS_REC)
                    out.append(at)
                    _mount(None, str(at), MS_PRIVATE | MS_REC)
                except OSError as exc:
                    raise JailError(f"pinning bind source {source} failed: {exc}") from exc
                finally:
                    os.close(fd)
        except BaseException:
            with contextlib.suppress(JailError):
                self.release(name)
            raise
        return out

    def release(self, name: str) -> None:
        """Detach and remove the task's pin points; success when there are none."""
        task = self.root / name
        try:
            entries = list(task.iterdir())
        except FileNotFoundError:
            return
        for at in entries:
            try:
                _detach(str(at))
            except OSError as exc:
                raise JailError(f"unmounting the pinned bind source {at} failed: {exc}") from exc
            # after the detach it is an empty dir or file again; anything else stays put
            with contextlib.suppress(OSError):
                if at.is_dir():
                    at.rmdir()
                else:
                    at.unlink()
        with contextlib.suppress(OSError):
            task.rmdir()

    def names(self) -> list[str]:
        try:
            return sorted(p.name for p in self.root.iterdir())
        except FileNotFoundError:
            return []
