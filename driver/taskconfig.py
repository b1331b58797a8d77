"""The task config: a job's ``task { driver = "xc" config {} }`` block, declared once.

Every option is a field of ``TaskConfig`` (or of a nested block's dataclass) carrying its HCL
type, default and fix hint (``driver.options``); ``TASK_SCHEMA`` and the decoder derive from them.
Names follow Nomad's docker driver where the meaning is the same. What the operator's plugin
config forbids is checked in ``check_task_allowed``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Any, Literal

from driver import cty, options
from driver import hclschema as hs
from driver import values as val
from driver.hclschema import ConfigError
from driver.options import Block, block, hint_of, keys, option
from driver.pluginconfig import PluginConfig

_HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                          r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


@dataclass(frozen=True)
class MountSpec:
    """A bind (nullfs on FreeBSD) or tmpfs mount into the task's root."""

    type: Literal["bind", "tmpfs"]
    source: str
    target: str
    readonly: bool = False
    tmpfs_size: int = 0
    tmpfs_mode: int | None = None
    origin: str = ""  # the config field it came from, for error messages


@dataclass(frozen=True)
class RegistryAuth:
    username: str = ""
    password: str = field(default="", repr=False)  # never in logs
    email: str = ""
    server_address: str = ""


# ---- per-field parsers ----


def _image(path: str, ref: str, hint: str) -> str:
    if any(c.isspace() for c in ref):
        raise ConfigError(path, f"{ref!r} contains whitespace", hint)
    return ref


def _hostname(path: str, name: str | None, hint: str) -> str | None:
    if name is not None and not _HOSTNAME_RE.match(name):
        raise ConfigError(path, f"{name!r} is not a host name", hint)
    return name


def _mount_type(path: str, kind: str, hint: str) -> str:
    if kind not in ("bind", "tmpfs"):
        raise ConfigError(path, f"{kind!r} is not a mount type", hint)
    return kind


def _mount_target(path: str, target: str, hint: str) -> str:
    t = val.absolute(path, target, hint)
    if t == "/":
        raise ConfigError(path, "cannot mount over the task's root /", hint)
    return t


def _octal_mode(path: str, value: Any, hint: str) -> int | None:
    if value is None:
        return None
    n = val.whole(path, value, hint)
    # HCL has no octal literals: 1777 is written meaning octal 1777, as docker's tmpfs mode.
    digits = str(n)
    if any(c not in "01234567" for c in digits) or int(digits, 8) > 0o7777:
        raise ConfigError(path, f"{n} is not a file mode", hint)
    return int(digits, 8)


def _jail_params(path: str, params: dict[str, str] | None, hint: str) -> Mapping[str, str]:
    for name in params or {}:
        if not val.JAIL_PARAM_RE.match(name):
            raise ConfigError(f"{path}.{name}", "not a jail parameter name",
                              'use names from jail(8), e.g. "allow.raw_sockets"')
    return MappingProxyType(dict(params or {}))


_SIZE_HINT = 'write storage_opt = { size = "1G" } (bytes, or k/m/g/t)'


@dataclass(frozen=True)
class StorageOpt:
    """docker's ``storage_opt``: ``size`` is the task root's disk quota in bytes (0: the
    plugin's default_limits.disk)."""

    size: int = 0


def _storage_opt(path: str, opts: dict[str, str] | None, hint: str) -> StorageOpt:
    for key in opts or {}:
        if key != "size":
            raise ConfigError(f"{path}.{key}", "not a storage option here (only size is)",
                              _SIZE_HINT)
    text = (opts or {}).get("size", "")
    return StorageOpt(val.size(f"{path}.size", text, _SIZE_HINT))


def _labels(path: str, labels: dict[str, str] | None, hint: str) -> Mapping[str, str]:
    return MappingProxyType(dict(labels or {}))


NETWORK_MODES = ("host", "bridge", "none", "alias")
_PORT_LABEL_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _network_mode(path: str, mode: str, hint: str) -> str:
    if mode not in NETWORK_MODES:
        raise ConfigError(path, f"unknown network mode {mode!r}", hint)
    return mode


def _port_labels(path: str, labels: tuple[str, ...], hint: str) -> tuple[str, ...]:
    seen: set[str] = set()
    for i, label in enumerate(labels):
        if not _PORT_LABEL_RE.match(label):
            raise ConfigError(f"{path}[{i}]", f"{label!r} is not a port label", hint)
        if label in seen:
            raise ConfigError(f"{path}[{i}]", f"{label!r} is listed twice", "list each label once")
        seen.add(label)
    return tuple(labels)


# ---- nested blocks ----


