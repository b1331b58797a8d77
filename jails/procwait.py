"""Waiting for a process that is not our child to exit: pidfd on Linux, kqueue on FreeBSD."""

from __future__ import annotations

import os
import select
import sys
import time
from collections.abc import Sequence

from jails.taskdir import identity_alive


def wait_pid_exit(pid: int, start: int, timeout_s: float) -> None:
    """Block until pid exits or timeout_s passes."""
    wait_pids_exit([(pid, start)], timeout_s)


def wait_pids_exit(procs: Sequence[tuple[int, int]], timeout_s: float) -> None:
    """Block until one of the (pid, start time) processes exits or timeout_s passes (pidfd on
    Linux, kqueue on FreeBSD)."""
    if sys.platform.startswith("linux") and hasattr(os, "pidfd_open"):
        fds: list[int] = []
        try:
            # poll, not select: a plugin serving ~100 tasks holds over 1024 descriptors, and
            # select() refuses any numbered FD_SETSIZE or above (the waiter then gave up on a
            # running task).
            poller = select.poll()
            for pid, start in procs:
                try:
                    fds.append(os.pidfd_open(pid))
                except ProcessLookupError:
                    return
                if not identity_alive(pid, start):  # recycled pid: the real one is gone
                    return
                poller.register(fds[-1], select.POLLIN)
            poller.poll(max(timeout_s, 0.0) * 1000.0)
        finally:
            for fd in fds:
                os.close(fd)
        return
    if sys.platform.startswith("freebsd"):  # EVFILT_PROC / NOTE_EXIT on non-child pids
        kq = select.kqueue()
        try:
            for pid, _start in procs:
                ev = select.kevent(
                    pid,
                    filter=select.KQ_FILTER_PROC,
                    flags=select.KQ_EV_ADD,
                    fflags=select.KQ_NOTE_EXIT,
                )
                try:
                    kq.control([ev], 0, 0)
                except OSError:  # ESRCH: already gone
                    return
            kq.control(None, 1, timeout_s)  # callers verified the identities
        finally:
            kq.close()
        return
    time.sleep(min(timeout_s, 0.05))
