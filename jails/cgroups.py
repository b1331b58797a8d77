"""Read a container's usage straight from its cgroup files (v1 hierarchies or the v2 tree).

One sample is a handful of small file reads: no runc, no shell, no fork.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from jails.model import Usage

CGROUP_ROOT = Path("/sys/fs/cgroup")
USER_HZ = os.sysconf("SC_CLK_TCK")
_TICK_NS = 1_000_000_000 // USER_HZ
_MEASURED_V1 = ("cpu_user_ns", "cpu_system_ns", "cpu_total_ns", "cpu_percent",
                "memory_rss_bytes", "memory_usage_bytes", "memory_max_usage_bytes")
_MEASURED_V2 = ("cpu_user_ns", "cpu_system_ns", "cpu_total_ns", "cpu_percent",
                "memory_rss_bytes", "memory_usage_bytes")
_FULL_V1 = (*_MEASURED_V1, "pids")
_FULL_V2 = (*_MEASURED_V2, "pids")


# The files of one sample, in the order _sample_v1/_sample_v2 unpack them (v1: the controller
# is the name's prefix, each in its own hierarchy): what a TaskStats message shows, then the
# rest of a full sample (limit, process count), read only when asked for.
_FILES_V1: tuple[str, ...] = (
    "cpuacct.stat", "cpuacct.usage", "memory.stat", "memory.usage_in_bytes",
    "memory.max_usage_in_bytes")
_FILES_V2: tuple[str, ...] = ("cpu.stat", "memory.stat", "memory.current", "memory.peak")
_MORE_V1: tuple[str, ...] = ("memory.limit_in_bytes", "pids.current")
_MORE_V2: tuple[str, ...] = ("memory.max", "pids.current")


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
    """One cgroup's sample files, kept open and re-read from offset 0 (the kernel regenerates
    them): a sample costs one pread per file instead of open + read + close, and the descriptors
    sit in a tuple, as lookups per file showed up in every sample."""

    def __init__(self, paths: tuple[str, ...], sizes: tuple[int, ...]) -> None:
        self.paths = paths
        self.sizes = sizes
        self._fds: tuple[int, ...] | None = None  # -1: the file does not exist
        self._mu = threading.Lock()

    def fds(self) -> tuple[int, ...]:
        """The open descriptors, in ``paths`` order (-1: the file does not exist)."""
        return self._fds or self._open()

    def read_all(self) -> list[bytes]:
        """Every file's current content, in ``paths`` order (b"" for a missing file)."""
        for _ in range(2):  # stale fds (the cgroup removed and made again) are reopened once
            fds = self._fds or self._open()
            try:
                return [os.pread(fd, size, 0) if fd >= 0 else b""
                        for fd, size in zip(fds, self.sizes, strict=True)]
            except OSError:
                self._drop(fds)
        return [b""] * len(self.paths)

    def _open(self) -> tuple[int, ...]:
        with self._mu:
            if self._fds is None:
                fds = []
                for path in self.paths:
                    try:
                        fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
                    except OSError:
                        fds.append(-1)
                self._fds = tuple(fds)
            return self._fds

    def _drop(self, fds: tuple[int, ...]) -> None:
        with self._mu:
            if self._fds is fds:
                self._close_locked()

    def _close_locked(self) -> None:
        for fd in self._fds or ():
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fds = None

    def close(self) -> None:
        with self._mu:
            self._close_locked()


