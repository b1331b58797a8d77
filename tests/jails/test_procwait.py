"""ProcWatch: handles on processes that are not our children, held across waits (real
processes: pidfds here, kqueue on FreeBSD)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from jails.procwait import ProcWatch, wait_pids_exit
from jails.taskdir import proc_start_time


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = [subprocess.Popen(["sleep", "60"]) for _ in range(2)]
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()
            p.wait()


def ident(p: subprocess.Popen[bytes]) -> tuple[int, int]:
    start = proc_start_time(p.pid) if sys.platform.startswith("linux") else 0
    return p.pid, start or 0


def test_a_watch_times_out_while_all_run_and_wakes_when_one_exits(
        sleepers: list[subprocess.Popen[bytes]]) -> None:
    watch = ProcWatch.open([ident(p) for p in sleepers])
    assert watch is not None
    with watch:
        assert watch.wait(0.05) is False
        assert watch.wait(0.05) is False  # the same handles, looked at again
        os.kill(sleepers[1].pid, signal.SIGKILL)
        assert watch.wait(30) is True  # woken by the exit, long before the timeout


def test_no_watch_on_a_process_that_is_gone(sleepers: list[subprocess.Popen[bytes]]) -> None:
    gone = sleepers[0]
    who = ident(gone)
    gone.kill()
    gone.wait()
    assert ProcWatch.open([ident(sleepers[1]), who]) is None
    wait_pids_exit([who], 30)  # returns at once


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="start times come from /proc")
def test_no_watch_on_a_recycled_pid(sleepers: list[subprocess.Popen[bytes]]) -> None:
    pid, start = ident(sleepers[0])
    assert ProcWatch.open([(pid, start + 1)]) is None  # another process now holds the pid


def test_a_closed_watch_holds_no_descriptors(sleepers: list[subprocess.Popen[bytes]]) -> None:
    before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    watch = ProcWatch.open([ident(p) for p in sleepers])
    assert watch is not None
    watch.close()
    watch.close()  # idempotent
    if before is not None:
        assert len(os.listdir("/proc/self/fd")) == before
