"""Linux backend: each task is a runc container built from the same JailSpec.

pid, mount, uts and ipc namespaces (the network is the host's, like ip4=inherit), bind mounts,
memory/cpu/pids limits in linux.resources, usage read from the container's cgroup files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import secrets
import shutil
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from jails import _cmd
from jails.cgbatch import BatchReader, ensure_library
from jails.cgroups import CGROUP_ROOT, CgroupPaths
from jails.errors import CommandFailed, JailError, NotRunning, SpecError
from jails.interactive import InteractiveExec, spawn_interactive
from jails.model import Usage
from jails.ociconfig import oci_config, task_env
from jails.pins import Pins
from jails.plans import BackendPlan, LinuxPlan
from jails.probe import cgroup_mode, probe_host
from jails.runtime import Runtime, TaskHandle, env_dict
from jails.spec import JailSpec, backend_network_modes
from jails.supervisor import ensure_binary, launch
from jails.taskdir import TaskDir, TaskPids, write_atomic

log = logging.getLogger("jails")

_GONE = ("does not exist", "not exist", "container not running", "not running")


class LinuxRuntime(Runtime):
    backend = "linux"
    init_exit_kills_all = True  # the container init is pid 1 of its own pid namespace
    prepare_needs_root = False  # only the user lookup reads the root; runc mounts at _launch

    def __init__(
        self,
        state_root: Path,
        *,
        runc_bin: str = "runc",
        runc_root: Path | None = None,
        cgroup_parent: str = "xc",
        runner: _cmd.Runner = _cmd.run,
    ) -> None:
        super().__init__(state_root)
        self.runc = runc_bin
        self._runc_abs: str | None = None
        self.runc_root = Path(runc_root) if runc_root is not None else self.state_root / "runc"
        self.cgroup_parent = cgroup_parent.strip("/")
        self.cgroup_mode = cgroup_mode()
        self.run = runner
        # one CgroupPaths per task: it keeps the task's stats files open between samples
        self._cgroups: dict[str, CgroupPaths] = {}
        self._cg_mu = threading.Lock()
        self._batch: BatchReader | None = None
        self._batch_failed = False  # it could not be built: sample task by task
        self.pins = Pins(self.state_root)
        self._starting: set[str] = set()  # names between pinning and launch (not garbage)
        self._pin_mu = threading.Lock()

    # ---- helpers -------------------------------------------------------------------------------

    def _runc_path(self) -> str:
        """runc as an absolute path, looked up once: the supervisor's execvp would otherwise try
        every PATH entry before it, on every start (unresolved, it fails there as before)."""
        if self._runc_abs is None:
            self._runc_abs = shutil.which(self.runc) or self.runc
        return self._runc_abs

    def _runc(self, *args: str) -> list[str]:
        return [self.runc, "--root", str(self.runc_root), *args]

    def cgroups_path(self, name: str) -> str:
        return f"/{self.cgroup_parent}/{name}"

    def cgroup(self, name: str) -> CgroupPaths:
        cg = self._cgroups.get(name)  # dict.get is atomic: the lock is only for adding one
        if cg is not None:
            return cg
        with self._cg_mu:
            cg = self._cgroups.get(name)
            if cg is None:
                cg = self._cgroups[name] = CgroupPaths(self.cgroups_path(name), self.cgroup_mode)
            return cg

    def _swap_accounting(self) -> bool:
        if self.cgroup_mode == "v2":
            return (CGROUP_ROOT / "cgroup.controllers").exists()
        return (CGROUP_ROOT / "memory" / "memory.memsw.limit_in_bytes").exists()

    # ---- Runtime hooks -------------------------------------------------------------------------

    def _prepare(self, spec: JailSpec, staging: Path) -> LinuxPlan:
        user = self._user_of(spec)
        rootfs = os.path.realpath(spec.rootfs)  # runc refuses a symlinked root
        # runc is given the pin points; _launch pins the sources onto them right before runc runs
        points = self.pins.points(spec.name, len(spec.mounts))
        mounts = tuple(dataclasses.replace(m, source=at)
                       for m, at in zip(spec.mounts, points, strict=True))
        config = oci_config(
            dataclasses.replace(spec, mounts=mounts),
            user,
            cgroups_path=self.cgroups_path(spec.name),
            rootfs=rootfs,
            swap_accounting=self._swap_accounting(),
        )
        bundle = staging / "bundle"
        bundle.mkdir(exist_ok=True)  # made already by a _prepare for a root that then moved
        # compact: an indent makes json fall back from its C encoder (1 ms of every start)
        write_atomic(bundle / "config.json", json.dumps(config, separators=(",", ":")).encode())
        return LinuxPlan(
            uid=user.uid,
            gid=user.gid,
            additional_gids=user.additional_gids,
            env=tuple(task_env(spec, user)),
            cwd=spec.cwd,
            cgroups_path=self.cgroups_path(spec.name),
            runc_root=str(self.runc_root),
        )

    def _load_plan(self, meta: Mapping[str, Any]) -> LinuxPlan:
        return LinuxPlan.from_json(meta)

    def start(self, spec: JailSpec,
              rootfs_ready: Callable[[], Path] | None = None) -> TaskHandle:
        if spec.network not in backend_network_modes(self.backend):
            # before any side effect: runc has no jail hierarchy to join
            raise SpecError("network", f"{spec.network!r} is FreeBSD only; on Linux a task joins "
                            "its alloc's network with network='netns' (AllocNetwork.netns_path)")
        try:
            return super().start(spec, rootfs_ready)
        finally:
            # the task's mounts exist now (or never will): the pins have done their job
            self._unpin(spec.name)

    def _unpin(self, name: str) -> None:
        try:
            self.pins.release(name)
        finally:
            with self._pin_mu:
                self._starting.discard(name)

    def sweep_garbage(self) -> list[str]:
        removed = super().sweep_garbage()
        names = self.pins.names()  # before the busy set: a start joins it before it pins
        with self._pin_mu:
            busy = set(self._starting)
        for name in names:
            if name not in busy:  # a start that crashed between pinning and launching
                with contextlib.suppress(JailError):
                    self.pins.release(name)
        return removed

    def _launch(self, spec: JailSpec, task: TaskDir) -> TaskPids:
        self.runc_root.mkdir(parents=True, exist_ok=True)
        binary = ensure_binary(self.state_root)
        try:
            return launch(
                binary,
                task,
                spec.stdout_path,
                spec.stderr_path,
                self.cgroup(spec.name).oom_file(),
                ["runc", self._runc_path(), str(self.runc_root), str(task.path / "bundle"),
                 spec.name],
            )
        except JailError as exc:
            detail = _runc_log_error(task.path / "runc.log")
            if detail:
                raise JailError(f"{exc}: {detail}") from exc
            raise

    def _signal(self, task: TaskDir, signum: int) -> None:
        try:
            self.run(self._runc("kill", task.name, str(int(signum))), timeout_s=30)
        except CommandFailed as exc:
            if any(g in exc.stderr for g in _GONE):
                raise NotRunning(task.name) from exc
            raise

    def _kill_all(self, name: str, plan: BackendPlan | None) -> None:
        try:
            self.run(self._runc("kill", "--all", name, "KILL"), timeout_s=30)
        except CommandFailed as exc:
            if not any(g in exc.stderr for g in _GONE):
                raise

    def _teardown(self, name: str, plan: BackendPlan | None) -> None:
        try:
            self.run(self._runc("delete", "--force", name), timeout_s=30)
        except CommandFailed as exc:
            if not any(g in exc.stderr for g in _GONE):
                raise
        self._unreserve(name)

    def _reserve(self, spec: JailSpec) -> None:
        # Made while the root may still be being cloned, off the start's critical path: the
        # cgroup (runc makes it as it starts the container, or joins an existing one) and the
        # bind sources' pins (start's finally releases them, whatever happens).
        self.cgroup(spec.name).create()
        with self._pin_mu:
            self._starting.add(spec.name)
        pinned = self.pins.pin(spec.name, [m.source for m in spec.mounts])
        if pinned != self.pins.points(spec.name, len(spec.mounts)):
            raise JailError(f"pin points of {spec.name} are not where config.json expects them")

    def _unreserve(self, name: str) -> None:
        with self._cg_mu:
            cg = self._cgroups.pop(name, None)
        (cg or CgroupPaths(self.cgroups_path(name), self.cgroup_mode)).remove()

    def _sample(self, task: TaskDir, full: bool) -> Usage:
        return self.cgroup(task.name).sample(full)

    def sample_many(self, names: Sequence[str]) -> dict[str, Usage | Exception]:
        reader = self._batch_reader()
        if reader is None:
            return super().sample_many(names)
        out: dict[str, Usage | Exception] = {}
        todo: list[tuple[str, CgroupPaths]] = []
        for name in names:
            # A task this runtime started or sampled has its cgroup here; once it is destroyed
            # its reads fail and the slow way below says JailNotFound.
            cg = self._cgroups.get(name)
            if cg is None:
                try:
                    cg = self.cgroup(self._task(name).name)
                except Exception as exc:  # JailNotFound: the stream that asked ends
                    out[name] = exc
                    continue
            todo.append((name, cg))
        got = reader.sample([cg for _, cg in todo])
        for (name, _), usage in zip(todo, got, strict=True):
            if usage is None:  # a read failed (the cgroup was made again): the slow way
                out.update(super().sample_many([name]))
            else:
                out[name] = usage
        return out

    def _batch_reader(self) -> BatchReader | None:
        """The C batch reader, built on first use; None (``sample`` per task) where it cannot
        be built or loaded."""
        with self._cg_mu:
            if self._batch is None and not self._batch_failed:
                try:
                    self._batch = BatchReader(ensure_library(self.state_root))
                except (JailError, OSError) as exc:
                    log.warning("cgroup batch reader unavailable; sampling task by task",
                                extra={"error": str(exc)})
                    self._batch_failed = True
            return self._batch

    def health(self) -> tuple[bool, str, dict[str, str]]:
        p = probe_host("linux", runc_bin=self.runc)
        return p.healthy, p.reason, p.attributes

    # ---- exec ----------------------------------------------------------------------------------

    def _exec_argv(
        self,
        task: TaskDir,
        argv: Sequence[str],
        env: Mapping[str, str] | None,
        pid_file: Path,
        tty: bool,
    ) -> list[str]:
        plan = LinuxPlan.from_json(task.spec())
        merged = env_dict(plan.env, env)
        args = ["exec", "--pid-file", str(pid_file), "--cwd", plan.cwd]
        args += ["--user", f"{plan.uid}:{plan.gid}"]
        for g in plan.additional_gids:
            args += ["--additional-gids", str(g)]
        for k, v in merged.items():
            args += ["--env", f"{k}={v}"]
        if tty:
            args.append("--tty")
        return self._runc(*args, task.name, *argv)

    def _pid_file(self, task: TaskDir) -> Path:
        return task.path / f".exec-{secrets.token_hex(6)}.pid"

    def exec_interactive(
        self,
        name: str,
        argv: Sequence[str],
        *,
        tty: bool = True,
        env: Mapping[str, str] | None = None,
        size: tuple[int, int] | None = None,
    ) -> InteractiveExec:
        task = self._exec_task(name, argv)
        pid_file = self._pid_file(task)
        full = self._exec_argv(task, argv, env, pid_file, tty=tty)
        # runc exec --tty (attached) proxies between its own terminal and the container's pty and
        # applies its terminal's size on SIGWINCH; its own terminal is a pty whose master we hand
        # out, so the caller gets a real terminal and runc's exit code is the command's.
        return spawn_interactive(
            full, tty=tty, size=size, raw=True, pid_file=pid_file, cleanup=[pid_file]
        )


def _runc_log_error(path: Path) -> str:
    """The last error message runc logged (json log format), if any."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        with contextlib.suppress(ValueError):
            rec = json.loads(line)
            if rec.get("level") in ("error", "fatal"):
                return str(rec.get("msg", ""))
    return ""
