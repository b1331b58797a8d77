"""The Runtime interface and what every backend shares: state dirs, start bookkeeping, wait,
status, stop escalation and idempotent destroy.

Every call works from a fresh process given the same ``state_root``: nothing lives only in memory
except the previous stats sample used for cpu_percent. Calls are blocking and thread-safe
(cross-process safety comes from flock on the task directory).
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import json
import os
import signal as signals
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jails.errors import (
    JailError,
    JailExists,
    JailNotFound,
    NotRunning,
    SupervisorError,
    WaitTimeout,
)
from jails.interactive import InteractiveExec
from jails.model import ExitStatus, Usage
from jails.plans import BackendPlan
from jails.procwait import ProcWatch, wait_pid_exit, wait_pids_exit
from jails.spec import JailSpec, check_host, check_rootfs
from jails.taskdir import (
    TaskDir,
    TaskDirs,
    TaskPids,
    boot_id,
    identity_alive,
    locked,
    pid_alive,
    remove_tree,
    write_atomic,
)
from jails.users import ResolvedUser, UserCache

IDENTITY_RECHECK_S = 30.0
# How long a waiter blocks on its process handles before looking again on its own. Exits wake it
# at once; this is only a backstop. The handles are held across looks, so a look is one stat of
# exit.json and one poll. Reopening them (and re-reading task.json) at every look kept an idle
# plugin with 100 tasks at 0.11-0.20% of a core; holding them, 0.03-0.08%.
WAIT_SLICE_S = 60.0


def _slice(wanted: float, deadline: float | None, name: str, timeout: float | None) -> float:
    """How long the next block of a wait may last; WaitTimeout once its deadline has passed."""
    if deadline is None:
        return wanted
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise WaitTimeout(name, timeout or 0.0)
    return min(wanted, remaining)


@dataclass(frozen=True)
class TaskHandle:
    """What start() returns; everything in it can be found again from the state dir."""

    name: str
    pid: int
    supervisor_pid: int
    state_dir: Path
    started_at: float


class Runtime(abc.ABC):
    """Runs tasks, one jail/container each, from frozen ``JailSpec``s; one instance per state root.

    The contract every backend keeps (tests/jails/conformance.py checks it on both):

    - ``start`` either returns a running task or raises with nothing left behind (the jail or
      container, its mounts, limits and state dir are undone); bad input raises ``SpecError``
      naming the field before any side effect.
    - Every call works from a fresh process given the same ``state_root``: a task outlives the
      plugin that started it, and the backend's ``spec.json`` plan (jails/plans.py) is all a
      later process needs to signal, exec into, stop and destroy it.
    - ``destroy`` and ``sweep_garbage`` are idempotent; destroying what is gone succeeds.
    - Calls block and are thread-safe; flock on the task dir makes them safe across processes.

    Backends implement the ``_``-prefixed hooks below; they never touch the state dir layout.
    """

    backend: str = ""
    # True when _sample leaves cpu_percent to be derived from successive cpu_total_ns samples.
    derive_cpu_percent: bool = True
    # True when the task's exit ends every process of its jail/container (a pid namespace).
    init_exit_kills_all: bool = False
    # True when _prepare looks into the root for more than the user (then it never runs before
    # the root is there, even with the user known already).
    prepare_needs_root: bool = True

    def __init__(self, state_root: Path) -> None:
        self.state_root = Path(state_root)
        self.state_root.mkdir(parents=True, exist_ok=True)
        self.dirs = TaskDirs(self.state_root)
        self._last_cpu: dict[str, tuple[int, int]] = {}
        self._mu = threading.Lock()
        self.users = UserCache()

    # ---- backend hooks -------------------------------------------------------------------------

    @abc.abstractmethod
    def _prepare(self, spec: JailSpec, staging: Path) -> BackendPlan:
        """Check the host-specific parts of spec and decide everything the task needs: the plan
        kept in spec.json. May write files into ``staging``; no other side effect (mounts,
        limits, pins belong to ``_launch``, whose undo is ``_teardown``)."""

    def _user_of(self, spec: JailSpec) -> ResolvedUser:
        """The task's user, from the root's /etc/passwd and /etc/group (once per root_id)."""
        return self.users.resolve(spec.rootfs, spec.root_id, spec.user, spec.group)

    @abc.abstractmethod
    def _load_plan(self, meta: Mapping[str, Any]) -> BackendPlan:
        """The plan of a spec.json this or an earlier plugin version wrote (JailError if not)."""

    @abc.abstractmethod
    def _launch(self, spec: JailSpec, task: TaskDir) -> TaskPids:
        """Create the jail/container and start the supervisor. Undo is ``_teardown``."""

    @abc.abstractmethod
    def _signal(self, task: TaskDir, signum: int) -> None: ...

    @abc.abstractmethod
    def _kill_all(self, name: str, plan: BackendPlan | None) -> None:
        """SIGKILL every process of the jail/container; no error if there are none."""

    @abc.abstractmethod
    def _teardown(self, name: str, plan: BackendPlan | None) -> None:
        """Remove the jail/container and everything it holds in the system (idempotent). plan is
        None when spec.json is missing or unreadable: undo what the name alone identifies."""

    @abc.abstractmethod
    def _sample(self, task: TaskDir, full: bool) -> Usage:
        """CPU times and memory; with ``full`` also the process count and memory limit where
        they cost extra reads (Usage.measured says which fields)."""

    def _plan_of(self, task: TaskDir) -> BackendPlan | None:
        """The task's plan, or None when its spec.json is gone or damaged (teardown then works
        from the name alone)."""
        try:
            return self._load_plan(task.spec())
        except JailError:
            return None

    @abc.abstractmethod
    def exec_interactive(
        self,
        name: str,
        argv: Sequence[str],
        *,
        tty: bool = True,
        env: Mapping[str, str] | None = None,
        size: tuple[int, int] | None = None,
    ) -> InteractiveExec:
        """Start argv inside the running task, as the task's user in its cwd, with the task's
        environment and ``env`` on top; with a pty when tty (size: cols, rows)."""

    @abc.abstractmethod
    def health(self) -> tuple[bool, str, dict[str, str]]:
        """(healthy, reason when not, fingerprint attributes) of this host for this backend."""

    # ---- shared operations ---------------------------------------------------------------------

    def start(self, spec: JailSpec,
              rootfs_ready: Callable[[], Path] | None = None) -> TaskHandle:
        """Create the jail/container and run the task; returns once it runs. JailExists when the
        name is taken; SpecError/HostUnsupported/JailError otherwise, with everything undone.

        ``rootfs_ready``: the root is still being made (a clone under way) and this waits for
        it, returning the root (spec.rootfs unless it moved) or raising why there is none, which
        fails the start. What needs no root is done before it is called."""
        check_host(spec, rootfs=rootfs_ready is None)
        self.sweep_garbage()  # first: a crashed start of this very name must not block it
        if self.dirs.get(spec.name) is not None:
            raise JailExists(spec.name)
        staging = self.dirs.new_staging(spec.name)
        reserved = False
        try:
            with locked(staging) as _:
                reserved = True  # before the effect: a half-made reservation is undone too
                self._reserve(spec)
                plan: BackendPlan | None = None
                if rootfs_ready is not None:
                    if not self.prepare_needs_root and self.users.get(
                            spec.root_id, spec.user, spec.group) is not None:
                        plan = self._prepare(spec, staging)  # beside the clone
                    rootfs = rootfs_ready()
                    if rootfs != spec.rootfs:
                        spec = dataclasses.replace(spec, rootfs=rootfs)
                        plan = None  # made for another path
                    check_rootfs(spec)
                if plan is None:
                    plan = self._prepare(spec, staging)
                created_at = time.time()
                meta = {
                    "backend": self.backend,
                    "name": spec.name,
                    "boot_id": boot_id(),
                    "created_at": created_at,
                    "rootfs": str(spec.rootfs),
                    "stdout_path": str(spec.stdout_path),
                    "stderr_path": str(spec.stderr_path),
                    **plan.to_json(),  # carries the format version "v"
                }
                write_atomic(staging / "spec.json",
                             json.dumps(meta, separators=(",", ":")).encode())  # C encoder
                task = self.dirs.publish(staging, spec.name)
                reserved = False  # the published task owns it: _undo_start's teardown undoes it
                try:
                    pids = self._launch(spec, task)
                except BaseException:
                    self._undo_start(spec.name, task.path, plan)
                    raise
        except BaseException:
            # not another start's: a task of this name published meanwhile owns the reservation
            if reserved and self.dirs.get(spec.name) is None:
                with contextlib.suppress(JailError, OSError):
                    self._unreserve(spec.name)
            remove_tree(staging)
            raise
        return TaskHandle(spec.name, pids.pid, pids.supervisor_pid, task.path, created_at)

    def _reserve(self, spec: JailSpec) -> None:  # noqa: B027 - an optional hook
        """What a start can make before its root exists (nothing by default)."""

    def _unreserve(self, name: str) -> None:  # noqa: B027 - an optional hook
        """Undo ``_reserve`` for a start that failed before its task was published."""

    def _undo_start(self, name: str, path: Path, plan: BackendPlan) -> None:
        retired = self.dirs.retire(name)
        with contextlib.suppress(JailError, OSError):
            self._kill_all(name, plan)
            self._teardown(name, plan)
        remove_tree(retired or path)

    def _exec_task(self, name: str, argv: Sequence[str]) -> TaskDir:
        """The running task to exec argv in; an empty command or a task not running is refused."""
        if not argv or not argv[0]:
            raise JailError("exec needs a command (argv must not be empty)")
        task = self._task(name)
        if task.exit_status() is not None or task.pids() is None:
            raise NotRunning(task.name)
        return task

    def _task(self, name: str) -> TaskDir:
        task = self.dirs.get(name)
        if task is None:
            raise JailNotFound(name)
        return task

    def exists(self, name: str) -> bool:
        """Whether a task of that name has a published state dir (running or not)."""
        return self.dirs.get(name) is not None

    def names(self) -> list[str]:
        """Every task of this state root, sorted."""
        return self.dirs.names()

    def handle(self, name: str) -> TaskHandle:
        """The start() result again, from the state dir (pids 0 before the task ran)."""
        task = self._task(name)
        pids = task.pids()
        meta = task.spec()
        return TaskHandle(
            name,
            pids.pid if pids else 0,
            pids.supervisor_pid if pids else 0,
            task.path,
            float(meta.get("created_at", 0.0)),
        )

    def status(self, name: str) -> str:
        """"running", "exited" or "unknown" (no such task, or its supervisor is gone unrecorded)."""
        task = self.dirs.get(name)
        if task is None:
            return "unknown"
        if task.exit_status() is not None:
            return "exited"
        if task.supervisor_alive():
            return "running"
        return "exited" if task.exit_status() is not None else "unknown"

    def exit_status(self, name: str) -> ExitStatus | None:
        """The recorded exit, or None while the task runs; JailNotFound for no such task."""
        return self._task(name).exit_status()

    def wait(self, name: str, timeout: float | None = None) -> ExitStatus:
        """Block until the task exits (WaitTimeout after timeout s). SupervisorError when its
        outcome cannot be known (supervisor killed, host rebooted, start interrupted)."""
        task = self._task(name)
        deadline = None if timeout is None else time.monotonic() + timeout
        pids: TaskPids | None = None  # fixed once the task runs: read until it is there
        watch: ProcWatch | None = None  # held on the supervisor and the task while both run
        verified_at = -1e9
        try:
            while True:
                status = task.exit_status()
                if status is not None:
                    return status
                if pids is None:
                    pids = task.pids()
                if pids is None:
                    err = task.start_error()
                    if err is None and task.path.exists():
                        with locked(task.path, blocking=False) as free:
                            if free and task.pids() is None:  # nobody is starting it: crashed
                                err = "its start was interrupted"
                    if err is not None or not task.path.exists():
                        raise SupervisorError(
                            f"task {name!r} never started: {err or 'state removed'}")
                    time.sleep(_slice(0.05, deadline, name, timeout))
                    continue
                if watch is None:
                    # Identities (start times) are checked in full now and then: on FreeBSD each
                    # check spawns a process, and a supervisor may linger a while after its task.
                    full = time.monotonic() - verified_at > IDENTITY_RECHECK_S
                    if full:
                        verified_at = time.monotonic()
                    if not (task.supervisor_alive() if full else
                            pid_alive(pids.supervisor_pid, pids.supervisor_start, full=False)):
                        status = task.exit_status()
                        if status is not None:
                            return status
                        raise SupervisorError(
                            f"the supervisor of task {name!r} is gone without recording an exit "
                            "status (killed, or the host rebooted); the task's outcome is unknown"
                        )
                    procs = [(pids.supervisor_pid, pids.supervisor_start)]
                    if not pid_alive(pids.pid, pids.pid_start, full=full):
                        # the task is gone: its exit status is being written right now
                        wait_pids_exit(procs, _slice(0.005, deadline, name, timeout))
                        continue
                    watch = ProcWatch.open([*procs, (pids.pid, pids.pid_start)])
                    if watch is None:  # one of them exited meanwhile: look again
                        continue
                # The watch wakes us when the task or its supervisor exits (exit.json comes
                # right after the task's exit, while the supervisor may linger draining log
                # FIFOs); the slice is only a backstop. A host runs hundreds of waiters, so each
                # look costs one stat and one poll.
                if watch.wait(_slice(WAIT_SLICE_S, deadline, name, timeout)):
                    watch.close()
                    watch = None  # one exited: see which, and wait for the rest afresh
        finally:
            if watch is not None:
                watch.close()

    def signal(self, name: str, signum: int) -> None:
        """Send signum to the task's main process; NotRunning once it exited."""
        task = self._task(name)
        if task.exit_status() is not None or task.pids() is None:
            raise NotRunning(name)
        self._signal(task, signum)

    def stop(self, name: str, signum: int = signals.SIGTERM, timeout_s: float = 5.0) -> ExitStatus:
        """Send signum, wait up to timeout_s, then SIGKILL everything in the jail/container."""
        task = self._task(name)
        status = task.exit_status()
        if status is not None:
            return status
        from jails.errors import NotRunning

        with contextlib.suppress(NotRunning):
            self.signal(name, signum)
        try:
            return self.wait(name, timeout_s)
        except WaitTimeout:
            pass
        self._kill_until_recorded(task, self._plan_of(task), 30.0)
        return self.wait(name, 5.0)

    def _kill_until_recorded(
        self, task: TaskDir, plan: BackendPlan | None, timeout_s: float
    ) -> None:
        """SIGKILL the jail/container's processes until the supervisor records the exit. Repeated
        because a process can still be joining (an exec session attaching) when the first kill
        runs."""
        deadline = time.monotonic() + timeout_s
        if self.init_exit_kills_all and task.exit_status() is not None:
            return  # the task's end took every process of the container with it
        while True:
            self._kill_all(task.name, plan)
            try:
                pids = task.pids()
            except JailError:
                return
            if pids is None or task.exit_status() is not None:
                return
            if not identity_alive(pids.supervisor_pid, pids.supervisor_start):
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            wait_pid_exit(pids.supervisor_pid, pids.supervisor_start, min(remaining, 0.2))

    def sample(self, name: str) -> Usage:
        """One raw usage sample of what a stats stream shows: cumulative CPU times and memory,
        no percent derived here (a caller keeping its own previous sample per reader, as the
        driver's TaskStats streams do, derives its own), and the process count only where it
        costs nothing more (FreeBSD's racct)."""
        return self._sample(self._task(name), False)

    def sample_many(self, names: Sequence[str]) -> dict[str, Usage | Exception]:
        """``sample`` of every name at once (a stats tick), each failure (JailNotFound, ...)
        as that name's value. A backend may read them all in one go."""
        out: dict[str, Usage | Exception] = {}
        for name in names:
            try:
                out[name] = self.sample(name)
            except Exception as exc:  # the caller hands it to whoever asked for that name
                out[name] = exc
        return out

    def stats(self, name: str) -> Usage:
        """One usage sample of the whole jail/container with everything the backend measures,
        the process count included (Usage.measured says which fields)."""
        usage = self._sample(self._task(name), True)
        with self._mu:
            prev = self._last_cpu.get(name)
            self._last_cpu[name] = (usage.timestamp_ns, usage.cpu_total_ns)
        if self.derive_cpu_percent and prev is not None and usage.timestamp_ns > prev[0]:
            pct = 100.0 * (usage.cpu_total_ns - prev[1]) / (usage.timestamp_ns - prev[0])
            usage = usage._replace(cpu_percent=max(pct, 0.0))
        return usage

    def destroy(self, name: str) -> None:
        """Kill, remove the jail/container and its state. Destroying what is gone succeeds."""
        path = self.dirs.root / name
        plan: BackendPlan | None = None
        with locked(path) as got:
            retired = None
            if got:
                task = TaskDir(path)
                plan = self._plan_of(task)
                # Let the supervisor record the exit before the directory goes away.
                self._kill_until_recorded(task, plan, 10.0)
                _wait_supervisor_gone(task, 10.0)
                retired = self.dirs.retire(name)
            else:
                self._kill_all(name, plan)
            self._teardown(name, plan)
            if retired is not None:
                remove_tree(retired)
        with self._mu:
            self._last_cpu.pop(name, None)

    def sweep_garbage(self) -> list[str]:
        """Remove half-created and half-deleted task dirs (never a live task's)."""
        removed = []
        for name, path in self.dirs.garbage():
            plan = self._plan_of(TaskDir(path))
            with contextlib.suppress(JailError, OSError):
                self._kill_all(name, plan)
                if self.dirs.get(name) is None or path.name.startswith("."):
                    self._teardown(name, plan)
            remove_tree(path)
            removed.append(name)
        return removed



def env_dict(env: Sequence[str], extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """``K=V`` entries as a dict, with ``extra`` on top (an exec's env over the task's)."""
    out: dict[str, str] = {}
    for item in env:
        k, _, v = str(item).partition("=")
        out[k] = v
    out.update(extra or {})
    return out


def _wait_supervisor_gone(task: TaskDir, timeout_s: float) -> None:
    try:
        pids = task.pids()
    except JailError:
        return
    if pids is None:
        return
    deadline = time.monotonic() + timeout_s
    while identity_alive(pids.supervisor_pid, pids.supervisor_start):
        if task.exit_status() is not None:
            # Recorded already; it only lingers to let a late reader drain the log FIFOs.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pids.supervisor_pid, signals.SIGTERM)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        wait_pid_exit(pids.supervisor_pid, pids.supervisor_start, min(remaining, 0.5))
