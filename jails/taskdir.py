"""Per-task state directory: the only record a fresh process needs to find a task again.

Layout of ``<state_root>/tasks/<name>/``:
  .lock        flock held while the task is being created or destroyed
  spec.json    what was asked for (written before the rename that publishes the directory)
  task.json    written by the supervisor once the task runs: supervisor and task pid + start time
  exit.json    written by the supervisor when the task ended (the commit marker of a finished task)
  start_error  written by the supervisor when the task could not be started

A directory is created as ``.new-<name>-<rand>`` and renamed into place, and removed by renaming it
to ``.del-<name>-<rand>`` first, so a crash mid-way leaves a name no task can be mistaken for.
A published directory with no task.json whose lock is free is a crashed start: garbage too.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jails.errors import JailError, JailExists
from jails.model import ExitStatus


def write_atomic(path: Path, data: bytes) -> None:
    """Readers see the old file or the whole new one, never a part.

    No fsync: nothing in a task's state dir outlives a reboot (the boot id marks every task of an
    earlier boot dead), and rename is atomic against a crash of any process, which is what the
    supervisor, the plugin and its successor need. It was a quarter of the state-dir cost of a
    start.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.rename(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise JailError(f"corrupt state file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise JailError(f"corrupt state file {path}: not a JSON object")
    return data


@functools.cache
def boot_id() -> str:
    """Identifies this boot, so pids recorded before a reboot are never taken for live ones."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        pass
    try:  # FreeBSD
        out = subprocess.run(
            ["sysctl", "-n", "kern.boottime"], capture_output=True, text=True, check=False
        )
        return out.stdout.strip()
    except OSError:
        return ""


def proc_start_time(pid: int) -> int | None:
    """Start time of a live (non-zombie) pid as the supervisor records it, else None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])  # field 22 of proc(5); fields[0] is field 3


def proc_state_alive(pid: int) -> bool:
    """False for a zombie (exited, not yet reaped) where /proc can tell; True otherwise."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # no procfs: kill(0) already said alive
    except OSError:
        return True
    return raw[raw.rindex(b")") + 2 : raw.rindex(b")") + 3] not in (b"Z", b"X")


StartTimeProbe = Callable[[int], "int | None"]
_start_time_probe: StartTimeProbe = proc_start_time


def set_start_time_probe(probe: StartTimeProbe) -> None:
    """Where /proc is absent (FreeBSD) the backend supplies a kinfo_proc-based probe."""
    global _start_time_probe
    _start_time_probe = probe


def identity_alive(pid: int, start: int) -> bool:
    """True if pid is alive and is the same process that was recorded (not a recycled pid)."""
    if pid <= 0:
        return False
    now = _start_time_probe(pid)
    return now is not None and (start == 0 or now == start)


def pid_alive(pid: int, start: int, *, full: bool) -> bool:
    """pid is alive (not a zombie); ``full`` also checks it is the recorded process (start time),
    which costs a process spawn on FreeBSD, so waiters do it now and then and otherwise trust a
    pid they verified."""
    if full:
        return identity_alive(pid, start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return proc_state_alive(pid)


@dataclass(frozen=True)
class TaskPids:
    supervisor_pid: int
    supervisor_start: int
    pid: int
    pid_start: int


class TaskDir:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.name

    @property
    def spec_file(self) -> Path:
        return self.path / "spec.json"

    def pids(self) -> TaskPids | None:
        data = read_json(self.path / "task.json")
        if data is None:
            return None
        return TaskPids(
            int(data["supervisor_pid"]),
            int(data["supervisor_start"]),
            int(data["pid"]),
            int(data["pid_start"]),
        )

    def exit_status(self) -> ExitStatus | None:
        data = read_json(self.path / "exit.json")
        return ExitStatus.from_json(data) if data is not None else None

    def start_error(self) -> str | None:
        data = read_json(self.path / "start_error")
        return str(data.get("error")) if data is not None else None

    def spec(self) -> dict[str, Any]:
        data = read_json(self.spec_file)
        if data is None:
            raise JailError(f"state dir {self.path} has no spec.json")
        return data

    def supervisor_alive(self) -> bool:
        p = self.pids()
        if p is None:
            return False
        if self.spec().get("boot_id", "") != boot_id():
            return False
        return identity_alive(p.supervisor_pid, p.supervisor_start)


@contextlib.contextmanager
def locked(path: Path, *, blocking: bool = True) -> Iterator[bool]:
    """flock on ``path/.lock``; yields False (not locked) when non-blocking and busy or gone."""
    try:
        fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except (FileNotFoundError, NotADirectoryError):
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                yield False
                return
            raise
        yield True
    finally:
        os.close(fd)


STAGING_GRACE_S = 30.0


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


class TaskDirs:
    """All task directories under one state root."""

    def __init__(self, state_root: Path) -> None:
        self.root = state_root / "tasks"
        self.root.mkdir(parents=True, exist_ok=True)
        self._root = str(self.root)
        # TaskDir objects handed out before (a TaskDir is only its path): every TaskStats sample
        # asks for one, and building the Path cost more than the stat itself
        self._seen: dict[str, TaskDir] = {}

    def get(self, name: str) -> TaskDir | None:
        p = f"{self._root}/{name}"
        if not os.path.exists(f"{p}/spec.json"):
            self._seen.pop(name, None)
            return None
        task = self._seen.get(name)
        if task is None:
            task = self._seen[name] = TaskDir(Path(p))
        return task

    def new_staging(self, name: str) -> Path:
        p = self.root / f".new-{name}-{secrets.token_hex(4)}"
        p.mkdir(mode=0o700)
        return p

    def publish(self, staging: Path, name: str) -> TaskDir:
        dst = self.root / name
        try:
            os.rename(staging, dst)  # fails if dst exists and is non-empty
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise JailExists(name) from exc
            raise
        return TaskDir(dst)

    def retire(self, name: str) -> Path | None:
        """Rename the task dir out of the namespace (first step of removal)."""
        self._seen.pop(name, None)
        src = self.root / name
        dst = self.root / f".del-{name}-{secrets.token_hex(4)}"
        try:
            os.rename(src, dst)
        except FileNotFoundError:
            return None
        return dst

    def names(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if not p.name.startswith("."))

    def garbage(self) -> list[tuple[str, Path]]:
        """(task name, path) of staging/retired dirs and crashed starts whose lock is free."""
        out: list[tuple[str, Path]] = []
        for p in self.root.iterdir():
            if p.name.startswith(".new-") and _age_s(p) < STAGING_GRACE_S:
                continue  # a start may be between mkdir and flock
            if p.name.startswith((".new-", ".del-")):
                name = p.name[5:].rsplit("-", 1)[0]
            elif not p.name.startswith(".") and not (p / "task.json").exists():
                name = p.name  # published but never started (crash or failed start)
            else:
                continue
            with locked(p, blocking=False) as got:
                if got:
                    out.append((name, p))
        return out


def remove_tree(path: Path, attempts: int = 20) -> None:
    """rmtree that tolerates a writer finishing inside the tree while it is being removed.

    A retired task dir can still get a last file (runc's log, a supervisor's tmp file) from a
    process that is exiting at that moment; rmtree then fails with ENOTEMPTY. Retry briefly.
    """
    for i in range(attempts):
        try:
            shutil.rmtree(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.ENOTEMPTY or i == attempts - 1:
                raise
            time.sleep(0.02)
