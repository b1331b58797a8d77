"""The one immutable description of a task to isolate: ``JailSpec`` with ``Mount`` and ``Limits``.

Construction validates every field and raises ``SpecError`` naming it, so a bad spec never reaches a
side effect. Filesystem facts (rootfs and mount sources exist) are checked by ``check_host`` which
the runtimes call first in ``start``.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from jails.errors import SpecError
from jails.names import is_valid_name

# Jail parameters a spec may carry (operator-approved pass-through, see jail(8)). Anything
# else (path, name, ip*, vnet, exec.*, mount*, persist) is owned by the backend and refused.
ALLOWED_JAIL_PARAM_PREFIXES = ("allow.",)
ALLOWED_JAIL_PARAMS = frozenset(
    {
        "securelevel",
        "devfs_ruleset",
        "enforce_statfs",
        "children.max",
        "sysvmsg",
        "sysvsem",
        "sysvshm",
        "osrelease",
        "osreldate",
        "linux.osname",  # with abi "linux": what uname(2) tells the image (jail(8) linux.*)
        "linux.osrelease",
    }
)
# "native": the image's binaries are the host OS's own; "linux": a Linux image run through
# FreeBSD's Linux ABI (linux64), with the file systems Linux programs expect (jails.linuxabi).
# The Linux backend runs both the same way: there the image is native.
ABIS = ("native", "linux")
# "host": the host's addresses (ip4=inherit, ip6=inherit / no netns of its own); "netns": join the
# existing network namespace at netns_path (Nomad's group network, or one jails.net made);
# "parent" (FreeBSD): the task jail is a child of the existing jail parent_jail and shares its
# network (the per-alloc jail jails.net makes: vnet or alias).
NETWORK_MODES = ("host", "netns", "parent")
# Which modes each backend can run: FreeBSD Nomad has no group networking (nomad#17311).
BACKEND_NETWORK_MODES: Mapping[str, tuple[str, ...]] = {
    "linux": ("host", "netns"),
    "freebsd": ("host", "parent"),
}
TASK_DIR_TARGETS = ("/alloc", "/local", "/secrets")


def _no_nul(fieldname: str, value: str) -> None:
    if "\0" in value:
        raise SpecError(fieldname, "must not contain a NUL byte")


def _abs_clean(fieldname: str, value: str) -> str:
    _no_nul(fieldname, value)
    if not value.startswith("/"):
        raise SpecError(fieldname, f"{value!r} must be an absolute path")
    if any(part == ".." for part in value.split("/")):
        raise SpecError(fieldname, f"{value!r} must not contain '..'")
    return posixpath.normpath(value)


def _mount_target(value: str, what: str) -> str:
    # normpath keeps a leading "//" (POSIX allows it a meaning); inside a task it has none.
    target = "/" + _abs_clean("mounts.target", value).lstrip("/")
    if target == "/":
        raise SpecError("mounts.target", f"cannot mount {what} over the task's root '/'")
    return target


@dataclass(frozen=True)
class Mount:
    """A host directory or file bind-mounted (nullfs on FreeBSD) at ``target`` inside the task."""

    source: Path
    target: str
    readonly: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", Path(_abs_clean("mounts.source", str(self.source))))
        object.__setattr__(self, "target", _mount_target(self.target, "a directory"))


@dataclass(frozen=True)
class Tmpfs:
    """A fresh memory file system at ``target`` inside the task (tmpfs on both backends).

    size_bytes: its capacity (0: the backend's default, half of RAM on Linux, all of RAM+swap on
    FreeBSD); mode: its root directory's permissions (docker's default: world-writable + sticky).
    """

    target: str
    size_bytes: int = 0
    mode: int = 0o1777
    readonly: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", _mount_target(self.target, "a tmpfs"))
        size = self.size_bytes
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise SpecError("mounts.size_bytes", f"{size!r} must be a byte count >= 0 "
                            "(0 for the backend's default)")
        mode = self.mode
        if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
            raise SpecError("mounts.mode", f"{mode!r} must be a permission mode 0..0o7777")


def _opt_positive(fieldname: str, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(fieldname, f"{value!r} must be an integer")
    if value <= 0:
        raise SpecError(fieldname, f"{value} must be positive (omit it for no limit)")


@dataclass(frozen=True)
class Limits:
    """Resource limits. ``None`` means unlimited.

    memory_bytes: the reservation / soft target (Nomad ``memory``); memory_max_bytes: the hard limit
    (Nomad ``memory_max``); when only memory_bytes is set it is also the hard limit.
    cpu_shares: relative weight (Linux cpu.shares; no FreeBSD equivalent). cpu_percent: hard cap in
    percent of one core (200 = two cores). cpuset: the host CPUs the task is pinned to.
    """

    memory_bytes: int | None = None
    memory_max_bytes: int | None = None
    cpu_shares: int | None = None
    cpu_percent: int | None = None
    max_processes: int | None = None
    open_files: int | None = None
    cpuset: tuple[int, ...] = ()  # host CPUs the task may run on (Nomad "cores"); () = any

    def __post_init__(self) -> None:
        for name in (
            "memory_bytes",
            "memory_max_bytes",
            "cpu_shares",
            "cpu_percent",
            "max_processes",
            "open_files",
        ):
            _opt_positive(f"limits.{name}", getattr(self, name))
        cpus = tuple(self.cpuset)
        for c in cpus:
            if isinstance(c, bool) or not isinstance(c, int) or c < 0:
                raise SpecError("limits.cpuset", f"{c!r} is not a CPU number")
        if len(set(cpus)) != len(cpus):
            raise SpecError("limits.cpuset", f"{cpus} lists a CPU twice")
        object.__setattr__(self, "cpuset", tuple(sorted(cpus)))
        if self.memory_bytes is not None and self.memory_bytes < 4 * 1024 * 1024:
            raise SpecError(
                "limits.memory_bytes", f"{self.memory_bytes} is below the 4 MiB minimum"
            )
        if (
            self.memory_max_bytes is not None
            and self.memory_bytes is not None
            and self.memory_max_bytes < self.memory_bytes
        ):
            raise SpecError(
                "limits.memory_max_bytes",
                f"{self.memory_max_bytes} is below memory_bytes {self.memory_bytes}",
            )

    @property
    def cpuset_list(self) -> str:
        """The cpuset as cpuset(1) / cgroup cpuset.cpus want it: "0,2,3"."""
        return ",".join(str(c) for c in self.cpuset)

    @property
    def memory_hard_bytes(self) -> int | None:
        return self.memory_max_bytes if self.memory_max_bytes is not None else self.memory_bytes


@dataclass(frozen=True)
class JailSpec:
    """One isolated task. Build it with keyword arguments; every field is validated here."""

    name: str
    rootfs: Path
    argv: tuple[str, ...]
    stdout_path: Path
    stderr_path: Path
    hostname: str = ""
    env: tuple[tuple[str, str], ...] = ()
    user: str = "root"
    group: str | None = None
    cwd: str = "/"
    mounts: tuple[Mount, ...] = ()
    tmpfs: tuple[Tmpfs, ...] = ()  # memory file systems, mounted among ``mounts`` by depth
    readonly_root: bool = False  # the rootfs read-only; mounts, /dev and /dev/shm stay as they are
    network: str = "host"
    netns_path: str = ""  # with network="netns": the namespace to join (/var/run/netns/<id>)
    parent_jail: str = ""  # with network="parent": the jail this task's jail is a child of
    limits: Limits = field(default_factory=Limits)
    jail_params: tuple[tuple[str, str], ...] = ()
    abi: str = "native"  # see ABIS
    # What the root holds (the image's layer chain, say): roots with one id have the same
    # /etc/passwd and /etc/group, so users are looked up once per id ("": every start looks).
    root_id: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not is_valid_name(self.name):
            raise SpecError(
                "name",
                f"{self.name!r} must be 1-63 characters of [A-Za-z0-9_-] starting with a letter or "
                "digit (use jails.names.jail_name)",
            )
        object.__setattr__(self, "rootfs", Path(_abs_clean("rootfs", str(self.rootfs))))
        if str(self.rootfs) == "/":
            raise SpecError("rootfs", "the host root '/' cannot be a task's rootfs")
        argv = tuple(self.argv) if not isinstance(self.argv, str) else None
        if not argv:
            raise SpecError("argv", "must be a non-empty list of strings (command and args)")
        for a in argv:
            if not isinstance(a, str):
                raise SpecError("argv", f"{a!r} is not a string")
            _no_nul("argv", a)
        if not argv[0]:
            raise SpecError("argv", "the command (argv[0]) must not be empty")
        object.__setattr__(self, "argv", argv)
        for fname in ("stdout_path", "stderr_path"):
            object.__setattr__(self, fname, Path(_abs_clean(fname, str(getattr(self, fname)))))
        hostname = self.hostname or self.name
        if len(hostname) > 63 or not all(c.isalnum() or c in "-_." for c in hostname):
            raise SpecError("hostname", f"{hostname!r} must be <= 63 chars of [A-Za-z0-9._-]")
        object.__setattr__(self, "hostname", hostname)
        object.__setattr__(self, "env", _env_pairs(self.env))
        if not self.user or ":" in self.user:
            raise SpecError("user", f"{self.user!r} must be a user name or numeric uid")
        _no_nul("user", self.user)
        _no_nul("root_id", self.root_id)
        if self.group is not None and (not self.group or ":" in self.group):
            raise SpecError("group", f"{self.group!r} must be a group name or numeric gid")
        object.__setattr__(self, "cwd", _abs_clean("cwd", self.cwd))
        seen: set[str] = set()
        for fname, kind in (("mounts", Mount), ("tmpfs", Tmpfs)):
            items = tuple(getattr(self, fname))
            for m in items:
                if not isinstance(m, kind):
                    raise SpecError(fname, f"{m!r} is not a jails.{kind.__name__}")
                if m.target in seen:
                    raise SpecError("mounts.target", f"{m.target!r} is mounted twice")
                seen.add(m.target)
            object.__setattr__(self, fname, items)
        if not isinstance(self.readonly_root, bool):
            raise SpecError("readonly_root", f"{self.readonly_root!r} must be true or false")
        if self.network not in NETWORK_MODES:
            raise SpecError(
                "network", f"{self.network!r} is not supported; use one of {NETWORK_MODES}"
            )
        if self.network == "netns":
            if not self.netns_path:
                raise SpecError("netns_path", "network 'netns' needs the namespace's path")
            netns = _abs_clean("netns_path", self.netns_path)
            if netns != self.netns_path or netns == "/":
                raise SpecError("netns_path", f"{self.netns_path!r} must be a clean absolute "
                                "path to a namespace file (e.g. /var/run/netns/<id>)")
        elif self.netns_path:
            raise SpecError("netns_path", f"is only valid with network 'netns' (not "
                            f"{self.network!r}); leave it empty")
        _check_parent(self.network, self.parent_jail)
        if not isinstance(self.limits, Limits):
            raise SpecError("limits", "must be a jails.Limits")
        params = tuple((str(k), str(v)) for k, v in _pairs(self.jail_params))
        for k, v in params:
            if k not in ALLOWED_JAIL_PARAMS and not k.startswith(ALLOWED_JAIL_PARAM_PREFIXES):
                raise SpecError(
                    "jail_params",
                    f"{k!r} is not an allowed jail parameter (allowed: allow.*, "
                    f"{', '.join(sorted(ALLOWED_JAIL_PARAMS))})",
                )
            _no_nul("jail_params", k + v)
        object.__setattr__(self, "jail_params", params)
        if self.abi not in ABIS:
            raise SpecError("abi", f"{self.abi!r} is not supported; use one of {ABIS}")

    def all_mounts(self) -> tuple[Mount | Tmpfs, ...]:
        """Bind and tmpfs mounts in mounting order: a parent before its children (stable
        otherwise), as docker does, so a tmpfs at /data never hides a bind at /data/x."""
        return tuple(sorted((*self.mounts, *self.tmpfs), key=_depth))

    def env_list(self) -> list[str]:
        return [f"{k}={v}" for k, v in self.env]


def _check_parent(network: str, parent: str) -> None:
    if network != "parent":
        if parent:
            raise SpecError("parent_jail", f"is only valid with network 'parent' (not "
                            f"{network!r}); leave it empty")
        return
    if not isinstance(parent, str) or not is_valid_name(parent):
        raise SpecError("parent_jail", f"{parent!r} must name the existing parent jail: 1-63 "
                        "characters of [A-Za-z0-9_-] (jails.net AllocNetwork.parent_jail)")


def _depth(m: Mount | Tmpfs) -> int:
    return m.target.count("/")


def _pairs(value: object) -> Iterable[tuple[object, object]]:
    if isinstance(value, Mapping):
        return list(value.items())
    return list(value)  # type: ignore[call-overload, no-any-return]


def _env_pairs(value: object) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    items: Iterable[object] = _pairs(value) if not isinstance(value, str) else [value]
    for item in items:
        k: object
        v: object
        if isinstance(item, str):
            if "=" not in item:
                raise SpecError("env", f"{item!r} must be KEY=VALUE")
            k, v = item.split("=", 1)
        elif isinstance(item, tuple) and len(item) == 2:
            k, v = item
        else:
            raise SpecError("env", f"{item!r} must be KEY=VALUE or a (key, value) pair")
        if not isinstance(k, str) or not isinstance(v, str):
            raise SpecError("env", f"{item!r}: keys and values must be strings")
        if not k or "=" in k:
            raise SpecError("env", f"{k!r} is not a valid variable name")
        _no_nul("env", k + v)
        out.append((k, v))
    return tuple(out)


def check_host(spec: JailSpec, rootfs: bool = True) -> None:
    """Filesystem preconditions, checked before any side effect of ``start`` (the root's only
    with ``rootfs``: one still being made is checked once it is there, ``check_rootfs``)."""
    if rootfs:
        check_rootfs(spec)
    for m in spec.mounts:
        if not m.source.exists():
            raise SpecError("mounts.source", f"{m.source} does not exist on the host")
    for fname in ("stdout_path", "stderr_path"):
        p: Path = getattr(spec, fname)
        if not p.parent.is_dir():
            raise SpecError(fname, f"directory {p.parent} does not exist")
    if spec.network == "netns" and not Path(spec.netns_path).exists():
        raise SpecError("netns_path", f"network namespace {spec.netns_path} does not exist "
                        "(the Nomad client creates it before the task starts)")


def backend_network_modes(backend: str) -> tuple[str, ...]:
    """The ``JailSpec.network`` values ``backend`` ("linux" or "freebsd") can run."""
    return BACKEND_NETWORK_MODES.get(backend, ("host",))


def check_rootfs(spec: JailSpec) -> None:
    if not spec.rootfs.is_dir():
        raise SpecError("rootfs", f"{spec.rootfs} is not an existing directory")