@dataclass(frozen=True)
class TmpfsOptions:
    size: int = option("number", "set size in bytes (0: no limit)", default=0, parse=val.whole)
    mode: int | None = option("number", "set mode as a number, e.g. 1777 for sticky "
                              "world-writable", parse=_octal_mode)


@dataclass(frozen=True, kw_only=True)
class MountBlock:
    """One ``mount {}`` block as written; ``_mounts`` turns it into a ``MountSpec``."""

    type: str = option("string", 'set type = "bind" or "tmpfs"', default="bind",
                       parse=_mount_type)
    source: str | None = option(
        "string", "set source to a host path (absolute, or relative to the task dir)")
    target: str = option("string", 'set target to an absolute path in the task, e.g. "/data"',
                         required=True, parse=_mount_target)
    readonly: bool = option("bool", "set readonly = true or false", default=False)
    tmpfs_options: TmpfsOptions = block(TmpfsOptions)


@dataclass(frozen=True)
class AuthBlock:
    """The task's ``auth {}`` as written; ``_auth`` turns it into a ``RegistryAuth`` or None."""

    username: str | None = option("string", 'set username = "user"')
    password: str | None = option("string", 'set password = "secret"', secret=True)
    email: str | None = option("string", 'set email = "user@example.com"')
    server_address: str | None = option("string",
                                        'set server_address = "registry.example.com"')


def _auth(path: str, a: AuthBlock, hint: str) -> RegistryAuth | None:
    if not any((a.username, a.password, a.email, a.server_address)):
        return None
    if not a.username or a.password is None:
        raise ConfigError(path, "needs both username and password",
                          'set auth { username = "..." password = "..." }')
    return RegistryAuth(a.username, a.password, a.email or "", a.server_address or "")


def _mount_spec(path: str, m: MountBlock) -> MountSpec:
    source = m.source or ""
    size, mode = m.tmpfs_options.size, m.tmpfs_options.mode
    if m.type == "bind" and not source:
        raise ConfigError(f"{path}.source", "required for a bind mount",
                          hint_of(MountBlock, "source"))
    if m.type == "tmpfs" and source:
        raise ConfigError(f"{path}.source", "a tmpfs mount has no source", "remove source")
    if m.type == "bind" and (size or mode is not None):
        raise ConfigError(f"{path}.tmpfs_options", "only for type = \"tmpfs\"",
                          "remove tmpfs_options or set type = \"tmpfs\"")
    kind: Literal["bind", "tmpfs"] = "bind" if m.type == "bind" else "tmpfs"
    return MountSpec(kind, source, m.target, m.readonly, size, mode, path)


def _volume_spec(path: str, vol: str, hint: str) -> MountSpec:
    parts = vol.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise ConfigError(path, f"{vol!r} is not host_path:task_path[:ro]", hint)
    readonly = False
    if len(parts) == 3:
        if parts[2] not in ("ro", "rw"):
            raise ConfigError(path, f"mode {parts[2]!r} is not ro or rw", hint)
        readonly = parts[2] == "ro"
    return MountSpec("bind", parts[0], _mount_target(path, parts[1], hint), readonly,
                     origin=path)


_VOLUMES_HINT = 'write each volume as "host_path:task_path[:ro]"'


def _mounts(path: str, v: Mapping[str, Any], hint: str) -> tuple[MountSpec, ...]:
    """``mount`` blocks then ``volumes`` strings, as one list of mounts with distinct targets."""
    out = [_mount_spec(f"{path}.mount[{i}]", m) for i, m in enumerate(v["mount"])]
    out += [_volume_spec(f"{path}.volumes[{i}]", s, _VOLUMES_HINT)
            for i, s in enumerate(v["volumes"])]
    seen: set[str] = set()
    for ms in out:
        if ".." in ms.source.split("/"):
            # An allow-list is checked on the text of the path: ".." could walk out of it.
            raise ConfigError(ms.origin, f"source {ms.source!r} contains '..'",
                              "write the path without '..' components")
        if ms.target in seen:
            raise ConfigError(ms.origin, f"a second mount targets {ms.target}",
                              "give each mount its own target")
        seen.add(ms.target)
    return tuple(out)


# ---- the task config ----


def _whole_option(key: str, meaning: str) -> Any:
    return option("number", f"set {key} to a whole number >= 0 (0: {meaning})", default=0,
                  parse=val.whole)


def _flag(key: str) -> Any:
    return option("bool", f"set {key} = true or false", default=False)


