"""FreeBSD backend: one persistent jail per task, the task started by the supervisor entering the
jail itself (jail_attach, numeric ids, the task's own environment), rctl limits added before the
jail exists and removed after it is gone, usage read from racct.

Every external command goes through ``self.run`` (argv lists), so tests on Linux assert each
command line exactly; the supervisor binary and its launch are injectable for the same reason
(tests/fixtures/fakefreebsd.py runs this code unchanged on Linux).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import errno
import os
import platform
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from jails import _cmd
from jails.devd import DEVD_SEQPACKET_SOCKET, watch_arg
from jails.errors import (
    CommandFailed,
    HostUnsupported,
    JailError,
    NotRunning,
    SpecError,
)
from jails.fbsdmounts import (
    Held,
    check_bind,
    copy_file,
    ensure_mountpoint,
    inode_of,
    mount_plan,
    mountpoint_base,
    nullfs_file_binds,
    parse_mount_p,
)
from jails.interactive import InteractiveExec, spawn_interactive
from jails.jailparams import jail_create_argv, jail_ref
from jails.linuxabi import NOT_LOADED, check_abi_mounts, linux_abi_loaded
from jails.model import Usage
from jails.ociconfig import task_env
from jails.plans import BackendPlan, FreeBSDPlan, MountStep
from jails.probe import probe_host
from jails.rctl import parse_usage, rctl_rules, rule_filter, usage_from_racct
from jails.runtime import Runtime, TaskHandle, env_dict
from jails.spec import JailSpec
from jails.supervisor import ensure_binary, launch, start_time_via_binary
from jails.taskdir import TaskDir, TaskPids, set_start_time_probe
from jails.users import resolve_user

Launcher = Callable[..., TaskPids]
RACCT_DISABLED = "kern.racct.enable=0: add kern.racct.enable=1 to /boot/loader.conf and reboot"


def refuse_network(spec: JailSpec) -> None:
    """Host networking or a parent jail's (jails.net): Nomad has no group network
    (bridge/none/cni) on FreeBSD (nomad#17311), so a namespace to join cannot exist here."""
    if spec.network not in ("host", "parent"):
        raise SpecError(
            "network",
            f"{spec.network!r} (join {spec.netns_path}) is not available on FreeBSD: Nomad has no "
            'group networking there; use host networking (remove the group network block or set '
            'mode = "host")',
        )


def _gone(exc: CommandFailed, *needles: str) -> bool:
    text = exc.stderr.lower()
    return any(n.lower() in text for n in needles)


class FreeBSDRuntime(Runtime):
    backend = "freebsd"
    derive_cpu_percent = False  # racct's pcpu is the kernel's own estimate; cputime is whole s

    def __init__(
        self,
        state_root: Path,
        *,
        runner: _cmd.Runner = _cmd.run,
        launcher: Launcher | None = None,
        racct_reader: Callable[[str], str | None] | None = None,
        supervisor_bin: Path | None = None,
        release: str | None = None,
        inode_of: Callable[[str], int] = inode_of,
        jail_bin: str = "/usr/sbin/jail",
        jls_bin: str = "/usr/sbin/jls",
        rctl_bin: str = "/usr/bin/rctl",
        mount_bin: str = "/sbin/mount",
        umount_bin: str = "/sbin/umount",
        pkill_bin: str = "/bin/pkill",
        cpuset_bin: str = "/usr/bin/cpuset",
        devd_socket: str = DEVD_SEQPACKET_SOCKET,
        kldstat_bin: str = "/sbin/kldstat",
    ) -> None:
        super().__init__(state_root)
        self.run = runner
        self._launcher = launcher
        self._racct_reader = racct_reader if racct_reader is not None else _racct_syscall
        self._supervisor_bin = supervisor_bin
        self._inode_of = inode_of  # of a mountpoint, after the mount (tests without mounts fake it)
        # uname -r of the host (what the fingerprint reports): decides single-file nullfs binds
        self.release = release if release is not None else platform.release()
        self.jail_bin, self.jls_bin = jail_bin, jls_bin
        self.rctl_bin, self.mount_bin, self.umount_bin = rctl_bin, mount_bin, umount_bin
        self.pkill_bin = pkill_bin
        self.cpuset_bin = cpuset_bin
        self._refs: dict[str, str] = {}  # task name -> its jail's full name (jail_ref)
        self.devd_socket = devd_socket
        self.kldstat_bin = kldstat_bin
        if not Path("/proc/self/stat").exists():
            set_start_time_probe(start_time_via_binary(self._binary()))

    def _binary(self) -> Path:
        return self._supervisor_bin or ensure_binary(self.state_root)

    def start(self, spec: JailSpec,
              rootfs_ready: Callable[[], Path] | None = None) -> TaskHandle:
        refuse_network(spec)  # before any side effect, and before check_host looks for a netns
        if spec.abi == "linux" and not linux_abi_loaded(self.run, self.kldstat_bin):
            raise HostUnsupported(NOT_LOADED)
        return super().start(spec, rootfs_ready)

    # ---- Runtime hooks -------------------------------------------------------------------------

    def _prepare(self, spec: JailSpec, staging: Path) -> FreeBSDPlan:
        check_abi_mounts(spec)
        user = self._user_of(spec)
        jail_root = self._jail_root(spec)
        return FreeBSDPlan(
            user=user.name,
            uid=user.uid,
            gid=user.gid,
            groups=user.additional_gids,
            env=tuple(task_env(spec, user)),
            cwd=spec.cwd,
            mounts=mount_plan(spec, jail_root, file_binds=nullfs_file_binds(self.release)),
            jail_root=str(jail_root),
            rctl=tuple(rctl_rules(jail_ref(spec), spec.limits)),
            jail=jail_ref(spec) if spec.network == "parent" else "",
        )

    def _load_plan(self, meta: Mapping[str, Any]) -> FreeBSDPlan:
        return FreeBSDPlan.from_json(meta)

    def _launch(self, spec: JailSpec, task: TaskDir) -> TaskPids:
        plan = FreeBSDPlan.from_json(task.spec())
        # rctl first: the rules exist before any process of the jail does.
        for rule in plan.rctl:
            self._rctl_add(rule)
        self._mount_all(spec.rootfs, plan.mounts)
        jail_root = Path(plan.jail_root)
        self.run(jail_create_argv(dataclasses.replace(spec, rootfs=jail_root), self.jail_bin))
        jid = self._jid(jail_ref(spec))
        if jid is None:
            raise JailError(f"jail {jail_ref(spec)} vanished right after jail -c")
        if spec.limits.cpuset:
            # Pins the jail's root cpuset: every process of the jail, exec sessions included.
            self.run([self.cpuset_bin, "-l", spec.limits.cpuset_list, "-j", jid])
        mode = ["jail", *_entry_args(jid, _ids(plan, spec.rootfs), plan.cwd), *spec.argv]
        env = env_dict(plan.env)
        oom = self._oom_watch(spec)
        if self._launcher is not None:
            return self._launcher(task, spec.stdout_path, spec.stderr_path, mode, env, oom=oom)
        return launch(self._binary(), task, spec.stdout_path, spec.stderr_path, oom, mode,
                      env=env)

    def _mount_all(self, rootfs: Path, steps: Sequence[MountStep]) -> None:
        """Make each mountpoint without following the image's symlinks, then mount; a bind
        source is held open from before its mount and checked against the mount after it, so a
        source swapped in between fails the start (the caller's teardown unmounts)."""
        done: list[MountStep] = []
        for m in steps:
            if m.inner is None:
                Path(m.target).mkdir(parents=True, exist_ok=True)
            else:
                base, rel = mountpoint_base(rootfs, done, m.inner)
                if m.fs == "copy":
                    copy_file(m, base, rel)
                    done.append(m)
                    continue
                ensure_mountpoint(base, rel, want_dir=m.dir)
            held = Held.open(m.source) if m.fs == "nullfs" and m.inner is not None else None
            try:
                self.run([self.mount_bin, "-t", m.fs, "-o", m.opts, m.source, m.target])
                if held is not None:
                    check_bind(m, held, self._mounted_from(m.target), self._inode_of(m.target))
            finally:
                if held is not None:
                    held.close()
            done.append(m)

    def _mounted_from(self, target: str) -> str | None:
        """The source of what is mounted on target now (mount -p: statfs's f_mntfromname)."""
        table = parse_mount_p(self.run([self.mount_bin, "-p"]).stdout)
        return table.get(os.path.realpath(target))

    def _oom_watch(self, spec: JailSpec) -> str | None:
        """What the supervisor watches for OOM kills: devd's RCTL notifications of this jail's
        memory rule (jails.rctl.memory_rules), when it has one."""
        if spec.limits.memory_hard_bytes is None:
            return None
        return watch_arg(jail_ref(spec), self.devd_socket)

    def _jail_root(self, spec: JailSpec) -> Path:
        """The jail's path: the clone itself, or with readonly_root a read-only nullfs view of it
        that the runtime owns. A view, not the clone made read-only in place: that needs zfs
        (readonly=on), and nullfs refuses to mount a directory onto itself or below itself; a
        view may carry further mounts without touching the clone (mount_nullfs(8))."""
        if spec.readonly_root:
            return self.state_root / "roots" / spec.name
        return spec.rootfs

    def _rctl_add(self, rule: str) -> None:
        try:
            self.run([self.rctl_bin, "-a", rule])
        except CommandFailed as exc:
            if _gone(exc, "disabled", "enosys", "not present"):
                raise HostUnsupported(RACCT_DISABLED) from exc
            raise

    def _signal(self, task: TaskDir, signum: int) -> None:
        pids = task.pids()
        if pids is None or not task.supervisor_alive():
            raise NotRunning(task.name)
        try:
            os.kill(pids.pid, signum)  # the supervisor's child became the task (execvp)
        except ProcessLookupError as exc:
            raise NotRunning(task.name) from exc

    def _jid(self, name: str) -> str | None:
        res = self.run([self.jls_bin, "-j", name, "jid"], ok_codes=(0, 1))
        jid = res.stdout.strip()
        return jid if res.returncode == 0 and jid else None

    def _kill_all(self, name: str, plan: BackendPlan | None) -> None:
        jid = self._jid(_ref(name, plan))
        if jid is not None:
            self.run([self.pkill_bin, "-KILL", "-j", jid], ok_codes=(0, 1))

    def _teardown(self, name: str, plan: BackendPlan | None) -> None:
        name = _ref(name, plan)
        try:
            self.run([self.jail_bin, "-r", name])
        except CommandFailed as exc:
            if not _gone(exc, "not found", "no such"):
                raise
        mounts = plan.mounts if isinstance(plan, FreeBSDPlan) else ()
        for m in reversed(mounts):
            if not m.mounted:
                continue
            try:
                self.run([self.umount_bin, "-f", m.target])
            except CommandFailed as exc:
                if not _gone(exc, "not a file system root", "not mounted", "no such", "invalid"):
                    raise
        if mounts and mounts[0].inner is None:
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(mounts[0].target)  # the read-only view's mountpoint, unmounted above
        try:
            self.run([self.rctl_bin, "-r", rule_filter(name)])
        except CommandFailed as exc:
            # ESRCH: nothing matched, already clean; racct off: no rule can exist.
            if not _gone(exc, "no such process", "disabled", "not present"):
                raise

    def _sample(self, task: TaskDir, full: bool) -> Usage:  # racct has it all in one read
        ref = self._refs.get(task.name)
        if ref is None:  # read once per task and process: samples come every second
            ref = self._refs[task.name] = _ref(task.name, self._load_plan(task.spec()))
        subject = f"jail:{ref}"
        text = self._racct_reader(subject)
        if text is None:
            try:
                text = self.run([self.rctl_bin, "-u", subject]).stdout
            except CommandFailed as exc:
                if _gone(exc, "disabled", "not present"):
                    raise HostUnsupported(RACCT_DISABLED) from exc
                raise
        return usage_from_racct(parse_usage(text))

    def health(self) -> tuple[bool, str, dict[str, str]]:
        p = probe_host("freebsd")
        return p.healthy, p.reason, p.attributes

    # ---- exec ----------------------------------------------------------------------------------

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
        meta = task.spec()
        plan = FreeBSDPlan.from_json(meta)
        jid = self._jid(_ref(name, plan))
        if jid is None:
            raise NotRunning(name)
        ids = _ids(plan, Path(str(meta.get("rootfs", plan.jail_root))))
        full = [str(self._binary()), "--attach", *_entry_args(jid, ids, plan.cwd), *argv]
        # The supervisor enters the jail and becomes the command: the pty is the command's own
        # terminal, left in cooked mode; the environment is the task's with env on top.
        return spawn_interactive(full, tty=tty, env=env_dict(plan.env, env), size=size)


def _ref(name: str, plan: BackendPlan | None) -> str:
    """The kernel's name of the task's jail (``jail_ref``), as its plan recorded it."""
    return (plan.jail if isinstance(plan, FreeBSDPlan) else "") or name


def _ids(plan: FreeBSDPlan, rootfs: Path) -> tuple[int, int, tuple[int, ...]]:
    """uid, gid and supplementary groups; a v1 plan kept only the user's name (jexec -U)."""
    if plan.uid is not None and plan.gid is not None:
        return plan.uid, plan.gid, plan.groups
    user = resolve_user(rootfs, plan.user or "root", None)
    return user.uid, user.gid, user.additional_gids


def _entry_args(jid: str, ids: tuple[int, int, tuple[int, ...]], cwd: str) -> list[str]:
    """The supervisor's JID UID GID GROUPS CWD arguments."""
    uid, gid, groups = ids
    return [jid, str(uid), str(gid), ",".join(map(str, groups)) or "-", cwd]


def _racct_syscall(subject: str) -> str | None:
    """rctl_get_racct(2) through ctypes: one syscall per sample, no process. None when the
    function is unavailable (not FreeBSD); HostUnsupported when racct is disabled."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    libc = ctypes.CDLL(libc_name, use_errno=True)
    fn = getattr(libc, "rctl_get_racct", None)
    if fn is None:
        return None
    inbuf = subject.encode() + b"\0"
    outbuf = ctypes.create_string_buffer(4096)
    rc = fn(inbuf, len(inbuf), outbuf, len(outbuf))
    if rc != 0:
        err = ctypes.get_errno()
        if err == errno.ENOSYS:
            raise HostUnsupported(RACCT_DISABLED)
        raise JailError(f"rctl_get_racct({subject}): {os.strerror(err)}")
    return outbuf.value.decode()
