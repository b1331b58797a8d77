"""sweep_leftovers removes what a dead test session left behind: its runc containers (and the
supervisors they keep alive), cgroup dirs and state dirs, and nothing of live sessions."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures import runc as runc_fixture
from tests.fixtures.sweep import is_stale

REPO = Path(__file__).resolve().parents[2]

# A "session" that starts a sleeper named after its own pid and dies without cleaning up.
DEAD_SESSION = """
import os, sys
from pathlib import Path
from jails import JailSpec, open_runtime
from tests.fixtures.runc import cgroup_parent, state_root_path
rt = open_runtime("linux", state_root_path(), cgroup_parent=cgroup_parent())
h = rt.start(JailSpec(name=f"xctest-{os.getpid()}-left", rootfs=Path(sys.argv[1]),
    argv=("/bin/sleep", "600"), stdout_path=Path("/dev/null"), stderr_path=Path("/dev/null")))
print(state_root_path(), cgroup_parent(), h.supervisor_pid, h.pid, flush=True)
"""


@pytest.mark.root
def test_sweep_removes_a_dead_sessions_leftovers(busybox_rootfs: Path) -> None:
    reason = runc_fixture.runc_usable()
    if reason:
        pytest.skip(reason)
    out = subprocess.run(
        [sys.executable, "-c", DEAD_SESSION, str(busybox_rootfs)],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    state_root, parent, sup_pid, task_pid = Path(out[0]), out[1], int(out[2]), int(out[3])
    assert state_root.is_dir()
    assert (Path("/sys/fs/cgroup/pids") / parent).is_dir() or (
        Path("/sys/fs/cgroup") / parent
    ).is_dir()
    os.kill(task_pid, 0)  # the task outlived its session
    assert is_stale(state_root.name) and is_stale(parent)

    runc_fixture.sweep_leftovers(is_stale)

    assert not state_root.exists()
    assert not any(Path("/sys/fs/cgroup").glob(f"*/{parent}"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{sup_pid}").exists():
        time.sleep(0.05)
    for pid in (task_pid, sup_pid):
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().split(")")[1].split()[0] == "Z"


def test_sweep_spares_live_sessions(tmp_path: Path) -> None:
    mine = Path("/tmp") / f"xctest-{os.getpid()}-jails-sparetest"
    mine.mkdir()
    try:
        runc_fixture.sweep_leftovers(is_stale)
        assert mine.is_dir()
    finally:
        mine.rmdir()
