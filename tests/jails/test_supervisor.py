"""The per-task supervisor on its own: it outlives whoever started it, records exit statuses, and
reports start failures; a fresh process collects the result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest

from jails import Runtime
from jails.errors import SupervisorError
from jails.supervisor import ensure_binary, launch
from jails.taskdir import TaskDir, identity_alive, proc_start_time
from tests.fixtures.runc import cgroup_parent, runc_usable, state_root_path
from tests.fixtures.sweep import test_name as resource_name

REPO = Path(__file__).resolve().parents[2]

STARTER = """
import sys, time
from pathlib import Path
from jails import JailSpec, open_runtime
root, cg, name, rootfs, out, err = sys.argv[1:7]
rt = open_runtime("linux", Path(root), cgroup_parent=cg)
loop = "i=0; while [ $i -lt 30 ]; do echo tick $i; i=$((i+1)); sleep 0.05; done; exit 9"
rt.start(JailSpec(name=name, rootfs=Path(rootfs), stdout_path=Path(out), stderr_path=Path(err),
    argv=("/bin/sh", "-c", loop)))
print("started", flush=True)
time.sleep(3600)
"""

WAITER = """
import sys
from pathlib import Path
from jails import open_runtime
rt = open_runtime("linux", Path(sys.argv[1]), cgroup_parent=sys.argv[2])
st = rt.wait(sys.argv[3], 30)
print(st.exit_code, st.signal, st.oom_killed)
"""


def _py(code: str, *args: str, **kw: object) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-c", code, *args], env=env, text=True, **kw
    )


@pytest.mark.root
def test_task_survives_sigkill_of_starter(
    busybox_rootfs: Path, linux_runtime_factory: Callable[[], object], tmp_path: Path
) -> None:
    rt = cast(Runtime, linux_runtime_factory())
    name = resource_name("orphaned")
    out = tmp_path / "out.fifo"
    os.mkfifo(out)
    err = tmp_path / "err.log"
    lines: list[bytes] = []

    def reader() -> None:
        with open(out, "rb") as f:
            lines.extend(f)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    starter = _py(
        STARTER,
        str(state_root_path()),
        cgroup_parent(),
        name,
        str(busybox_rootfs),
        str(out),
        str(err),
        stdout=subprocess.PIPE,
    )
    try:
        assert starter.stdout is not None
        assert starter.stdout.readline().strip() == "started"
        seen_before_kill = len(lines)
        starter.send_signal(signal.SIGKILL)
        starter.wait(10)
        assert rt.status(name) == "running"
        waiter = _py(WAITER, str(state_root_path()), cgroup_parent(), name, stdout=subprocess.PIPE)
        result, _ = waiter.communicate(timeout=60)
        assert result.split() == ["9", "0", "False"]
        t.join(10)
        assert len(lines) == 30 > seen_before_kill
        assert lines[-1] == b"tick 29\n"
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait()
        rt.destroy(name)


@pytest.fixture
def binary() -> Path:
    reason = runc_usable()
    if reason:
        pytest.skip(reason)
    return ensure_binary(state_root_path())


def _task_dir(tmp_path: Path) -> TaskDir:
    d = tmp_path / "task"
    d.mkdir()
    (d / "spec.json").write_text(json.dumps({"boot_id": ""}))
    return TaskDir(d)


def test_exec_mode_records_code_and_identity(binary: Path, tmp_path: Path) -> None:
    task = _task_dir(tmp_path)
    pids = launch(
        binary,
        task,
        tmp_path / "o",
        tmp_path / "e",
        None,
        ["exec", "/bin/sh", "-c", "echo $$; sleep 0.3; exit 4"],
    )
    assert identity_alive(pids.supervisor_pid, pids.supervisor_start)
    assert pids.pid_start == proc_start_time(pids.pid)
    assert not identity_alive(pids.supervisor_pid, pids.supervisor_start + 1)  # recycled pid
    deadline = time.monotonic() + 10
    while task.exit_status() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    st = task.exit_status()
    assert st is not None and (st.exit_code, st.signal) == (4, 0)
    assert (tmp_path / "o").read_text() == f"{pids.pid}\n"


def test_exec_mode_signal_and_forwarding(binary: Path, tmp_path: Path) -> None:
    task = _task_dir(tmp_path)
    pids = launch(binary, task, tmp_path / "o", tmp_path / "e", None, ["exec", "/bin/sleep", "30"])
    os.kill(pids.supervisor_pid, signal.SIGTERM)  # forwarded to the task
    deadline = time.monotonic() + 10
    while task.exit_status() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    st = task.exit_status()
    assert st is not None and (st.exit_code, st.signal) == (128 + 15, 15)


def test_exec_mode_start_failure(binary: Path, tmp_path: Path) -> None:
    task = _task_dir(tmp_path)
    with pytest.raises(SupervisorError) as ei:
        launch(binary, task, tmp_path / "o", tmp_path / "e", None, ["exec", "/no/such/cmd"])
    assert "/no/such/cmd" in str(ei.value)
    assert task.pids() is None and task.exit_status() is None


def test_unopenable_log_path_fails_start(binary: Path, tmp_path: Path) -> None:
    task = _task_dir(tmp_path)
    with pytest.raises(SupervisorError) as ei:
        launch(binary, task, tmp_path / "nodir" / "o", tmp_path / "e", None, ["exec", "/bin/true"])
    assert "nodir" in str(ei.value)


def test_oom_file_is_read(binary: Path, tmp_path: Path) -> None:
    task = _task_dir(tmp_path)
    oom = tmp_path / "memory.events"
    oom.write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    launch(binary, task, tmp_path / "o", tmp_path / "e", oom, ["exec", "/bin/true"])
    deadline = time.monotonic() + 10
    while task.exit_status() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    st = task.exit_status()
    assert st is not None and st.oom_killed


def test_binary_is_cached_by_source_hash(binary: Path) -> None:
    again = ensure_binary(state_root_path())
    assert again == binary
    assert binary.name.startswith("xc-supervisor-")


def test_start_time_probe_matches_proc(binary: Path) -> None:
    from jails.supervisor import start_time_via_binary

    probe = start_time_via_binary(binary)
    assert probe(os.getpid()) == proc_start_time(os.getpid())
    assert probe(2**22 + 12345) is None
