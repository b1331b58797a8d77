"""The zfs chokepoint retries what zfs-fuse reports transiently (busy, a dropped connection read
as EIO) on the verbs that are safe to repeat, and only there. The failures are scripted by a
stand-in tool that fails a given number of times: zfs-fuse cannot be made to drop a connection
on demand."""

from __future__ import annotations

from pathlib import Path

import pytest

from zfsimage import zfs
from zfsimage.errors import ZfsBusy, ZfsError, ZfsIOError


def flaky_tool(tmp_path: Path, failures: int, stderr: str) -> tuple[str, Path]:
    """A tool that fails ``failures`` times with ``stderr`` and then prints "ok"; returns its
    path and the file counting its calls."""
    calls = tmp_path / "calls"
    calls.write_text("0")
    tool = tmp_path / "zfs-flaky"
    tool.write_text(f"""#!/bin/sh
n=$(($(cat {calls}) + 1)); echo $n > {calls}
if [ $n -le {failures} ]; then printf '%s\\n' "{stderr}" >&2; exit 1; fi
echo ok
""")
    tool.chmod(0o755)
    return str(tool), calls


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zfs, "BUSY_SLEEP_S", 0.001)


@pytest.mark.parametrize("stderr, kind", [
    ("cannot open 'p/xc/tasks/t': I/O error", ZfsIOError),
    ("cannot destroy 'p/xc/tasks/t': dataset is busy", ZfsBusy),
])
def test_a_transient_error_is_retried_until_it_clears(tmp_path: Path, stderr: str,
                                                      kind: type[ZfsError]) -> None:
    tool, calls = flaky_tool(tmp_path, 3, stderr)
    assert zfs.run(["destroy", "-r", "p/xc/tasks/t"], tool=tool, busy_retry=True) == "ok\n"
    assert calls.read_text().strip() == "4"
    # Without busy_retry the same first failure is raised at once, typed.
    tool, calls = flaky_tool(tmp_path, 3, stderr)
    with pytest.raises(kind) as info:
        zfs.run(["get", "name", "p"], tool=tool)
    assert calls.read_text().strip() == "1" and stderr in info.value.stderr


def test_a_lasting_io_error_is_raised_after_the_retries(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zfs, "BUSY_RETRIES", 5)
    tool, calls = flaky_tool(tmp_path, 100, "cannot open 'p/t': I/O error")
    with pytest.raises(ZfsIOError, match="I/O error"):
        zfs.run(["destroy", "p/t"], tool=tool, busy_retry=True)
    assert calls.read_text().strip() == "5"


def test_other_errors_are_not_retried(tmp_path: Path) -> None:
    tool, calls = flaky_tool(tmp_path, 100, "cannot destroy 'p/t': permission denied")
    with pytest.raises(ZfsError) as info:
        zfs.run(["destroy", "p/t"], tool=tool, busy_retry=True)
    assert type(info.value) is ZfsError and calls.read_text().strip() == "1"
