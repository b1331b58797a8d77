"""driver.stats' pure parts: CPU percent and ticks, measured fields, topology, the sampling grid;
and the TaskStats proto conversions (round trips)."""

from __future__ import annotations

from pathlib import Path

import pytest

from driver import convert_io
from driver import stats as st
from driver.convert import NomadInfo, nomad_info_from_proto, nomad_info_to_proto
from jails import Usage

S = 1_000_000_000
LINUX_MEASURED = (
    "cpu_user_ns", "cpu_system_ns", "cpu_total_ns", "cpu_percent",
    "memory_rss_bytes", "memory_usage_bytes", "memory_max_usage_bytes", "pids",
)


def usage(t_s: float, total_s: float, user_s: float = 0, sys_s: float = 0, **kw: object) -> Usage:
    base: dict[str, object] = {
        "timestamp_ns": int(t_s * S),
        "cpu_total_ns": int(total_s * S),
        "cpu_user_ns": int(user_s * S),
        "cpu_system_ns": int(sys_s * S),
        "measured": LINUX_MEASURED,
    }
    base.update(kw)
    return Usage(**base)  # type: ignore[arg-type]


TOPO = st.Topology(total_compute_mhz=8000, cores=4, source="nomad")


def test_ticks_follow_nomads_formula() -> None:
    # (percent/100) * total_compute / cores: one full core of a 4 x 2000 MHz node is 2000 MHz.
    assert TOPO.ticks(100.0) == 2000.0
    assert TOPO.ticks(250.0) == 5000.0
    assert TOPO.ticks(0.0) == 0.0


def test_cpu_percent_between_samples() -> None:
    tr = st.CpuTracker(TOPO, derive=True)
    first = tr.update(usage(100, 10, 6, 4))
    assert first.measured == ()  # nothing to compare with and no start time: nothing claimed
    second = tr.update(usage(102, 13, 7.5, 5.5))  # 3 s of CPU in 2 s: 150 %
    assert second.percent == pytest.approx(150.0)
    assert second.user_percent == pytest.approx(75.0)
    assert second.system_percent == pytest.approx(75.0)
    assert second.total_ticks == pytest.approx(3000.0)
    assert second.measured == (st.SYSTEM_MODE, st.USER_MODE, st.TOTAL_TICKS, st.PERCENT)
    idle = tr.update(usage(103, 13, 7.5, 5.5))
    assert (idle.percent, idle.total_ticks) == (0.0, 0.0)
    assert st.PERCENT in idle.measured  # a measured zero is still measured


def test_first_sample_measured_since_task_start() -> None:
    tr = st.CpuTracker(None, derive=True, since_ns=96 * S)
    c = tr.update(usage(100, 2))  # 2 s of CPU in the task's first 4 s: 50 %
    assert c.percent == pytest.approx(50.0)
    assert st.TOTAL_TICKS not in c.measured  # no topology: no ticks claimed
    assert c.total_ticks == 0.0


def test_counter_reset_never_goes_negative() -> None:
    tr = st.CpuTracker(TOPO, derive=True)
    tr.update(usage(100, 50))
    assert tr.update(usage(101, 10)).percent == 0.0


def test_backend_percent_used_when_not_derived() -> None:
    # FreeBSD racct: pcpu is the kernel's estimate, cputime whole seconds; no user/system split.
    tr = st.CpuTracker(TOPO, derive=False)
    u = Usage(timestamp_ns=5 * S, cpu_total_ns=3 * S, cpu_percent=37.0,
              memory_rss_bytes=10, memory_usage_bytes=10,
              measured=("cpu_total_ns", "cpu_percent", "memory_rss_bytes", "memory_usage_bytes"))
    c = tr.update(u)
    assert c.percent == 37.0
    assert c.total_ticks == pytest.approx(740.0)
    assert c.measured == (st.TOTAL_TICKS, st.PERCENT)
    m = st.memory_stats(u)
    assert m.measured == (st.RSS, st.USAGE)
    assert (m.rss, m.usage, m.max_usage) == (10, 10, 0)


def test_memory_fields_named_only_when_measured() -> None:
    u = usage(1, 0, memory_rss_bytes=5, memory_usage_bytes=7, memory_max_usage_bytes=9)
    m = st.memory_stats(u)
    assert (m.rss, m.usage, m.max_usage) == (5, 7, 9)
    assert m.measured == (st.RSS, st.MAX_USAGE, st.USAGE)
    # cgroup v2 without memory.peak: max usage is not claimed
    v2 = usage(1, 0, measured=("cpu_total_ns", "memory_rss_bytes", "memory_usage_bytes"))
    assert st.memory_stats(v2).measured == (st.RSS, st.USAGE)


