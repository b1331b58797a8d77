"""TaskStats: resource samples of running tasks in Nomad's terms, streamed at an interval.

Sampling goes through ``jails.Runtime.sample`` (a few cgroup/racct reads, no process spawned). The
samples every stream wants at the same moment are taken together in one worker thread: streams tick
on a shared grid of their interval, so 100 tasks at 1 s cost one thread hop per second, and a slow
read (FreeBSD's ``rctl -u`` fallback) never blocks the event loop serving other RPCs.

CPU percent is derived here, per stream, from successive cumulative CPU times: the runtime keeps
only one previous sample per task, which concurrent streams of one task would overwrite.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from driver.ports import TaskSource
from jails import JailNotFound, Runtime, Usage

# Nomad's names for the fields it knows (plugins/drivers: MeasuredCPUStats / MeasuredMemStats).
PERCENT = "Percent"
USER_MODE = "User Mode"
SYSTEM_MODE = "System Mode"
TOTAL_TICKS = "Total Ticks"
THROTTLED_PERIODS = "Throttled Periods"
THROTTLED_TIME = "Throttled Time"
RSS = "RSS"
CACHE = "Cache"
SWAP = "Swap"
USAGE = "Usage"
MAX_USAGE = "Max Usage"
KERNEL_USAGE = "Kernel Usage"
KERNEL_MAX_USAGE = "Kernel Max Usage"

CPU_FIELDS = (SYSTEM_MODE, USER_MODE, TOTAL_TICKS, THROTTLED_PERIODS, THROTTLED_TIME, PERCENT)
MEMORY_FIELDS = (RSS, CACHE, MAX_USAGE, KERNEL_USAGE, KERNEL_MAX_USAGE, USAGE, SWAP)

# The runtime's Usage field behind each memory figure Nomad shows.
_MEMORY_SOURCES = (
    (RSS, "memory_rss_bytes"),
    (USAGE, "memory_usage_bytes"),
    (MAX_USAGE, "memory_max_usage_bytes"),
)

DEFAULT_INTERVAL_S = 1.0
# A zero or tiny interval would turn a stream into a busy loop of file reads.
MIN_INTERVAL_S = 0.05


@dataclass(frozen=True)
class Topology:
    """The node's compute: what Nomad's fingerprint calls total compute (MHz) and usable cores."""

    total_compute_mhz: int
    cores: int
    source: str  # "nomad" (SetConfig's nomad_config) or "host" (read here as a fallback)

    def ticks(self, percent: float) -> float:
        """MHz consumed at ``percent`` (100 = one core), as Nomad's cpustats.TicksConsumed."""
        return (percent / 100.0) * self.total_compute_mhz / self.cores


def topology(total_compute_mhz: int, cores: int, source: str) -> Topology | None:
    if total_compute_mhz <= 0 or cores <= 0:
        return None
    return Topology(total_compute_mhz, cores, source)


def resolve_topology(nomad: Topology | None) -> Topology | None:
    """Nomad's figures when it sent them, else the host's own, else None (no Total Ticks)."""
    return nomad if nomad is not None else host_topology()


@functools.cache
def host_topology() -> Topology | None:
    """Cores and MHz as the host reports them: the fallback when a re-attached plugin never got
    SetConfig. Linux: /proc/cpuinfo (cpufreq's maximum when it has no MHz lines)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if not cores:
        return None
    mhz = _cpuinfo_mhz(Path("/proc/cpuinfo")) or _cpufreq_mhz(Path("/sys/devices/system/cpu"))
    if mhz is None:
        return None
    return topology(int(mhz * cores), cores, "host")


def _cpuinfo_mhz(path: Path) -> float | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    speeds = []
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "cpu MHz":
            with contextlib.suppress(ValueError):
                speeds.append(float(value))
    return max(speeds) if speeds else None


def _cpufreq_mhz(root: Path) -> float | None:
    try:
        return int((root / "cpu0/cpufreq/cpuinfo_max_freq").read_text()) / 1000.0
    except (OSError, ValueError):
        return None


# The three sample types are NamedTuples (immutable, typed): every stream builds one of each per
# interval, and frozen dataclasses cost about three times as much to build.
class CpuStats(NamedTuple):
    percent: float = 0.0
    user_percent: float = 0.0
    system_percent: float = 0.0
    total_ticks: float = 0.0
    throttled_periods: int = 0
    throttled_time: int = 0
    measured: tuple[str, ...] = ()


class MemoryStats(NamedTuple):
    rss: int = 0
    cache: int = 0
    swap: int = 0
    usage: int = 0
    max_usage: int = 0
    kernel_usage: int = 0
    kernel_max_usage: int = 0
    measured: tuple[str, ...] = ()


class TaskStatsSample(NamedTuple):
    """One TaskStats message's worth: a whole task (the jail and everything in it)."""

    timestamp_ns: int
    cpu: CpuStats
    memory: MemoryStats


