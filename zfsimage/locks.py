"""Locks of one image store: per-process thread locks plus per-chain and GC ``flock`` files, so
several threads and several processes (plugin, CLI) can share one store; and spool files, each
``flock``-held by its puller for as long as it exists, so recovery knows a leftover by its lock."""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path


class StoreLocks:
    def __init__(self, lock_dir: Path) -> None:
        self.dir = lock_dir
        self._locks: dict[str, threading.Lock] = {}
        self.guard = threading.Lock()   # also guards small caches of the store's parts

    def thread_lock(self, key: str) -> threading.Lock:
        with self.guard:
            lk = self._locks.get(key)
            if lk is None:
                lk = self._locks[key] = threading.Lock()
            return lk

    def _open(self, name: str) -> int:
        return os.open(self.dir / name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    @contextlib.contextmanager
    def chain(self, hexid: str) -> Iterator[None]:
        """Exclusive hold on one layer chain (building, destroying or recovering it)."""
        with self.thread_lock("chain:" + hexid):
            fd = self._open(f"{hexid}.lock")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    @contextlib.contextmanager
    def try_chain(self, hexid: str) -> Iterator[bool]:
        """Like ``chain`` without waiting: yields False when someone else holds it."""
        lk = self.thread_lock("chain:" + hexid)
        if not lk.acquire(blocking=False):
            yield False
            return
        try:
            fd = self._open(f"{hexid}.lock")
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    yield False
                    return
                yield True
            finally:
                os.close(fd)
        finally:
            lk.release()

    @contextlib.contextmanager
    def gc(self, exclusive: bool) -> Iterator[None]:
        """Pulls hold it shared from the first layer to the image record; gc exclusively, so
        gc never sees committed layers whose image record is not written yet."""
        fd = self._open("gc.lock")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)


@contextlib.contextmanager
def spool_file(spool_dir: Path) -> Iterator[Path]:
    """A new file in ``spool_dir`` for one blob, locked until it is removed on exit. Its lock,
    not its name, says a live pull owns it (``remove_leftover_spool``)."""
    while True:
        path = spool_dir / uuid.uuid4().hex
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        # Recovery unlinks only while it holds the lock: a file it took between our create and
        # our lock is gone by now, so take a new one.
        if os.fstat(fd).st_nlink > 0:
            break
        os.close(fd)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)   # before the lock goes: nobody sees it unlocked
        os.close(fd)


def remove_leftover_spool(spool_dir: Path) -> list[Path]:
    """Remove the spool files no pull holds (a crashed pull's); the removed paths."""
    removed = []
    for p in spool_dir.iterdir():
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue   # gone meanwhile, or not ours to open (a symlink)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue   # a live pull (this process's or another's) is writing it
            p.unlink(missing_ok=True)
            removed.append(p)
        finally:
            os.close(fd)
    return removed