@dataclass(frozen=True)
class TaskConfig:
    image: str = option("string", 'set image = "registry/name:tag"', required=True,
                        parse=_image)
    command: str | None = option("string", 'set command = "/bin/sh"')
    args: tuple[str, ...] = option("list(string)", 'set args = ["-c", "echo hi"]', default=[])
    entrypoint: tuple[str, ...] | None = option("list(string)",
                                                'set entrypoint = ["/bin/sh", "-c"]')
    work_dir: str | None = option(
        "string", 'set work_dir to an absolute path inside the image, e.g. "/srv"',
        parse=val.optional_absolute)
    hostname: str | None = option("string", 'set hostname to a DNS name such as "web-1"',
                                  parse=_hostname)
    mounts: tuple[MountSpec, ...] = keys(
        _mounts, mount=Block(MountBlock, many=True),
        volumes=hs.Field("volumes", "list(string)", _VOLUMES_HINT, default=[]))
    jail_params: Mapping[str, str] = option(
        "map(string)", 'write jail_params = { "allow.raw_sockets" = true }', block_attrs=True,
        parse=_jail_params)
    auth: RegistryAuth | None = block(AuthBlock, parse=_auth)
    auth_soft_fail: bool = _flag("auth_soft_fail")
    force_pull: bool = _flag("force_pull")
    image_pull_timeout: timedelta = option(
        "string", 'set image_pull_timeout to a duration such as "5m"', default="5m",
        parse=val.duration)
    platform: str = option("string", 'set platform = "os/arch[/variant]", e.g. "linux/amd64"',
                           default="", parse=val.platform)
    maxproc: int = _whole_option("maxproc", "the plugin default")
    openfiles: int = _whole_option("openfiles", "the plugin default")
    cpu_hard_limit: bool = _flag("cpu_hard_limit")
    readonly_rootfs: bool = _flag("readonly_rootfs")
    labels: Mapping[str, str] = option("map(string)", 'write labels = { team = "web" }',
                                       block_attrs=True, parse=_labels)
    storage_opt: StorageOpt = option("map(string)", _SIZE_HINT, block_attrs=True,
                                     parse=_storage_opt)
    network_mode: str = option(
        "string", 'set network_mode = "host", "bridge", "none" or "alias" (FreeBSD)',
        default="host", parse=_network_mode)
    ports: tuple[str, ...] = option(
        "list(string)", 'list labels of the group\'s network { port "<label>" {} } blocks to '
        'publish, e.g. ports = ["http"]', default=[], parse=_port_labels)


TASK_SCHEMA: hs.Schema = options.schema_of(TaskConfig)


def decode_task_config(raw: bytes) -> TaskConfig:
    """StartTask's msgpack_driver_config -> TaskConfig."""
    if not raw:
        raise ConfigError("config", "the task has no config block",
                          'add config { image = "registry/name:tag" } to the task')
    try:
        value = cty.decode(raw)
    except cty.CtyDecodeError as exc:
        raise ConfigError("config", str(exc), "send the block encoded as go-cty msgpack") from exc
    return options.decode(TaskConfig, value, "config")


def check_task_allowed(task: TaskConfig, plugin: PluginConfig) -> None:
    """What the operator's plugin config forbids a task to ask for."""
    for name in task.jail_params:
        if name not in plugin.allowed_jail_params:
            raise ConfigError(
                f"config.jail_params.{name}", "not allowed on this client",
                f'ask the operator to add "{name}" to allowed_jail_params in the plugin config',
            )
    for m in task.mounts:
        if m.type != "bind" or not m.source.startswith("/"):
            continue  # relative sources stay inside the task dir
        if not plugin.volumes.enabled:
            raise ConfigError(
                m.origin,
                f"host path {m.source} cannot be mounted: volumes are disabled on this client",
                "ask the operator to set volumes { enabled = true } in the plugin config",
            )
        allowed = plugin.volumes.allowed_host_paths
        if allowed and not val.under(m.source, allowed):
            raise ConfigError(
                m.origin, f"host path {m.source} is outside the allowed host paths",
                "use a path under one of: " + ", ".join(allowed),
            )
    for key in ("maxproc", "openfiles"):
        mx = getattr(plugin.max_limits, key)
        if mx and getattr(task, key) > mx:
            raise ConfigError(f"config.{key}", f"{getattr(task, key)} is above this client's "
                              f"maximum {mx}", f"set {key} to {mx} or less")
    check_disk(task, plugin)


def check_disk(task: TaskConfig, plugin: PluginConfig) -> None:
    """A task's storage_opt size is at most the operator's max_limits disk."""
    cap, ask = plugin.max_limits.disk, task.storage_opt.size
    if cap and ask > cap:
        raise ConfigError("config.storage_opt.size",
                          f"{val.show_size(ask)} is above this client's maximum disk "
                          f"{val.show_size(cap)} (max_limits.disk)",
                          f'set storage_opt = {{ size = "{val.show_size(cap)}" }} or less')
