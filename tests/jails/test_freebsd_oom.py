"""FreeBSD memory limits that kill and say so: the devd notification format (from the kernel's
devctl_notify and rctl_enforce), the Python and C matchers over one table, and the supervisor
recording ``oom_killed`` from a devd socket while the task runs (real supervisor, real socket).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jails.devd import (
    Notify,
    RctlRule,
    is_oom_kill,
    parse_notify,
    parse_rctl_match,
    rctl_matched_line,
    watch_arg,
)
from jails.model import ExitStatus
from jails.supervisor import ensure_binary, launch
from jails.taskdir import TaskDir
from tests.fixtures.fakedevd import FakeDevd

JAIL = "xc-3f2a9c1e-web"
# What rctl_enforce's devctl action makes devd forward for the rules of jails.rctl.memory_rules.
MATCHED = rctl_matched_line(f"jail:{JAIL}:memoryuse:devctl=16777216", 4242, 80, JAIL)

# (line, is an OOM kill of JAIL)
LINES: list[tuple[str, bool]] = [
    (MATCHED, True),
    (MATCHED.rstrip("\n"), True),  # devd's seqpacket packets carry the newline; tolerate none
    (MATCHED.replace(":devctl=", ":sigkill="), False),  # sigkill never notifies by itself
    (MATCHED.replace("memoryuse", "vmemoryuse"), False),
    (MATCHED.replace("memoryuse", "pcpu"), False),
    (rctl_matched_line("jail:xc-other:memoryuse:devctl=1", 1, 0, "xc-other"), False),
    (MATCHED.replace(f"jail={JAIL}", "jail=xc-other"), False),
    (MATCHED.replace(f"rule=jail:{JAIL}:", f"rule=jail:{JAIL}x:"), False),
    (MATCHED.replace("=16777216", "=16777216/process"), False),  # per-process: not the jail's
    (MATCHED.replace("=16777216", "=16M"), False),  # the kernel prints raw integers
    (MATCHED.replace("type=matched", "type=other"), False),
    (MATCHED.replace("!system=RCTL", "!system=IFNET"), False),
    (MATCHED.rstrip("\n") + f" jail={JAIL}\n", False),  # a key twice: not the kernel's line
    # A hostile jail name cannot smuggle a second rule into someone else's line.
    (rctl_matched_line(f"jail:evil rule=jail:{JAIL}:memoryuse:devctl=1:memoryuse:devctl=5",
                       7, 0, f"evil jail={JAIL}"), False),
    ("+pci0 at slot=1 function=0 on pcib0\n", False),
    ("!system=DEVFS subsystem=CDEV type=CREATE cdev=da0\n", False),
    ("", False),
]


def test_notify_line_parsed() -> None:
    assert parse_notify("!system=DEVFS subsystem=CDEV type=CREATE cdev=da0\n") == Notify(
        "DEVFS", "CDEV", "CREATE", (("cdev", "da0"),)
    )
    assert parse_notify("?at pnpinfo on pci0\n") is None
    m = parse_rctl_match(MATCHED)
    assert m is not None
    assert (m.pid, m.ruid, m.jail) == (4242, 80, JAIL)
    assert m.rule == RctlRule("jail", JAIL, "memoryuse", "devctl", 16777216, "jail")
    assert str(m.rule) == f"jail:{JAIL}:memoryuse:devctl=16777216"  # rctl(8)'s own spelling
    assert str(RctlRule.parse("user:80:maxproc:log=10/process")) == "user:80:maxproc:log=10/process"


@pytest.mark.parametrize(("line", "oom"), LINES)
def test_python_matcher(line: str, oom: bool) -> None:
    assert is_oom_kill(line, JAIL) is oom


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler")
    return ensure_binary(tmp_path_factory.mktemp("xctest-sup"))


def test_c_matcher_agrees(binary: Path) -> None:
    """The supervisor's C matcher (the one that decides in production) over the same table."""
    for line, oom in LINES:
        out = subprocess.run(
            [str(binary), "--rctl-oom-match", JAIL, line], capture_output=True, text=True,
            check=True,
        ).stdout
        assert out == f"{int(oom)}\n", line


@pytest.fixture
def devd() -> Iterator[FakeDevd]:
    # A short directory: a unix socket path has ~100 bytes.
    d = Path(tempfile.mkdtemp(prefix="xctest-devd-"))
    server = FakeDevd(d / "devd.seqpacket.pipe")
    yield server
    server.close()
    shutil.rmtree(d, ignore_errors=True)


