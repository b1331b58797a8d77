"""Results the runtime hands back: exit status, resource usage, exec output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple


@dataclass(frozen=True)
class ExitStatus:
    """How a task ended. ``exit_code`` is 128+signal when killed by a signal (Nomad's convention);
    ``exit_code`` -1 means the supervisor lost the task (it was never its child)."""

    exit_code: int
    signal: int = 0
    oom_killed: bool = False
    finished_at: float = 0.0  # unix seconds

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExitStatus:
        return cls(
            exit_code=int(data["exit_code"]),
            signal=int(data.get("signal", 0)),
            oom_killed=bool(data.get("oom_killed", False)),
            finished_at=float(data.get("finished_at", 0.0)),
        )


class Usage(NamedTuple):
    """One resource sample of a whole jail/container (all its processes).

    ``measured`` names the fields this backend really measured; the others are 0. Immutable like
    the other results, but a NamedTuple: every TaskStats stream makes one per interval, and a
    frozen dataclass costs about three times as much to build."""

    timestamp_ns: int  # unix time of the sample
    cpu_user_ns: int = 0
    cpu_system_ns: int = 0
    cpu_total_ns: int = 0
    cpu_percent: float = 0.0  # of one core, since this runtime's previous sample of the task
    memory_rss_bytes: int = 0
    memory_usage_bytes: int = 0
    memory_max_usage_bytes: int = 0
    memory_limit_bytes: int = 0
    pids: int = 0
    measured: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes
