"""Locks of one image store: per-process thread locks plus per-chain and GC ``flock`` files, so
several threads and several processes (plugin, CLI) can share one store."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
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
