"""Read a container's usage straight from its cgroup files (v1 hierarchies or the v2 tree).

One sample is a handful of small file reads: no runc, no shell, no fork.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

from jails.model import Usage

CGROUP_ROOT = Path("/sys/fs/cgroup")
USER_HZ = os.sysconf("SC_CLK_TCK")
_TICK_NS = 1_000_000_000 // USER_HZ
_MEASURED_V1 = ("cpu_user_ns", "cpu_system_ns", "cpu_total_ns", "cpu_percent",
                "memory_rss_bytes", "memory_usage_bytes", "memory_max_usage_bytes", "pids")
_MEASURED_V2 = ("cpu_user_ns", "cpu_system_ns", "cpu_total_ns", "cpu_percent",
                "memory_rss_bytes", "memory_usage_bytes", "pids")


def _read(path: str) -> bytes:
    # os-level read: a sample is several tiny files, and pathlib/io overhead dominated it.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return b""
    try:
        return os.read(fd, 65536)
    except OSError:
        return b""
    finally:
        os.close(fd)


class OpenFiles:
    """Cgroup files kept open and re-read from offset 0 (the kernel regenerates them): a sample
    then costs one read per file instead of open + read + close, which dominated it."""

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}
        self._mu = threading.Lock()

    def read(self, path: str, size: int = 16384) -> bytes:
        """The file's current content (``size`` bytes at most: the single-number files of a
        sample are read with a small buffer, as the allocation showed up per read)."""
        for _ in range(2):  # a stale fd (cgroup removed and made again) is reopened once
            # dict.get is atomic: the lock is only for opening, not on every sample's reads
            fd = self._fds.get(path)
            if fd is None:
                fd = self._open(path)
                if fd is None:
                    return b""
            try:
                return os.pread(fd, size, 0)
            except OSError:
                self._drop(path, fd)
        return b""

    def _open(self, path: str) -> int | None:
        with self._mu:
            fd = self._fds.get(path)
            if fd is None:
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                except OSError:
                    return None
                self._fds[path] = fd
            return fd

    def _drop(self, path: str, fd: int) -> None:
        with self._mu:
            if self._fds.get(path) == fd:
                del self._fds[path]
                with contextlib.suppress(OSError):
                    os.close(fd)

    def close(self) -> None:
        with self._mu:
            for fd in self._fds.values():
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._fds.clear()


def _int_of(data: bytes) -> int | None:
    try:
        return int(data.split()[0])
    except (ValueError, IndexError):
        return None


def _kv_of(data: bytes) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in data.splitlines():
        k, _, v = line.partition(b" ")
        if v.isdigit():
            out[k.decode()] = int(v)
    return out


def _field(data: bytes, key: bytes, default: int = 0) -> int:
    """The value of the ``key value`` line of a stat file, without parsing the other lines
    (memory.stat has dozens; a sample wants one or two)."""
    k = key + b" "
    if data.startswith(k):
        at = len(k)
    else:
        i = data.find(b"\n" + k)
        if i < 0:
            return default
        at = i + 1 + len(k)
    end = data.find(b"\n", at)
    v = data[at:] if end < 0 else data[at:end]
    return int(v) if v.isdigit() else default


def _read_kv(path: str | Path) -> dict[str, int]:
    return _kv_of(_read(str(path)))


class CgroupPaths:
    """Where one container's cgroup lives; ``rel`` is linux.cgroupsPath without the leading /."""

    def __init__(self, rel: str, mode: str, root: Path = CGROUP_ROOT) -> None:
        self.rel = rel.strip("/")
        self.mode = mode
        self.root = root
        self.files = OpenFiles()
        # file name -> path, built once: path building showed up in every sample
        if mode == "v2":
            d = str(root / self.rel)
            names = ("cpu.stat", "memory.stat", "memory.current", "memory.peak", "memory.max",
                     "pids.current")
            self._paths = {n: f"{d}/{n}" for n in names}
        else:
            self._paths = {n: f"{root}/{c}/{self.rel}/{n}" for c, n in (
                ("cpuacct", "cpuacct.usage"), ("cpuacct", "cpuacct.stat"),
                ("memory", "memory.stat"), ("memory", "memory.limit_in_bytes"),
                ("memory", "memory.usage_in_bytes"), ("memory", "memory.max_usage_in_bytes"),
                ("pids", "pids.current"))}

    def _int(self, path: str) -> int | None:
        return _int_of(self.files.read(path, 64))


    def dir(self, controller: str) -> Path:
        if self.mode == "v2":
            return self.root / self.rel
        return self.root / controller / self.rel

    def oom_file(self) -> Path:
        if self.mode == "v2":
            return self.root / self.rel / "memory.events"
        return self.root / "memory" / self.rel / "memory.oom_control"

    def all_dirs(self) -> list[Path]:
        if self.mode == "v2":
            return [self.root / self.rel]
        return [p / self.rel for p in sorted(self.root.iterdir()) if p.is_dir()]

    def oom_kills(self) -> int:
        return _read_kv(self.oom_file()).get("oom_kill", 0)

    def sample(self) -> Usage:
        now = time.time_ns()
        if self.mode == "v2":
            return self._sample_v2(now)
        return self._sample_v1(now)

    def _sample_v1(self, now: int) -> Usage:
        p = self._paths
        read = self.files.read
        cpu = read(p["cpuacct.stat"])
        limit = self._int(p["memory.limit_in_bytes"]) or 0
        mstat = read(p["memory.stat"])
        return Usage(
            timestamp_ns=now,
            cpu_user_ns=_field(cpu, b"user") * _TICK_NS,
            cpu_system_ns=_field(cpu, b"system") * _TICK_NS,
            cpu_total_ns=self._int(p["cpuacct.usage"]) or 0,
            memory_rss_bytes=_field(mstat, b"total_rss", _field(mstat, b"rss")),
            memory_usage_bytes=self._int(p["memory.usage_in_bytes"]) or 0,
            memory_max_usage_bytes=self._int(p["memory.max_usage_in_bytes"]) or 0,
            memory_limit_bytes=limit if limit < (1 << 62) else 0,
            pids=self._int(p["pids.current"]) or 0,
            measured=_MEASURED_V1,
        )

    def _sample_v2(self, now: int) -> Usage:
        p = self._paths
        read = self.files.read
        cpu = read(p["cpu.stat"])
        mstat = read(p["memory.stat"])
        return Usage(
            timestamp_ns=now,
            cpu_user_ns=_field(cpu, b"user_usec") * 1000,
            cpu_system_ns=_field(cpu, b"system_usec") * 1000,
            cpu_total_ns=_field(cpu, b"usage_usec") * 1000,
            memory_rss_bytes=_field(mstat, b"anon"),
            memory_usage_bytes=self._int(p["memory.current"]) or 0,
            memory_max_usage_bytes=self._int(p["memory.peak"]) or 0,
            memory_limit_bytes=self._int(p["memory.max"]) or 0,  # "max" (unlimited) -> 0
            pids=self._int(p["pids.current"]) or 0,
            measured=_MEASURED_V2,
        )

    def remove(self) -> None:
        """rmdir the container's cgroup in every hierarchy (runc delete normally does this)."""
        self.files.close()
        for p in self.all_dirs():
            with contextlib.suppress(FileNotFoundError, OSError):
                p.rmdir()