def _int_of(data: bytes) -> int | None:
    try:
        return int(data)  # int() takes the trailing newline
    except ValueError:
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
        # the sample's files, opened once; a stat file may be long, the others are one number
        v2 = mode == "v2"
        self.files = self._open_files(_FILES_V2 if v2 else _FILES_V1)
        self.more = self._open_files(_MORE_V2 if v2 else _MORE_V1)

    def _open_files(self, names: tuple[str, ...]) -> OpenFiles:
        if self.mode == "v2":
            paths = tuple(f"{self.root}/{self.rel}/{n}" for n in names)
        else:
            paths = tuple(f"{self.root}/{n.split('.')[0]}/{self.rel}/{n}" for n in names)
        return OpenFiles(paths, tuple(16384 if n.endswith(".stat") else 64 for n in names))

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

    def sample(self, full: bool = True) -> Usage:
        """CPU times and memory; with ``full`` also the memory limit and the process count
        (two more reads, which a TaskStats message does not show)."""
        now = time.time_ns()
        if self.mode == "v2":
            return self._sample_v2(now, full)
        return self._sample_v1(now, full)

    def _sample_v1(self, now: int, full: bool) -> Usage:
        cpu, total, mstat, usage, max_usage = self.files.read_all()
        rss = _field(mstat, b"total_rss", -1)  # the hierarchy's total; the cgroup's own if none
        u = Usage(
            timestamp_ns=now,
            cpu_user_ns=_field(cpu, b"user") * _TICK_NS,
            cpu_system_ns=_field(cpu, b"system") * _TICK_NS,
            cpu_total_ns=_int_of(total) or 0,
            memory_rss_bytes=rss if rss >= 0 else _field(mstat, b"rss"),
            memory_usage_bytes=_int_of(usage) or 0,
            memory_max_usage_bytes=_int_of(max_usage) or 0,
            measured=_MEASURED_V1,
        )
        if not full:
            return u
        limit, pids = self.more.read_all()
        lim = _int_of(limit) or 0
        return u._replace(memory_limit_bytes=lim if lim < (1 << 62) else 0,
                          pids=_int_of(pids) or 0, measured=_FULL_V1)

    def usage_of(self, row: Sequence[int]) -> Usage:
        """The sample ``jails/cgsample.c`` read into ``row`` (its slots 1-7), as ``sample``
        gives it without ``full``."""
        if self.mode == "v2":
            return Usage(timestamp_ns=row[7], cpu_user_ns=row[1] * 1000,
                         cpu_system_ns=row[2] * 1000, cpu_total_ns=row[3] * 1000,
                         memory_rss_bytes=row[4], memory_usage_bytes=row[5],
                         memory_max_usage_bytes=row[6], measured=_MEASURED_V2)
        return Usage(timestamp_ns=row[7], cpu_user_ns=row[1] * _TICK_NS,
                     cpu_system_ns=row[2] * _TICK_NS, cpu_total_ns=row[3],
                     memory_rss_bytes=row[4], memory_usage_bytes=row[5],
                     memory_max_usage_bytes=row[6], measured=_MEASURED_V1)

    def _sample_v2(self, now: int, full: bool) -> Usage:
        cpu, mstat, current, peak = self.files.read_all()
        u = Usage(
            timestamp_ns=now,
            cpu_user_ns=_field(cpu, b"user_usec") * 1000,
            cpu_system_ns=_field(cpu, b"system_usec") * 1000,
            cpu_total_ns=_field(cpu, b"usage_usec") * 1000,
            memory_rss_bytes=_field(mstat, b"anon"),
            memory_usage_bytes=_int_of(current) or 0,
            memory_max_usage_bytes=_int_of(peak) or 0,
            measured=_MEASURED_V2,
        )
        if not full:
            return u
        limit, pids = self.more.read_all()
        return u._replace(memory_limit_bytes=_int_of(limit) or 0,  # "max" (unlimited) -> 0
                          pids=_int_of(pids) or 0, measured=_FULL_V2)

    def create(self) -> None:
        """Make the container's cgroup in every v1 controller hierarchy, as runc would (v2: left
        to runc, which enables the parents' controllers as it makes the path)."""
        if self.mode == "v2":
            return
        for h in sorted(self.root.iterdir()):
            if h.name != "unified" and h.is_dir() and (h / "cgroup.procs").exists():
                (h / self.rel).mkdir(parents=True, exist_ok=True)

    def remove(self) -> None:
        """rmdir the container's cgroup in every hierarchy (runc delete normally does this)."""
        self.files.close()
        self.more.close()
        for p in self.all_dirs():
            with contextlib.suppress(FileNotFoundError, OSError):
                p.rmdir()
