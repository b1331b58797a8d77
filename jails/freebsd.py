"""FreeBSD backend: one persistent jail per task, the task started with jexec as its user, rctl
limits added before the jail exists and removed after it is gone, usage read from racct.

Every external command goes through ``self.run`` (argv lists), so tests on Linux assert each
command line exactly; the supervisor launch is injectable for the same reason.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import errno
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from jails import _cmd
from jails.errors import (
    CommandFailed,
    HostUnsupported,
    JailError,
    NotRunning,
    SpecError,
)
from jails.interactive import InteractiveExec, spawn_interactive
from jails.jailparams import jail_create_argv, jail_ref
from jails.model import Usage
from jails.ociconfig import task_env
from jails.probe import probe_host
from jails.rctl import parse_usage, rctl_rules, rule_filter, usage_from_racct
from jails.runtime import Runtime, TaskHandle, env_dict
from jails.spec import JailSpec, Mount, Tmpfs
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
        jail_bin: str = "/usr/sbin/jail",
        jexec_bin: str = "/usr/sbin/jexec",
        jls_bin: str = "/usr/sbin/jls",
        rctl_bin: str = "/usr/bin/rctl",
        mount_bin: str = "/sbin/mount",
        umount_bin: str = "/sbin/umount",
        pkill_bin: str = "/bin/pkill",
        cpuset_bin: str = "/usr/bin/cpuset",
    ) -> None:
        super().__init__(state_root)
        self.run = runner
        self._launcher = launcher
        self._racct_reader = racct_reader if racct_reader is not None else _racct_syscall
        self.jail_bin, self.jexec_bin, self.jls_bin = jail_bin, jexec_bin, jls_bin
        self.rctl_bin, self.mount_bin, self.umount_bin = rctl_bin, mount_bin, umount_bin
        self.pkill_bin = pkill_bin
        self.cpuset_bin = cpuset_bin
        self._refs: dict[str, str] = {}  # task name -> its jail's full name (jail_ref)
        if not Path("/proc/self/stat").exists():
            set_start_time_probe(start_time_via_binary(ensure_binary(self.state_root)))

    def start(self, spec: JailSpec) -> TaskHandle:
        refuse_network(spec)  # before any side effect, and before check_host looks for a netns
        return super().start(spec)

    # ---- Runtime hooks -------------------------------------------------------------------------

    def _prepare(self, spec: JailSpec, staging: Path) -> dict[str, Any]:
        user = resolve_user(spec.rootfs, spec.user, spec.group)
        if user.name is None:
            # jexec -U looks the user up in the jail's passwd by name.
            raise SpecError("user", f"{spec.user!r} must exist in the image's /etc/passwd")
        return {
            "user": user.name,
            "env": task_env(spec, user),
            "cwd": spec.cwd,
            "mounts": self._mount_plan(spec),
            "jail_root": str(self._jail_root(spec)),
            "rctl": rctl_rules(jail_ref(spec), spec.limits),
            "jail": jail_ref(spec),
        }

    def _launch(self, spec: JailSpec, task: TaskDir) -> TaskPids:
        meta = task.spec()
        # rctl first: the rules exist before any process of the jail does.
        for rule in meta["rctl"]:
            self._rctl_add(rule)
        done: list[Mapping[str, Any]] = []
        for m in meta["mounts"]:
            if m["inner"] is None:
                Path(m["target"]).mkdir(parents=True, exist_ok=True)
            else:
                base, rel = _mountpoint_base(spec.rootfs, done, m["inner"])
                _ensure_mountpoint(base, rel, want_dir=m["dir"])
            self.run([self.mount_bin, "-t", m["fs"], "-o", m["opts"], m["source"], m["target"]])
            done.append(m)
        jail_root = Path(meta["jail_root"]) if "jail_root" in meta else spec.rootfs
        self.run(jail_create_argv(dataclasses.replace(spec, rootfs=jail_root), self.jail_bin))
        if spec.limits.cpuset:
            # Pins the jail's root cpuset: every process of the jail, jexec'd ones included.
            jid = self._jid(meta["jail"])
            if jid is None:
                raise JailError(f"jail {spec.name} vanished right after jail -c")
            self.run([self.cpuset_bin, "-l", spec.limits.cpuset_list, "-j", jid])
        argv = [self.jexec_bin, "-U", meta["user"], meta["jail"], *_with_cwd(spec.cwd, spec.argv)]
        env = env_dict(meta["env"])
        if self._launcher is not None:
            return self._launcher(task, spec.stdout_path, spec.stderr_path, ["exec", *argv], env)
        return launch(
            ensure_binary(self.state_root),
            task,
            spec.stdout_path,
            spec.stderr_path,
            None,
            ["exec", *argv],
            env=env,
        )

    def _jail_root(self, spec: JailSpec) -> Path:
        """The jail's path: the clone itself, or with readonly_root a read-only nullfs view of it
        that the runtime owns. A view, not the clone made read-only in place: that needs zfs
        (readonly=on), and nullfs refuses to mount a directory onto itself or below itself; a
        view may carry further mounts without touching the clone (mount_nullfs(8))."""
        if spec.readonly_root:
            return self.state_root / "roots" / spec.name
        return spec.rootfs

    def _mount_plan(self, spec: JailSpec) -> list[dict[str, Any]]:
        """The mounts in mounting order (teardown unmounts them in reverse): the read-only root
        view first, then binds (nullfs) and tmpfs, parents before children. ``inner`` is the
        mountpoint inside the image (None: the view's own directory), ``dir`` whether it is a
        directory (a bound file needs a file)."""
        root = self._jail_root(spec)
        plan: list[dict[str, Any]] = []
        if root != spec.rootfs:
            plan.append({"fs": "nullfs", "opts": "ro", "source": str(spec.rootfs),
                         "target": str(root), "inner": None, "dir": True})
        for m in spec.all_mounts():
            entry: dict[str, Any] = {"target": str(root) + m.target, "inner": m.target}
            if isinstance(m, Mount):
                entry.update(fs="nullfs", opts="ro" if m.readonly else "rw",
                             source=str(m.source), dir=m.source.is_dir())
            else:
                entry.update(fs="tmpfs", opts=tmpfs_opts(m), source="tmpfs", dir=True)
            plan.append(entry)
        return plan

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
            os.kill(pids.pid, signum)  # jexec execvp's the command: its pid is the task's
        except ProcessLookupError as exc:
            raise NotRunning(task.name) from exc

    def _jid(self, name: str) -> str | None:
        res = self.run([self.jls_bin, "-j", name, "jid"], ok_codes=(0, 1))
        jid = res.stdout.strip()
        return jid if res.returncode == 0 and jid else None

    def _kill_all(self, name: str, meta: Mapping[str, Any] | None) -> None:
        jid = self._jid(_ref(name, meta))
        if jid is not None:
            self.run([self.pkill_bin, "-KILL", "-j", jid], ok_codes=(0, 1))

    def _teardown(self, name: str, meta: Mapping[str, Any] | None) -> None:
        name = _ref(name, meta)
        try:
            self.run([self.jail_bin, "-r", name])
        except CommandFailed as exc:
            if not _gone(exc, "not found", "no such"):
                raise
        for m in reversed(list((meta or {}).get("mounts", []))):
            try:
                self.run([self.umount_bin, "-f", m["target"]])
            except CommandFailed as exc:
                if not _gone(exc, "not a file system root", "not mounted", "no such", "invalid"):
                    raise
        jail_root = (meta or {}).get("jail_root")
        if jail_root and jail_root != (meta or {}).get("rootfs"):
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(jail_root)  # the view's mountpoint, unmounted above
        try:
            self.run([self.rctl_bin, "-r", rule_filter(name)])
        except CommandFailed as exc:
            if not _gone(exc, "no such process"):  # ESRCH: nothing matched, already clean
                raise

    def _sample(self, task: TaskDir) -> Usage:
        ref = self._refs.get(task.name)
        if ref is None:  # read once per task and process: samples come every second
            ref = self._refs[task.name] = _ref(task.name, task.spec())
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

    def _exec_argv(self, task: TaskDir, argv: Sequence[str]) -> list[str]:
        meta = task.spec()
        return [self.jexec_bin, "-U", meta["user"], _ref(task.name, meta),
                *_with_cwd(meta["cwd"], argv)]

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
        full = self._exec_argv(task, argv)
        # jexec becomes the command: the pty is the command's own terminal, left in cooked mode.
        return spawn_interactive(full, tty=tty, env=env_dict(task.spec()["env"], env), size=size)


def _ref(name: str, meta: Mapping[str, Any] | None) -> str:
    """The kernel's name of the task's jail (``jail_ref``), as recorded at start."""
    return str((meta or {}).get("jail") or name)


def _with_cwd(cwd: str, argv: Sequence[str]) -> list[str]:
    """jexec always starts in the jail's /; another cwd needs the image's /bin/sh to cd first."""
    if cwd == "/":
        return list(argv)
    return ["/bin/sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", cwd, *argv]


def tmpfs_opts(m: Tmpfs) -> str:
    """mount -o for tmpfs(5): size in bytes (absent: all of RAM+swap), octal root mode."""
    opts = ["nosuid"]
    if m.size_bytes:
        opts.append(f"size={m.size_bytes}")
    opts.append(f"mode={m.mode:o}")
    if m.readonly:
        opts.append("ro")
    return ",".join(opts)


def _mountpoint_base(
    rootfs: Path, done: Sequence[Mapping[str, Any]], inner: str
) -> tuple[Path, str]:
    """Where to make the mountpoint of ``inner``: in the innermost mount already made above it
    (a tmpfs at /alloc/x goes into what is mounted at /alloc), else in the clone itself, which
    the read-only root view shows as it is."""
    parents = [d for d in done if d["inner"] is not None and inner.startswith(d["inner"] + "/")]
    if not parents:
        return rootfs, inner
    parent = max(parents, key=lambda d: len(d["inner"]))
    return Path(parent["target"]), inner[len(parent["inner"]) :]


def _ensure_mountpoint(rootfs: Path, target: str, *, want_dir: bool) -> None:
    """Create target below rootfs without following any symlink of the image."""
    fd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        parts = [p for p in target.split("/") if p]
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if last and not want_dir:
                with contextlib.suppress(FileExistsError):
                    os.close(os.open(part, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644, dir_fd=fd))
                st = os.stat(part, dir_fd=fd, follow_symlinks=False)
                if not (st.st_mode & 0o170000) == 0o100000:
                    raise SpecError("mounts.target", f"{target} is not a regular file in the image")
                return
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
            try:
                nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                raise SpecError(
                    "mounts.target", f"{target}: {part!r} in the image is not a directory"
                ) from exc
            os.close(fd)
            fd = nfd
    finally:
        os.close(fd)


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