def _task(tmp_path: Path) -> TaskDir:
    d = tmp_path / "task"
    d.mkdir()
    (d / "spec.json").write_text(json.dumps({"boot_id": ""}))
    return TaskDir(d)


def _exit(task: TaskDir, timeout_s: float = 10.0) -> ExitStatus:
    deadline = time.monotonic() + timeout_s
    while (st := task.exit_status()) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert st is not None, "the supervisor wrote no exit.json"
    return st


def _start(binary: Path, task: TaskDir, tmp_path: Path, devd: FakeDevd) -> int:
    pids = launch(binary, task, tmp_path / "o", tmp_path / "e", watch_arg(JAIL, str(devd.path)),
                  ["exec", "/bin/sleep", "30"])
    assert devd.wait_clients(1), "the supervisor never connected to devd"
    return pids.pid


def test_supervisor_reports_the_rctl_kill(binary: Path, tmp_path: Path, devd: FakeDevd) -> None:
    task = _task(tmp_path)
    pid = _start(binary, task, tmp_path, devd)
    devd.send(rctl_matched_line("jail:xc-other:memoryuse:devctl=1", 1, 0, "xc-other"))
    devd.send(MATCHED)  # the kernel queues it in the same rctl_enforce call as the signal
    os.kill(pid, signal.SIGKILL)
    st = _exit(task)
    assert (st.exit_code, st.signal, st.oom_killed) == (137, 9, True)


def test_notification_after_the_exit_still_counts(
    binary: Path, tmp_path: Path, devd: FakeDevd
) -> None:
    """devd forwards the line asynchronously: the supervisor may reap the task first."""
    task = _task(tmp_path)
    pid = _start(binary, task, tmp_path, devd)
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.1)
    devd.send(MATCHED)
    assert _exit(task).oom_killed


def test_other_jails_and_plain_kills_are_not_oom(
    binary: Path, tmp_path: Path, devd: FakeDevd
) -> None:
    task = _task(tmp_path)
    pid = _start(binary, task, tmp_path, devd)
    devd.send(rctl_matched_line("jail:xc-other:memoryuse:devctl=1", 1, 0, "xc-other"))
    devd.send(MATCHED.replace(":devctl=", ":sigkill="))
    os.kill(pid, signal.SIGKILL)
    st = _exit(task)
    assert (st.signal, st.oom_killed) == (9, False)


def test_devd_gone_the_task_is_still_reaped(binary: Path, tmp_path: Path, devd: FakeDevd) -> None:
    task = _task(tmp_path)
    pid = _start(binary, task, tmp_path, devd)
    devd.close()  # devd restarted: the watch ends, the supervisor keeps its task
    time.sleep(0.1)
    os.kill(pid, signal.SIGTERM)
    st = _exit(task)
    assert (st.exit_code, st.signal, st.oom_killed) == (143, 15, False)


def test_no_devd_socket_starts_anyway(binary: Path, tmp_path: Path) -> None:
    task = _task(tmp_path)
    launch(binary, task, tmp_path / "o", tmp_path / "e", watch_arg(JAIL, "/nonexistent/devd"),
           ["exec", "/bin/sh", "-c", "exit 4"])
    assert (_exit(task).exit_code, _exit(task).oom_killed) == (4, False)


def test_fake_rctl_rule_table_follows_the_kernel(devd: FakeDevd) -> None:
    """rctl_rule_add: a deny rule replaces one differing only in amount, any other action only an
    identical rule; rctl_rule_remove: ESRCH when the filter matched nothing."""
    from tests.fixtures.fakeracct import FakeRctl

    rctl = FakeRctl(lambda jail: [], devd)
    try:
        for rule in ("jail:j:maxproc:deny=10", "jail:j:maxproc:deny=20",
                     "jail:j:memoryuse:sigkill=100", "jail:j:memoryuse:sigkill=200",
                     "jail:j:memoryuse:sigkill=200", "jail:k:maxproc:deny=5"):
            assert rctl.command(["rctl", "-a", rule])[0] == 0
        assert [str(r) for r in rctl.rules] == [
            "jail:j:maxproc:deny=20", "jail:j:memoryuse:sigkill=100",
            "jail:j:memoryuse:sigkill=200", "jail:k:maxproc:deny=5",
        ]
        assert rctl.command(["rctl", "-r", "jail:j:"]) == (0, "", "")
        assert [str(r) for r in rctl.rules] == ["jail:k:maxproc:deny=5"]
        assert rctl.command(["rctl", "-r", "jail:j:"]) == (
            1, "", "rctl: failed to remove rule 'jail:j:': No such process\n")
    finally:
        rctl.close()
