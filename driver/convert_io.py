"""Pure conversions for TaskStats, ExecTask and ExecTaskStreaming (proto <-> driver types).

Each ``*_to_proto`` has a ``*_from_proto`` inverse; tests round-trip them.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterable

from google.protobuf import duration_pb2

from driver import stats as st
from driver.convert import NomadInfo
from driver.execmsg import (
    ExecInput,
    ExecOutcome,
    ExecOutput,
    Exited,
    Output,
    OutputClosed,
    Resize,
    Setup,
    StdinClose,
    StdinData,
)
from plugin_proto import driver_pb2

_CPU_ENUM = {
    st.SYSTEM_MODE: driver_pb2.CPUUsage.SYSTEM_MODE,
    st.USER_MODE: driver_pb2.CPUUsage.USER_MODE,
    st.TOTAL_TICKS: driver_pb2.CPUUsage.TOTAL_TICKS,
    st.THROTTLED_PERIODS: driver_pb2.CPUUsage.THROTTLED_PERIODS,
    st.THROTTLED_TIME: driver_pb2.CPUUsage.THROTTLED_TIME,
    st.PERCENT: driver_pb2.CPUUsage.PERCENT,
}
_MEM_ENUM = {
    st.RSS: driver_pb2.MemoryUsage.RSS,
    st.CACHE: driver_pb2.MemoryUsage.CACHE,
    st.MAX_USAGE: driver_pb2.MemoryUsage.MAX_USAGE,
    st.KERNEL_USAGE: driver_pb2.MemoryUsage.KERNEL_USAGE,
    st.KERNEL_MAX_USAGE: driver_pb2.MemoryUsage.KERNEL_MAX_USAGE,
    st.USAGE: driver_pb2.MemoryUsage.USAGE,
    st.SWAP: driver_pb2.MemoryUsage.SWAP,
}
_CPU_NAME = {v: k for k, v in _CPU_ENUM.items()}
_MEM_NAME = {v: k for k, v in _MEM_ENUM.items()}

# ---- durations ----


def duration_seconds(d: duration_pb2.Duration) -> float:
    return d.seconds + d.nanos / 1e9


def seconds_to_duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


# ---- TaskStats ----


def topology_from_nomad(info: NomadInfo | None) -> st.Topology | None:
    """The node's compute from SetConfig's nomad_config (None: not sent, or no figures in it)."""
    return st.topology(info.total_compute_mhz, info.cores, "nomad") if info else None


def stats_request_from_proto(req: driver_pb2.TaskStatsRequest) -> tuple[str, float]:
    """(task_id, interval seconds); an absent interval is 0 (the stream then uses its default)."""
    interval = duration_seconds(req.collection_interval) if req.HasField(
        "collection_interval") else 0.0
    return req.task_id, interval


def stats_request_to_proto(task_id: str, interval_s: float) -> driver_pb2.TaskStatsRequest:
    return driver_pb2.TaskStatsRequest(
        task_id=task_id, collection_interval=seconds_to_duration(interval_s))


def stats_to_proto(s: st.TaskStatsSample) -> driver_pb2.TaskStatsResponse:
    # Filled in place, field by field: every stream sends one per interval, and this is several
    # times cheaper than building the five nested messages from keyword arguments.
    c, m = s.cpu, s.memory
    resp = driver_pb2.TaskStatsResponse()
    stats = resp.stats
    stats.timestamp.seconds, stats.timestamp.nanos = divmod(s.timestamp_ns, 1_000_000_000)
    cpu = stats.agg_resource_usage.cpu
    cpu.system_mode = c.system_percent
    cpu.user_mode = c.user_percent
    cpu.total_ticks = c.total_ticks
    cpu.throttled_periods = c.throttled_periods
    cpu.throttled_time = c.throttled_time
    cpu.percent = c.percent
    cpu.measured_fields.extend(_cpu_enums(c.measured))
    mem = stats.agg_resource_usage.memory
    mem.rss = m.rss
    mem.cache = m.cache
    mem.swap = m.swap
    mem.usage = m.usage
    mem.max_usage = m.max_usage
    mem.kernel_usage = m.kernel_usage
    mem.kernel_max_usage = m.kernel_max_usage
    mem.measured_fields.extend(_mem_enums(m.measured))
    return resp


@functools.cache
def _cpu_enums(names: tuple[str, ...]) -> tuple[driver_pb2.CPUUsage._Fields.ValueType, ...]:
    return tuple(_CPU_ENUM[n] for n in names)


@functools.cache
def _mem_enums(names: tuple[str, ...]) -> tuple[driver_pb2.MemoryUsage._Fields.ValueType, ...]:
    return tuple(_MEM_ENUM[n] for n in names)


def stats_from_proto(resp: driver_pb2.TaskStatsResponse) -> st.TaskStatsSample:
    s = resp.stats
    c = s.agg_resource_usage.cpu
    m = s.agg_resource_usage.memory
    return st.TaskStatsSample(
        timestamp_ns=s.timestamp.ToNanoseconds(),
        cpu=st.CpuStats(
            percent=c.percent,
            user_percent=c.user_mode,
            system_percent=c.system_mode,
            total_ticks=c.total_ticks,
            throttled_periods=c.throttled_periods,
            throttled_time=c.throttled_time,
            measured=tuple(_CPU_NAME[f] for f in c.measured_fields),
        ),
        memory=st.MemoryStats(
            rss=m.rss,
            cache=m.cache,
            swap=m.swap,
            usage=m.usage,
            max_usage=m.max_usage,
            kernel_usage=m.kernel_usage,
            kernel_max_usage=m.kernel_max_usage,
            measured=tuple(_MEM_NAME[f] for f in m.measured_fields),
        ),
    )


# ---- ExecTask (unary) ----


def exec_request_from_proto(
    req: driver_pb2.ExecTaskRequest,
) -> tuple[str, tuple[str, ...], float | None]:
    """(task_id, argv, timeout seconds or None when Nomad sent none)."""
    timeout = duration_seconds(req.timeout) if req.HasField("timeout") else 0.0
    return req.task_id, tuple(req.command), timeout if timeout > 0 else None


def exec_request_to_proto(
    task_id: str, argv: Iterable[str], timeout_s: float | None
) -> driver_pb2.ExecTaskRequest:
    req = driver_pb2.ExecTaskRequest(task_id=task_id, command=list(argv))
    if timeout_s is not None:
        req.timeout.CopyFrom(seconds_to_duration(timeout_s))
    return req


def exec_outcome_to_proto(o: ExecOutcome) -> driver_pb2.ExecTaskResponse:
    # result is always set: Nomad's client dereferences it without a nil check.
    return driver_pb2.ExecTaskResponse(
        stdout=o.stdout, stderr=o.stderr,
        result=driver_pb2.ExitResult(exit_code=o.exit_code, signal=o.signal))


def exec_outcome_from_proto(resp: driver_pb2.ExecTaskResponse) -> ExecOutcome:
    """The inverse of exec_outcome_to_proto (``timed_out`` does not travel; it reads False)."""
    return ExecOutcome(
        exit_code=resp.result.exit_code, stdout=resp.stdout, stderr=resp.stderr,
        signal=resp.result.signal)


# ---- ExecTaskStreaming ----


def exec_inputs_from_proto(req: driver_pb2.ExecTaskStreamingRequest) -> tuple[ExecInput, ...]:
    """What one client message asks for, in the order it is to be done. Empty: a heartbeat."""
    out: list[ExecInput] = []
    if req.HasField("setup"):
        s = req.setup
        out.append(Setup(s.task_id, tuple(s.command), s.tty))
    if req.HasField("tty_size"):
        out.append(Resize(width=req.tty_size.width, height=req.tty_size.height))
    if req.HasField("stdin"):
        if req.stdin.data:
            out.append(StdinData(req.stdin.data))
        if req.stdin.close:
            out.append(StdinClose())
    return tuple(out)


def exec_inputs_to_proto(inputs: Iterable[ExecInput]) -> driver_pb2.ExecTaskStreamingRequest:
    req = driver_pb2.ExecTaskStreamingRequest()
    for i in inputs:
        if isinstance(i, Setup):
            req.setup.CopyFrom(driver_pb2.ExecTaskStreamingRequest.Setup(
                task_id=i.task_id, command=list(i.command), tty=i.tty))
        elif isinstance(i, Resize):
            req.tty_size.CopyFrom(driver_pb2.ExecTaskStreamingRequest.TerminalSize(
                width=i.width, height=i.height))
        elif isinstance(i, StdinData):
            req.stdin.data = i.data
        elif isinstance(i, StdinClose):
            req.stdin.close = True
    return req


async def exec_inputs_stream(
    requests: AsyncIterator[driver_pb2.ExecTaskStreamingRequest],
) -> AsyncIterator[tuple[ExecInput, ...]]:
    async for req in requests:
        yield exec_inputs_from_proto(req)


def exec_output_to_proto(o: ExecOutput) -> driver_pb2.ExecTaskStreamingResponse:
    if isinstance(o, Output | OutputClosed):
        frame = driver_pb2.ExecTaskStreamingIOOperation()
        if isinstance(o, Output):
            frame.data = o.data
        else:
            frame.close = True
        if o.stream == "stdout":
            return driver_pb2.ExecTaskStreamingResponse(stdout=frame)
        return driver_pb2.ExecTaskStreamingResponse(stderr=frame)
    return driver_pb2.ExecTaskStreamingResponse(
        exited=True, result=driver_pb2.ExitResult(exit_code=o.exit_code))


def exec_output_from_proto(resp: driver_pb2.ExecTaskStreamingResponse) -> ExecOutput:
    if resp.exited:
        return Exited(resp.result.exit_code)
    for stream in ("stdout", "stderr"):
        if resp.HasField(stream):
            frame = getattr(resp, stream)
            return OutputClosed(stream) if frame.close else Output(stream, frame.data)
    raise ValueError(f"exec response carries no output and no exit: {resp!r}")
