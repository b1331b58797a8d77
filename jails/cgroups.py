"""Read a container's usage straight from its cgroup files (v1 hierarchies or the v2 tree).

One sample is a handful of small file reads: no runc, no shell, no fork.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from jails.model import Usage

CGROUP_ROOT = Path("/sys/fs/cgroup")
USER_HZ = os.sysconf("SC_CLK_TCK")


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


def _read_int(path: str) -> int | None:
    data = _read(path)
    try:
        return int(data.split()[0])
    except (ValueError, IndexError):
        return None


def _read_kv(path: str | Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in _read(str(path)).splitlines():
        k, _, v = line.partition(b" ")
        with contextlib.suppress(ValueError):
            out[k.decode()] = int(v)
    return out


class CgroupPaths:
    """Where one container's cgroup lives; ``rel`` is linux.cgroupsPath without the leading /."""

    def __init__(self, rel: str, mode: str, root: Path = CGROUP_ROOT) -> None:
        self.rel = rel.strip("/")
        self.mode = mode
        self.root = root

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
        cpuacct = str(self.dir("cpuacct"))
        mem = str(self.dir("memory"))
        total = _read_int(cpuacct + "/cpuacct.usage") or 0
        stat = _read_kv(cpuacct + "/cpuacct.stat")
        tick_ns = 1_000_000_000 // USER_HZ
        mstat = _read_kv(mem + "/memory.stat")
        limit = _read_int(mem + "/memory.limit_in_bytes") or 0
        return Usage(
            timestamp_ns=now,
            cpu_user_ns=stat.get("user", 0) * tick_ns,
            cpu_system_ns=stat.get("system", 0) * tick_ns,
            cpu_total_ns=total,
            memory_rss_bytes=mstat.get("total_rss", mstat.get("rss", 0)),
            memory_usage_bytes=_read_int(mem + "/memory.usage_in_bytes") or 0,
            memory_max_usage_bytes=_read_int(mem + "/memory.max_usage_in_bytes") or 0,
            memory_limit_bytes=limit if limit < (1 << 62) else 0,
            pids=_read_int(str(self.dir("pids")) + "/pids.current") or 0,
            measured=(
                "cpu_user_ns",
                "cpu_system_ns",
                "cpu_total_ns",
                "cpu_percent",
                "memory_rss_bytes",
                "memory_usage_bytes",
                "memory_max_usage_bytes",
                "pids",
            ),
        )

    def _sample_v2(self, now: int) -> Usage:
        d = str(self.root / self.rel)
        cpu = _read_kv(d + "/cpu.stat")
        mstat = _read_kv(d + "/memory.stat")
        limit = _read_int(d + "/memory.max") or 0  # "max" (unlimited) parses as None
        return Usage(
            timestamp_ns=now,
            cpu_user_ns=cpu.get("user_usec", 0) * 1000,
            cpu_system_ns=cpu.get("system_usec", 0) * 1000,
            cpu_total_ns=cpu.get("usage_usec", 0) * 1000,
            memory_rss_bytes=mstat.get("anon", 0),
            memory_usage_bytes=_read_int(d + "/memory.current") or 0,
            memory_max_usage_bytes=_read_int(d + "/memory.peak") or 0,
            memory_limit_bytes=limit,
            pids=_read_int(d + "/pids.current") or 0,
            measured=(
                "cpu_user_ns",
                "cpu_system_ns",
                "cpu_total_ns",
                "cpu_percent",
                "memory_rss_bytes",
                "memory_usage_bytes",
                "pids",
            ),
        )

    def remove(self) -> None:
        """rmdir the container's cgroup in every hierarchy (runc delete normally does this)."""
        for p in self.all_dirs():
            with contextlib.suppress(FileNotFoundError, OSError):
                p.rmdir()
