"""The jail spec of a task: image config, overridden by the task's ``config {}``, then Nomad's
settings (env, user, resources, alloc dir, volume mounts, log FIFOs). A pure function; every
refusal is a ``ConfigError`` naming the field to change.

Precedence follows Nomad's docker driver:
- argv: ``entrypoint`` (task, else image Entrypoint) + ``command``+``args`` (else ``args`` alone,
  else the image Cmd; a task entrypoint without command drops the image Cmd, like docker);
- env: the image's Env, then Nomad's task env (which carries NOMAD_* and the job's env block);
  NOMAD_ALLOC_DIR/TASK_DIR/SECRETS_DIR always name the in-jail paths (fs_isolation = image);
- user: Nomad's task ``user``, else the image User, else root; ``user:group`` is split;
- cwd: ``work_dir``, else the image WorkingDir, else /;
- disk: ``storage_opt size``, else the plugin's ``default_limits disk`` (else its max), capped by
  ``max_limits disk`` (``disk_quota_of``; the clone's refquota, not part of the spec);
- abi: a Linux image on the FreeBSD backend runs under FreeBSD's Linux ABI, and only when the
  operator set ``linux_images`` (``abi_of``); on Linux every image runs natively.
"""

from __future__ import annotations

import math
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType

from driver.config import ConfigError, PluginConfig, TaskConfig
from driver.network import NomadDNS, NomadNetwork
from driver.network import plan as network_plan
from driver.state import Resources
from driver.taskconfig import check_disk
from driver.tasknet import NomadPort
from jails import JailSpec, Limits, Mount, Tmpfs
from jails.errors import SpecError

ALLOC_TARGET, LOCAL_TARGET, SECRETS_TARGET = "/alloc", "/local", "/secrets"
MIB = 1024 * 1024


@dataclass(frozen=True)
class NomadMount:
    """A volume Nomad mounts into the task (``volume_mount`` of a host or CSI volume)."""

    host_path: str
    task_path: str
    readonly: bool = False


@dataclass(frozen=True)
class NomadTask:
    """What Nomad's TaskConfig says about a task, without protobuf."""

    id: str
    name: str
    alloc_id: str
    alloc_dir: str
    stdout_path: str
    stderr_path: str
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    user: str = ""
    resources: Resources = field(default_factory=Resources)
    percent_ticks: float = 0.0
    mounts: tuple[NomadMount, ...] = ()
    job_name: str = ""
    task_group_name: str = ""
    namespace: str = ""
    network: NomadNetwork | None = None  # network_isolation_spec (None: host networking)
    dns: NomadDNS | None = None
    ports: tuple[NomadPort, ...] = ()  # resources.ports: the group's allocated ports

    @property
    def task_dir(self) -> str:
        return posixpath.join(self.alloc_dir, self.name)