class CpuTracker:
    """Turns cumulative CPU times into percentages between this tracker's successive samples.

    ``derive``: the runtime reports cumulative times and leaves the percent to us (Linux cgroups);
    otherwise the runtime's percent is the kernel's own estimate (FreeBSD racct pcpu) and is used
    as it is. The first sample is measured against ``since_ns`` (the task's start) when known.
    """

    def __init__(self, topo: Topology | None, *, derive: bool, since_ns: int | None = None) -> None:
        self.topo = topo
        self.derive = derive
        self._prev: tuple[int, int, int, int] | None = (
            (since_ns, 0, 0, 0) if since_ns is not None and since_ns > 0 else None
        )

    def update(self, u: Usage) -> CpuStats:
        prev = self._prev
        ts = u.timestamp_ns
        self._prev = (ts, u.cpu_total_ns, u.cpu_user_ns, u.cpu_system_ns)
        has_percent, has_total, has_user, has_system = _cpu_sources(u.measured)
        user = system = 0.0
        if not self.derive:
            if not has_percent:
                return _NO_CPU
            percent = u.cpu_percent
        elif has_total and prev is not None and ts > prev[0]:
            wall = ts - prev[0]
            percent = max(100.0 * (u.cpu_total_ns - prev[1]) / wall, 0.0)
            if has_user:
                user = max(100.0 * (u.cpu_user_ns - prev[2]) / wall, 0.0)
            if has_system:
                system = max(100.0 * (u.cpu_system_ns - prev[3]) / wall, 0.0)
        else:
            return _NO_CPU
        topo = self.topo
        ticks = topo.ticks(percent) if topo is not None else 0.0
        measured = _cpu_measured(self.derive and has_user, self.derive and has_system,
                                 topo is not None)
        return CpuStats(percent, user, system, ticks, measured=measured)


_NO_CPU = CpuStats()


# A backend names the same few field sets sample after sample: map each set once.
@functools.cache
def _cpu_sources(ours: tuple[str, ...]) -> tuple[bool, bool, bool, bool]:
    return ("cpu_percent" in ours, "cpu_total_ns" in ours, "cpu_user_ns" in ours,
            "cpu_system_ns" in ours)


@functools.cache
def _cpu_measured(user: bool, system: bool, ticks: bool) -> tuple[str, ...]:
    """Nomad's names of a sample's CPU fields (it has a percent), in Nomad's order."""
    names = {PERCENT} | ({USER_MODE} if user else set()) | ({SYSTEM_MODE} if system else set())
    names |= {TOTAL_TICKS} if ticks else set()
    return tuple(n for n in CPU_FIELDS if n in names)


@functools.cache
def _memory_measured(ours: tuple[str, ...]) -> tuple[str, ...]:
    names = {nomad for nomad, field in _MEMORY_SOURCES if field in ours}
    return tuple(n for n in MEMORY_FIELDS if n in names)


def memory_stats(u: Usage) -> MemoryStats:
    return MemoryStats(
        rss=u.memory_rss_bytes,
        usage=u.memory_usage_bytes,
        max_usage=u.memory_max_usage_bytes,
        measured=_memory_measured(u.measured),
    )


