"""Build (once per state root, ``jails.cbuild``) and launch the per-task C supervisor
(``supervisor.c`` and the units listed in ``SOURCES``)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from jails import cbuild
from jails.errors import SupervisorError
from jails.taskdir import TaskDir, TaskPids

# The supervisor's C units (compiled together) and the internal header they share.
UNITS = ("supervisor.c", "sv_linux.c", "sv_jail.c", "sv_oomwatch.c")
SOURCES = (*UNITS, "sv.h")


def _sources() -> dict[str, bytes]:
    return cbuild.sources(SOURCES)


def _digest(sources: Mapping[str, bytes], defines: Sequence[str]) -> str:
    return cbuild.digest(sources, defines)


def ensure_binary(state_root: Path, cc: str = "cc", defines: Sequence[str] = ()) -> Path:
    """The supervisor binary for this source (and ``-D`` defines, for test builds), compiled
    into ``<state_root>/bin/`` on first use."""
    # Static when libc.a is there: smaller resident set per task (no ld.so, no shared libc).
    return cbuild.build(state_root, "xc-supervisor", SOURCES, UNITS,
                        flag_sets=(["-static"], []), defines=defines, cc=cc,
                        what="the task supervisor")


def launch(
    binary: Path,
    task: TaskDir,
    stdout_path: Path,
    stderr_path: Path,
    oom_file: Path | str | None,
    mode_args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 60.0,
) -> TaskPids:
    """Start the supervisor for ``task``; returns once the task runs (or raises why not).
    ``oom_file``: the memory cgroup file counting OOM kills (Linux), or ``jails.devd.watch_arg``
    (FreeBSD: the jail whose RCTL notifications devd forwards)."""
    argv = [
        str(binary),
        str(task.path),
        str(stdout_path),
        str(stderr_path),
        str(oom_file) if oom_file is not None else "-",
        *mode_args,
    ]
    # The launcher's own stdio is /dev/null: the supervisor must hold nothing of the caller's.
    proc = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(env) if env is not None else None,
        timeout=timeout_s,
        check=False,
    )
    if proc.returncode != 0:
        reason = task.start_error() or proc.stderr.decode(errors="replace").strip()
        raise SupervisorError(f"task {task.name} did not start: {reason}")
    pids = task.pids()
    if pids is None:
        raise SupervisorError(f"task {task.name}: supervisor reported success but no task.json")
    return pids


def start_time_via_binary(binary: Path) -> Callable[[int], int | None]:
    """A start-time probe that asks the supervisor binary (kinfo_proc on FreeBSD)."""

    def probe(pid: int) -> int | None:
        proc = subprocess.run(
            [str(binary), "--start-time", str(pid)], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            return None
        try:
            return int(proc.stdout.strip())
        except ValueError:
            return None

    return probe