@dataclass(frozen=True)
class ImageDefaults:
    """The image config fields a task inherits."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    root_id: str = ""  # what its root holds (the layer chain): users are looked up once per id


@dataclass(frozen=True)
class Node:
    """The client's compute figures (SetConfig's nomad_config), for cpu hard limits."""

    total_compute_mhz: int = 0
    cores: int = 0


def argv_of(image: ImageDefaults, task: TaskConfig) -> tuple[str, ...]:
    entrypoint = task.entrypoint if task.entrypoint is not None else image.entrypoint
    if task.command is not None:
        cmd: tuple[str, ...] = (task.command, *task.args)
    elif task.args:
        cmd = tuple(task.args)
    elif task.entrypoint is not None:
        cmd = ()
    else:
        cmd = image.cmd
    argv = (*entrypoint, *cmd)
    if not argv or not argv[0]:
        raise ConfigError("config.command", "the image has no Entrypoint or Cmd to run",
                          'set command = "/path/in/image" (and args) in the task config')
    return argv


def env_of(image: ImageDefaults, nomad: NomadTask) -> tuple[tuple[str, str], ...]:
    env: dict[str, str] = {}
    for item in image.env:
        k, sep, v = item.partition("=")
        if k and sep:
            env[k] = v
    env.update(nomad.env)
    env["NOMAD_ALLOC_DIR"] = ALLOC_TARGET
    env["NOMAD_TASK_DIR"] = LOCAL_TARGET
    env["NOMAD_SECRETS_DIR"] = SECRETS_TARGET
    return tuple(env.items())


def user_of(image: ImageDefaults, nomad: NomadTask) -> tuple[str, str | None]:
    raw = nomad.user or image.user or "root"
    user, sep, group = raw.partition(":")
    if not user:
        user = "root"
    return user, (group or None) if sep else None


def limits_of(task: TaskConfig, nomad: NomadTask, plugin: PluginConfig, node: Node) -> Limits:
    res = nomad.resources
    memory = res.memory_mb * MIB if res.memory_mb > 0 else None
    memory_max = res.memory_max_mb * MIB if res.memory_max_mb > res.memory_mb else None
    # cpu.shares needs >= 2; Nomad's cpu is MHz, used as the relative weight like docker does.
    shares = max(res.cpu_mhz, 2) if res.cpu_mhz > 0 else None
    percent = None
    if task.cpu_hard_limit and res.cpu_mhz > 0:
        ticks = nomad.percent_ticks
        if ticks <= 0 and node.total_compute_mhz > 0:
            ticks = res.cpu_mhz / node.total_compute_mhz
        cores = node.cores or 1
        if ticks <= 0:
            raise ConfigError("config.cpu_hard_limit", "the client's total compute is unknown, "
                              "so the cpu share cannot become a hard limit",
                              "set cpu_hard_limit = false, or restart the agent")
        percent = max(1, math.ceil(ticks * cores * 100))
    defaults = plugin.default_limits.under(plugin.max_limits)
    maxproc = task.maxproc or defaults.maxproc or None
    openfiles = task.openfiles or defaults.openfiles or None
    for key, value in (("maxproc", maxproc), ("openfiles", openfiles)):
        cap = getattr(plugin.max_limits, key)
        if cap and value and value > cap:
            raise ConfigError(f"config.{key}", f"{value} is above this client's maximum {cap}",
                              f"set {key} to {cap} or less")
    try:
        return Limits(memory_bytes=memory, memory_max_bytes=memory_max, cpu_shares=shares,
                      cpu_percent=percent, max_processes=maxproc, open_files=openfiles,
                      cpuset=res.cpuset)
    except SpecError as exc:
        raise ConfigError("resources", exc.message,
                          "give the task memory >= 4 MiB and memory_max >= memory") from exc


def disk_quota_of(task: TaskConfig, plugin: PluginConfig) -> int | None:
    """The task root's refquota in bytes, or None for no quota."""
    check_disk(task, plugin)
    return task.storage_opt.size or plugin.default_limits.under(plugin.max_limits).disk or None


def abi_of(image_os: str, backend: str, plugin: PluginConfig) -> str:
    """The ``JailSpec.abi`` an image built for ``image_os`` runs under on ``backend``."""
    if backend != "freebsd" or image_os != "linux":
        return "native"
    if not plugin.linux_images:
        raise ConfigError("config.image", "is a Linux image and this FreeBSD client does not "
                          "run Linux images",
                          "use a FreeBSD image, or ask the operator to set linux_images = true "
                          "in the plugin config (it runs them through FreeBSD's Linux ABI)")
    return "linux"


def _inside(base: str, rel: str, origin: str) -> str:
    joined = posixpath.normpath(posixpath.join(base, rel))
    if joined != base and not joined.startswith(base.rstrip("/") + "/"):
        raise ConfigError(origin, f"{rel!r} leaves the task directory",
                          "use a path inside the task dir (e.g. local/data) or an absolute "
                          "host path the operator allows")
    return joined