class Sampler:
    """Takes the samples asked for at one moment together, in one worker thread: those asked for
    "now" in one event-loop turn, and those asked for at one grid point (``sample_at``).

    Several streams of one task asking at once share one reading.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._pending: dict[str, list[asyncio.Future[Usage | None]]] = {}
        self._flush_scheduled = False
        self._inflight: set[asyncio.Task[None]] = set()
        self._ticks: dict[float, dict[str, list[asyncio.Future[Usage | None]]]] = {}

    @property
    def derive_cpu_percent(self) -> bool:
        return self.runtime.derive_cpu_percent

    async def sample(self, name: str) -> Usage:
        usage = await self.sample_now(name)
        assert usage is not None  # only a caller's own set_result(None) leaves None
        return usage

    def sample_now(self, name: str) -> asyncio.Future[Usage | None]:
        """A future resolved with a sample of ``name`` read at the end of this loop turn."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Usage | None] = loop.create_future()
        self._pending.setdefault(name, []).append(fut)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return fut

    def sample_at(self, name: str, when: float) -> asyncio.Future[Usage | None]:
        """A future resolved with a sample of ``name`` read at loop time ``when``: the streams
        ticking at one grid point share one timer and one thread hop, and each is woken once,
        with its sample. The caller may settle it early itself (the task exited: None) or
        cancel it; either way it is left out of the reading."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Usage | None] = loop.create_future()
        batch = self._ticks.get(when)
        if batch is None:
            batch = self._ticks[when] = {}
            loop.call_at(when, self._tick, when)
        batch.setdefault(name, []).append(fut)
        return fut

    async def started_at_ns(self, name: str) -> int | None:
        try:
            handle = await asyncio.to_thread(self.runtime.handle, name)
        except JailNotFound:
            return None
        return int(handle.started_at * 1e9) if handle.started_at > 0 else None

    def _flush(self) -> None:
        batch, self._pending = self._pending, {}
        self._flush_scheduled = False
        self._read(batch)

    def _tick(self, when: float) -> None:
        self._read(self._ticks.pop(when, {}))

    def _read(self, batch: dict[str, list[asyncio.Future[Usage | None]]]) -> None:
        # most names have one waiting stream: look at it before building a generator
        live = {name: futs for name, futs in batch.items()
                if not futs[0].done() or not all(f.done() for f in futs)}
        if not live:
            return
        task = asyncio.get_running_loop().create_task(self._run(live))
        self._inflight.add(task)  # keep a reference: the loop holds tasks only weakly
        task.add_done_callback(self._inflight.discard)

    async def _run(self, batch: dict[str, list[asyncio.Future[Usage | None]]]) -> None:
        results = await asyncio.to_thread(self._read_all, list(batch))
        for name, futs in batch.items():
            res = results[name]
            for fut in futs:
                if fut.done():  # its stream ended or was cancelled meanwhile
                    continue
                if isinstance(res, BaseException):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)

    def _read_all(self, names: list[str]) -> dict[str, Usage | Exception]:
        # raw samples: each stream's CpuTracker derives the percent (Runtime.stats' own
        # derivation would be computed and thrown away, sample after sample); all in one call,
        # which a backend may read in one go
        return self.runtime.sample_many(names)


def interval_or_default(seconds: float) -> float:
    """Nomad sends its telemetry collection_interval; zero or absent means the 1 s default."""
    if not math.isfinite(seconds) or seconds <= 0:
        return DEFAULT_INTERVAL_S
    return max(seconds, MIN_INTERVAL_S)


def next_tick(now: float, last: float, interval: float) -> float:
    """The next point of the shared grid (multiples of ``interval`` on the monotonic clock) at
    least half an interval after ``last``: streams of one interval sample together, and no two
    samples of one stream come closer than half an interval."""
    earliest = last + interval / 2
    tick = math.ceil(earliest / interval) * interval
    return max(tick, now)


async def stream(
    sampler: Sampler,
    name: str,
    interval_s: float,
    topo: Topology | None,
    exited: Callable[[], Awaitable[object]],
    since_ns: int | None = None,
) -> AsyncIterator[TaskStatsSample]:
    """One sample now, then one per interval, until the task exits or disappears (the consumer
    cancelling ends it too). ``exited()`` resolves when the task has exited.

    Between samples the stream waits on one future, resolved with its next sample at the next
    grid point or with None when the task exits: one wakeup per stream per tick."""
    interval = interval_or_default(interval_s)
    loop = asyncio.get_running_loop()
    done = asyncio.ensure_future(exited())
    pending: asyncio.Future[Usage | None] | None = None

    def wake_on_exit(_: object) -> None:
        if pending is not None and not pending.done():
            pending.set_result(None)

    done.add_done_callback(wake_on_exit)
    try:
        since = since_ns if since_ns is not None else await sampler.started_at_ns(name)
        tracker = CpuTracker(topo, derive=sampler.derive_cpu_percent, since_ns=since)
        await asyncio.sleep(0)  # let an already exited task's exited() resolve first
        if done.done():
            return
        pending = sampler.sample_now(name)
        while True:
            try:
                usage = await pending
            except JailNotFound:
                return
            if usage is None:
                return
            last = loop.time()
            yield TaskStatsSample(usage.timestamp_ns, tracker.update(usage), memory_stats(usage))
            if done.done():
                return
            pending = sampler.sample_at(name, next_tick(loop.time(), last, interval))
    finally:
        done.cancel()
        if pending is not None:
            pending.cancel()


# ---- what the TaskStats RPC calls ----

_samplers: weakref.WeakKeyDictionary[Runtime, Sampler] = weakref.WeakKeyDictionary()


def sampler_for(runtime: Runtime) -> Sampler:
    """The one sampler of a runtime, so every stream of the plugin shares its batches."""
    sampler = _samplers.get(runtime)
    if sampler is None:
        sampler = _samplers[runtime] = Sampler(runtime)
    return sampler


def task_stream(
    driver: TaskSource, task_id: str, interval_s: float, nomad_topology: Topology | None
) -> AsyncIterator[TaskStatsSample]:
    """TaskStats for one task of the driver; raises TaskNotFound for an unknown id."""
    entry = driver.task(task_id)
    since = int(entry.started_at * 1e9) if entry.started_at > 0 else None
    return stream(sampler_for(driver.runtime), entry.name, interval_s,
                  resolve_topology(nomad_topology), entry.wait, since)
