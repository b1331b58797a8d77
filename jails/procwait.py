"""Waiting for a process that is not our child to exit: pidfd on Linux, kqueue on FreeBSD."""

from __future__ import annotations

import os
import select
import sys
import time
from collections.abc import Sequence
from typing import Any

from jails.taskdir import identity_alive, pid_alive


class ProcWatch:
    """Handles on processes that stay valid until they are closed: pidfds on Linux, a kqueue on
    FreeBSD. A waiter that blocks for hours opens them once, so each of its periodic looks costs
    one poll, and a recycled pid can never be taken for the process (the handle pins it).

    Linux checks each pid's start time as its pidfd is opened; FreeBSD, where that check spawns a
    process, leaves it to the caller, who verified the identities just before."""

    def __init__(self) -> None:
        self._fds: list[int] = []
        self._poller: select.poll | None = None
        self._kq: Any = None  # select.kqueue on FreeBSD (absent from Linux's select module)

    @classmethod
    def open(cls, procs: Sequence[tuple[int, int]]) -> ProcWatch | None:
        """A watch on the (pid, start time) processes; None when one of them is gone already."""
        watch = cls()
        try:
            if not watch._add(procs):
                watch.close()
                return None
        except BaseException:
            watch.close()
            raise
        return watch

    def _add(self, procs: Sequence[tuple[int, int]]) -> bool:
        if sys.platform.startswith("linux") and hasattr(os, "pidfd_open"):
            # poll, not select: a plugin serving ~100 tasks holds over 1024 descriptors, and
            # select() refuses any numbered FD_SETSIZE or above.
            self._poller = select.poll()
            for pid, start in procs:
                try:
                    self._fds.append(os.pidfd_open(pid))
                except ProcessLookupError:
                    return False
                if not identity_alive(pid, start):  # recycled pid: the real one is gone
                    return False
                self._poller.register(self._fds[-1], select.POLLIN)
            return True
        if sys.platform.startswith("freebsd"):  # EVFILT_PROC / NOTE_EXIT on non-child pids
            self._kq = select.kqueue()
            for pid, _start in procs:
                ev = select.kevent(
                    pid, filter=select.KQ_FILTER_PROC,
                    flags=select.KQ_EV_ADD, fflags=select.KQ_NOTE_EXIT)
                try:
                    self._kq.control([ev], 0, 0)
                except OSError:  # ESRCH: already gone
                    return False
            return True
        return all(pid_alive(pid, start, full=False) for pid, start in procs)

    def wait(self, timeout_s: float) -> bool:
        """Block until one of the processes exits (True) or ``timeout_s`` passes (False)."""
        timeout_s = max(timeout_s, 0.0)
        if self._poller is not None:
            return bool(self._poller.poll(timeout_s * 1000.0))
        if self._kq is not None:
            return bool(self._kq.control(None, 1, timeout_s))
        time.sleep(min(timeout_s, 0.05))  # no process handles on this platform: poll by pid
        return False

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()
        if self._kq is not None:
            self._kq.close()
            self._kq = None

    def __enter__(self) -> ProcWatch:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def wait_pid_exit(pid: int, start: int, timeout_s: float) -> None:
    """Block until pid exits or timeout_s passes."""
    wait_pids_exit([(pid, start)], timeout_s)


def wait_pids_exit(procs: Sequence[tuple[int, int]], timeout_s: float) -> None:
    """Block until one of the (pid, start time) processes exits or timeout_s passes (pidfd on
    Linux, kqueue on FreeBSD)."""
    watch = ProcWatch.open(procs)
    if watch is not None:
        with watch:
            watch.wait(timeout_s)