def test_topology_from_nomad_config_and_fallback(tmp_path: Path) -> None:
    info = nomad_info_from_proto(nomad_info_to_proto(NomadInfo(0, 0, 7200, 3)))
    topo = st.topology(info.total_compute_mhz, info.cores, "nomad")
    assert topo == st.Topology(7200, 3, "nomad")
    assert st.resolve_topology(topo) is topo
    assert st.topology(0, 4, "nomad") is None and st.topology(1000, 0, "nomad") is None
    host = st.resolve_topology(None)
    if Path("/proc/cpuinfo").exists() and "cpu MHz" in Path("/proc/cpuinfo").read_text():
        assert host is not None and host.source == "host"
        assert host.cores >= 1 and host.total_compute_mhz >= host.cores
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\ncpu MHz\t\t: 2400.125\nprocessor\t: 1\ncpu MHz\t\t: 2600.5\n")
    assert st._cpuinfo_mhz(cpuinfo) == 2600.5
    assert st._cpuinfo_mhz(tmp_path / "absent") is None
    freq = tmp_path / "cpu" / "cpu0" / "cpufreq"
    freq.mkdir(parents=True)
    (freq / "cpuinfo_max_freq").write_text("3100000\n")
    assert st._cpufreq_mhz(tmp_path / "cpu") == 3100.0


def test_interval_default_and_floor() -> None:
    assert st.interval_or_default(0) == st.DEFAULT_INTERVAL_S
    assert st.interval_or_default(-1) == st.DEFAULT_INTERVAL_S
    assert st.interval_or_default(float("nan")) == st.DEFAULT_INTERVAL_S
    assert st.interval_or_default(0.001) == st.MIN_INTERVAL_S
    assert st.interval_or_default(2.5) == 2.5


def test_ticks_on_a_shared_grid() -> None:
    # Two streams that started at different moments sample at the same grid points.
    a = st.next_tick(now=10.3, last=10.3, interval=1.0)
    b = st.next_tick(now=10.45, last=10.45, interval=1.0)
    assert a == b == 11.0
    # never closer than half an interval to the previous sample
    assert st.next_tick(now=10.7, last=10.7, interval=1.0) == 12.0
    # behind schedule (a slow consumer): sample at once rather than in the past
    assert st.next_tick(now=20.0, last=10.0, interval=1.0) == 20.0


# ---- conversions ----


def sample(**cpu: object) -> st.TaskStatsSample:
    return st.TaskStatsSample(
        timestamp_ns=1_700_000_000_123_456_789,
        cpu=st.CpuStats(**{"percent": 12.5, "user_percent": 10.0, "system_percent": 2.5,
                           "total_ticks": 250.0, "measured": (st.USER_MODE, st.PERCENT), **cpu}),
        memory=st.MemoryStats(rss=4096, usage=8192, max_usage=16384,
                              measured=(st.RSS, st.MAX_USAGE, st.USAGE)),
    )


@pytest.mark.parametrize("s", [
    sample(),
    sample(percent=0.0, measured=()),
    sample(throttled_periods=3, throttled_time=99,
           measured=(st.THROTTLED_PERIODS, st.THROTTLED_TIME)),
    st.TaskStatsSample(1, st.CpuStats(), st.MemoryStats()),
])
def test_stats_round_trip(s: st.TaskStatsSample) -> None:
    assert convert_io.stats_from_proto(convert_io.stats_to_proto(s)) == s


def test_stats_proto_always_has_timestamp_and_aggregate() -> None:
    msg = convert_io.stats_to_proto(st.TaskStatsSample(1, st.CpuStats(), st.MemoryStats())).stats
    assert msg.HasField("timestamp") and msg.HasField("agg_resource_usage")
    assert msg.agg_resource_usage.HasField("cpu") and msg.agg_resource_usage.HasField("memory")
    full = convert_io.stats_to_proto(sample()).stats
    assert full.timestamp.seconds == 1_700_000_000 and full.timestamp.nanos == 123_456_789
    assert list(full.agg_resource_usage.cpu.measured_fields) == [1, 5]  # USER_MODE, PERCENT
    assert list(full.agg_resource_usage.memory.measured_fields) == [0, 2, 5]  # RSS, MAX, USAGE


def test_stats_request_round_trip() -> None:
    for interval in (1.0, 0.25, 10.0):
        req = convert_io.stats_request_to_proto("a/b/c", interval)
        assert convert_io.stats_request_from_proto(req) == ("a/b/c", interval)
    from plugin_proto import driver_pb2

    assert convert_io.stats_request_from_proto(driver_pb2.TaskStatsRequest(task_id="x")) == (
        "x", 0.0)
