"""Bind sources as the backends hold them: an fd opened one path component at a time without
following symlinks, so a source swapped after the caller resolved and checked it is refused
instead of followed (Linux pins mount the fd itself; FreeBSD compares the mount with it)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from jails.errors import SpecError

# O_PATH where the platform has it (Linux; FreeBSD 14+): no read permission or open side effects.
_HOLD = getattr(os, "O_PATH", os.O_RDONLY | os.O_NONBLOCK)


def open_source(path: str, *, read: bool = False) -> int:
    """An fd of a bind source opened one component at a time without following symlinks; a
    symlink anywhere is refused (sources are given resolved, so one now means it changed).
    ``read``: the last component is opened for reading (a file to copy)."""
    parts = Path(path).parts
    if not parts or parts[0] != "/":
        raise SpecError("mounts.source", f"{path} must be an absolute path")
    fd = os.open("/", _HOLD | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, part in enumerate(parts[1:], start=1):
            flags = os.O_RDONLY if read and i == len(parts) - 1 else _HOLD
            try:
                nfd = os.open(part, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except FileNotFoundError:
                raise SpecError("mounts.source", f"{path} does not exist on the host") from None
            except OSError as exc:  # ELOOP (Linux) / EMLINK (FreeBSD): a symlink, O_NOFOLLOW
                raise _swapped(Path(*parts[: i + 1])) from exc
            os.close(fd)
            fd = nfd
            if stat.S_ISLNK(os.fstat(fd).st_mode):
                raise _swapped(Path(*parts[: i + 1]))
        return fd
    except BaseException:
        os.close(fd)
        raise


def _swapped(path: Path) -> SpecError:
    return SpecError(
        "mounts.source",
        f"{path} is a symbolic link: give bind sources resolved (realpath), and do not change "
        "them while the task starts",
    )