def mounts_of(task: TaskConfig, nomad: NomadTask) -> tuple[Mount, ...]:
    out = [
        Mount(Path(nomad.alloc_dir) / "alloc", ALLOC_TARGET),
        Mount(Path(nomad.task_dir) / "local", LOCAL_TARGET),
        Mount(Path(nomad.task_dir) / "secrets", SECRETS_TARGET),
    ]
    reserved = {m.target for m in out}
    for m in task.mounts:
        if m.target in reserved:
            raise ConfigError(f"{m.origin}", f"{m.target} is where Nomad's directory is mounted",
                              "pick another target")
        if m.type == "tmpfs":
            reserved.add(m.target)  # tmpfs_of makes it
            continue
        source = m.source if m.source.startswith("/") else _inside(nomad.task_dir, m.source,
                                                                   m.origin)
        out.append(Mount(Path(source), m.target, m.readonly))
        reserved.add(m.target)
    for i, nm in enumerate(nomad.mounts):
        target = str(PurePosixPath(nm.task_path))
        if not target.startswith("/") or target in reserved:
            raise ConfigError(f"volume_mount[{i}]", f"destination {nm.task_path!r} is not an "
                              "absolute path or is already mounted", "change the volume_mount "
                              "destination in the job")
        out.append(Mount(Path(nm.host_path), target, nm.readonly))
        reserved.add(target)
    return tuple(out)


def tmpfs_of(task: TaskConfig) -> tuple[Tmpfs, ...]:
    """The task's ``mount { type = "tmpfs" }`` blocks; a mode left out is docker's 1777."""
    out = []
    for m in task.mounts:
        if m.type != "tmpfs":
            continue
        mode = 0o1777 if m.tmpfs_mode is None else m.tmpfs_mode
        try:
            out.append(Tmpfs(m.target, m.tmpfs_size, mode, m.readonly))
        except SpecError as exc:
            sub = {"mounts.size_bytes": "tmpfs_options.size", "mounts.mode": "tmpfs_options.mode"}
            raise ConfigError(f"{m.origin}.{sub.get(exc.field, 'target')}", exc.message,
                              "fix the mount block") from exc
    return tuple(out)


def compose(
    *,
    name: str,
    rootfs: Path,
    image: ImageDefaults,
    task: TaskConfig,
    nomad: NomadTask,
    plugin: PluginConfig,
    node: Node = Node(),
    abi: str = "native",
) -> JailSpec:
    user, group = user_of(image, nomad)
    net = network_plan(nomad.network, nomad.dns, nomad.task_dir)
    try:
        return JailSpec(
            name=name,
            rootfs=rootfs,
            argv=argv_of(image, task),
            stdout_path=Path(nomad.stdout_path),
            stderr_path=Path(nomad.stderr_path),
            hostname=task.hostname or net.hostname,
            env=env_of(image, nomad),
            user=user,
            group=group,
            cwd=task.work_dir or image.working_dir or "/",
            mounts=mounts_of(task, nomad) + net.mounts,
            tmpfs=tmpfs_of(task),
            readonly_root=task.readonly_rootfs,
            network=net.network,
            netns_path=net.netns_path,
            limits=limits_of(task, nomad, plugin, node),
            jail_params=tuple(task.jail_params.items()),
            abi=abi,
            root_id=image.root_id,
        )
    except SpecError as exc:
        raise ConfigError(spec_field(exc.field), exc.message,
                          "fix the task config or the image") from exc


def spec_field(field: str) -> str:
    """The task config field a JailSpec field comes from, for error messages."""
    return _FIELD_OF.get(field, field)


_FIELD_OF = {
    "argv": "config.command", "cwd": "config.work_dir", "hostname": "config.hostname",
    "user": "user", "group": "user", "env": "env", "mounts.target": "config.mount",
    "mounts.source": "config.mount", "jail_params": "config.jail_params",
    "network": "network", "netns_path": "network",
}
