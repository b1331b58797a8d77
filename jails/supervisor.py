"""Build (once per state root) and launch the per-task C supervisor (``supervisor.c`` and the
units listed in ``SOURCES``).

The binary is named by a hash of every source file and the defines, compiled to a temporary name
and renamed into place, so concurrent first uses and upgrades never run a half-written or stale
binary.
"""

from __future__ import annotations

import functools
import hashlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path

from jails.errors import HostUnsupported, SupervisorError
from jails.taskdir import TaskDir, TaskPids

# The supervisor's C units (compiled together) and the internal header they share.
UNITS = ("supervisor.c", "sv_linux.c", "sv_jail.c", "sv_oomwatch.c")
SOURCES = (*UNITS, "sv.h")


def _sources() -> dict[str, bytes]:
    files = resources.files("jails")
    out = {}
    for name in SOURCES:
        try:
            out[name] = files.joinpath(name).read_bytes()
        except FileNotFoundError as exc:
            raise HostUnsupported(
                f"jails/{name} is not installed with the package: add it to package-data"
            ) from exc
    return out


def _digest(sources: Mapping[str, bytes], defines: Sequence[str]) -> str:
    h = hashlib.sha256()
    for name in sorted(sources):
        # Length-prefixed, so moving text between files or defines always changes the key.
        for part in (name.encode(), sources[name]):
            h.update(len(part).to_bytes(8, "big") + part)
    for d in defines:
        h.update(len(d).to_bytes(8, "big") + d.encode())
    return h.hexdigest()[:12]


@functools.cache
def _installed_digest(defines: tuple[str, ...]) -> str:
    # Once per process: every start asks, and the sources this process was started with are the
    # ones its launch protocol matches (an upgrade on disk is the next process's).
    return _digest(_sources(), defines)


def ensure_binary(state_root: Path, cc: str = "cc", defines: Sequence[str] = ()) -> Path:
    """The supervisor binary for this source (and ``-D`` defines, for test builds), compiled
    into ``<state_root>/bin/`` on first use."""
    digest = _installed_digest(tuple(defines))
    bindir = state_root / "bin"
    target = bindir / f"xc-supervisor-{digest}"
    if target.exists():
        return target
    sources = _sources()
    compiler = shutil.which(cc)
    if compiler is None:
        raise HostUnsupported(f"no C compiler {cc!r} to build the task supervisor: install gcc")
    bindir.mkdir(parents=True, exist_ok=True)
    tag = secrets.token_hex(4)
    srcdir = bindir / f".xc-supervisor-{tag}.src"
    tmp = bindir / f".xc-supervisor-{tag}"
    try:
        srcdir.mkdir()
        for name, content in sources.items():
            (srcdir / name).write_bytes(content)
        # Static when libc.a is there: smaller resident set per task (no ld.so, no shared libc).
        for extra in (["-static"], []):
            proc = subprocess.run(
                [compiler, "-O2", "-Wall", *extra, *(f"-D{d}" for d in defines),
                 "-o", str(tmp), *(str(srcdir / u) for u in UNITS)],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode == 0:
                break
        else:
            raise HostUnsupported(f"compiling the task supervisor failed: {proc.stderr.strip()}")
        os.chmod(tmp, 0o755)
        os.rename(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        shutil.rmtree(srcdir, ignore_errors=True)
    return target


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
