"""The plugin config (agent ``plugin "xc" { config {} }``) and the task ``config {}`` block.

Each is one schema (``PLUGIN_SCHEMA``, ``TASK_SCHEMA``) from which the hclspec Nomad validates
with is built, and one decoder from Nomad's cty msgpack into a frozen dataclass. Names follow
Nomad's docker driver where the meaning is the same. Every error names the field and the fix.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import PurePosixPath
from types import MappingProxyType
from typing import Any, Literal

from driver import cty
from driver.hclschema import ConfigError, Field, Schema, Section, read

__all__ = [
    "PLUGIN_SCHEMA",
    "TASK_SCHEMA",
    "AuthFiles",
    "ConfigError",
    "GcConfig",
    "Limits",
    "MountSpec",
    "PluginConfig",
    "RegistryAuth",
    "TaskConfig",
    "VolumesConfig",
    "check_task_allowed",
    "decode_plugin_config",
    "decode_task_config",
    "parse_duration",
]

F = Field

PLUGIN_SCHEMA: Schema = (
    F("dataset", "string", 'set dataset = "zroot/xc" (a ZFS dataset for images and task roots)',
      default="zroot/xc"),
    F("backend", "string", 'set backend = "auto", "freebsd" or "linux"', default="auto"),
    F("state_dir", "string", 'set state_dir to an absolute path such as "/var/db/nomad-driver-xc"',
      default=""),
    F("allow_insecure_registries", "list(string)",
      'list registries allowed over plain HTTP as host[:port], e.g. ["127.0.0.1:5000"]',
      default=[]),
    Section("auth", (
        F("config", "string", 'set config to the path of a Docker config.json', default=""),
        F("helper", "string", 'set helper to a credential helper name, e.g. "ecr-login"',
          default=""),
    )),
    F("platform", "string", 'set platform = "os/arch[/variant]", e.g. "freebsd/amd64"',
      default=""),
    F("allowed_jail_params", "list(string)",
      'list the jail parameters tasks may set, e.g. ["allow.raw_sockets", "sysvipc"]', default=[]),
    Section("volumes", (
        F("enabled", "bool", "set enabled = true or false", default=False),
        F("allowed_host_paths", "list(string)",
          'list absolute host paths tasks may mount, e.g. ["/srv/data"]', default=[]),
    )),
    Section("gc", (
        F("image", "bool", "set image = true or false", default=True),
        F("image_delay", "string", 'set image_delay to a duration such as "3m"', default="3m"),
    )),
    Section("default_limits", (
        F("maxproc", "number", "set maxproc to a whole number >= 0 (0: no limit)", default=0),
        F("openfiles", "number", "set openfiles to a whole number >= 0 (0: no limit)", default=0),
    )),
    Section("max_limits", (
        F("maxproc", "number", "set maxproc to a whole number >= 0 (0: no maximum)", default=0),
        F("openfiles", "number", "set openfiles to a whole number >= 0 (0: no maximum)",
          default=0),
    )),
    F("pull_activity_timeout", "string",
      'set pull_activity_timeout to a duration such as "2m"', default="2m"),
)

TASK_SCHEMA: Schema = (
    F("image", "string", 'set image = "registry/name:tag"', required=True),
    F("command", "string", 'set command = "/bin/sh"'),
    F("args", "list(string)", 'set args = ["-c", "echo hi"]', default=[]),
    F("entrypoint", "list(string)", 'set entrypoint = ["/bin/sh", "-c"]'),
    F("work_dir", "string", 'set work_dir to an absolute path inside the image, e.g. "/srv"'),
    F("hostname", "string", 'set hostname to a DNS name such as "web-1"'),
    Section("mount", (
        F("type", "string", 'set type = "bind" or "tmpfs"', default="bind"),
        F("source", "string", "set source to a host path (absolute, or relative to the task dir)"),
        F("target", "string", 'set target to an absolute path in the task, e.g. "/data"',
          required=True),
        F("readonly", "bool", "set readonly = true or false", default=False),
        Section("tmpfs_options", (
            F("size", "number", "set size in bytes (0: no limit)", default=0),
            F("mode", "number", "set mode as a number, e.g. 1777 for sticky world-writable"),
        )),
    ), many=True),
    F("volumes", "list(string)", 'write each volume as "host_path:task_path[:ro]"', default=[]),
    F("jail_params", "map(string)",
      'write jail_params = { "allow.raw_sockets" = true }', block_attrs=True),
    Section("auth", (
        F("username", "string", 'set username = "user"'),
        F("password", "string", 'set password = "secret"'),
        F("email", "string", 'set email = "user@example.com"'),
        F("server_address", "string", 'set server_address = "registry.example.com"'),
    )),
    F("auth_soft_fail", "bool", "set auth_soft_fail = true or false", default=False),
    F("force_pull", "bool", "set force_pull = true or false", default=False),
    F("image_pull_timeout", "string", 'set image_pull_timeout to a duration such as "5m"',
      default="5m"),
    F("platform", "string", 'set platform = "os/arch[/variant]", e.g. "linux/amd64"',
      default=""),
    F("maxproc", "number", "set maxproc to a whole number >= 0 (0: the plugin default)",
      default=0),
    F("openfiles", "number", "set openfiles to a whole number >= 0 (0: the plugin default)",
      default=0),
    F("cpu_hard_limit", "bool", "set cpu_hard_limit = true or false", default=False),
    F("readonly_rootfs", "bool", "set readonly_rootfs = true or false", default=False),
    F("labels", "map(string)", 'write labels = { team = "web" }', block_attrs=True),
)

# ---- value parsers shared by both configs ----

_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
           "h": 3600.0}


def parse_duration(text: str) -> timedelta | None:
    """A Go duration ("90s", "1h30m", "250ms"), or None when ``text`` is not one."""
    s = text.strip()
    if s == "0":
        return timedelta(0)
    pos, total = 0, 0.0
    while pos < len(s):
        m = _DURATION_RE.match(s, pos)
        if m is None:
            return None
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    return timedelta(seconds=total) if s else None


def _duration(path: str, text: str, hint: str, positive: bool = True) -> timedelta:
    d = parse_duration(text)
    if d is None:
        raise ConfigError(path, f'"{text}" is not a duration', hint)
    if positive and d <= timedelta(0):
        raise ConfigError(path, f'"{text}" must be longer than zero', hint)
    return d


def _whole(path: str, value: int | float | Decimal, hint: str, minimum: int = 0) -> int:
    if isinstance(value, float | Decimal) and value != int(value):
        raise ConfigError(path, f"{value} is not a whole number", hint)
    n = int(value)
    if n < minimum:
        raise ConfigError(path, f"{n} is below {minimum}", hint)
    if n > 2**63 - 1:
        raise ConfigError(path, f"{n} is too large", hint)
    return n


_PLATFORM_RE = re.compile(r"^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$")
_HOSTPORT_RE = re.compile(
    r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)(:\d{1,5})?$")
_JAIL_PARAM_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")
_HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                          r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_DATASET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*(/[A-Za-z0-9][A-Za-z0-9_.:-]*)*$")


def _platform(path: str, text: str, hint: str) -> str:
    if text and not _PLATFORM_RE.match(text):
        raise ConfigError(path, f"{text!r} is not a platform", hint)
    return text


def _absolute(path: str, text: str, hint: str) -> str:
    if not text.startswith("/"):
        raise ConfigError(path, f"{text!r} is not an absolute path", hint)
    return str(PurePosixPath(text))


def _hint(schema: Schema, *keys: str) -> str:
    items: Schema = schema
    found: Field | Section | None = None
    for key in keys:
        found = next(i for i in items if i.key == key)
        if isinstance(found, Section):
            items = found.fields
    assert isinstance(found, Field)
    return found.hint


# ---- the plugin config ----


@dataclass(frozen=True)
class AuthFiles:
    """Where registry credentials come from when a task gives none (docker's plugin `auth`)."""

    config: str = ""
    helper: str = ""


@dataclass(frozen=True)
class VolumesConfig:
    enabled: bool = False
    allowed_host_paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class GcConfig:
    image: bool = True
    image_delay: timedelta = timedelta(minutes=3)


@dataclass(frozen=True)
class Limits:
    """rctl/ulimit values; 0 means not set."""

    maxproc: int = 0
    openfiles: int = 0

    def under(self, maximum: Limits) -> Limits:
        """These defaults with each unset value replaced by the maximum (0 stays 0 if none)."""
        return Limits(self.maxproc or maximum.maxproc, self.openfiles or maximum.openfiles)


def default_state_dir(platform: str = sys.platform) -> str:
    if platform.startswith("freebsd"):
        return "/var/db/nomad-driver-xc"
    return "/var/lib/nomad-driver-xc"


@dataclass(frozen=True)
class PluginConfig:
    dataset: str = "zroot/xc"
    backend: Literal["auto", "freebsd", "linux"] = "auto"
    state_dir: str = default_state_dir()
    allow_insecure_registries: tuple[str, ...] = ()
    auth: AuthFiles = AuthFiles()
    platform: str = ""
    allowed_jail_params: frozenset[str] = frozenset()
    volumes: VolumesConfig = VolumesConfig()
    gc: GcConfig = GcConfig()
    default_limits: Limits = Limits()
    max_limits: Limits = Limits()
    pull_activity_timeout: timedelta = timedelta(minutes=2)

    def resolved_backend(self, platform: str = sys.platform) -> Literal["freebsd", "linux"]:
        if self.backend != "auto":
            return self.backend
        return "freebsd" if platform.startswith("freebsd") else "linux"


def _limits(v: Mapping[str, Any], path: str, key: str) -> Limits:
    return Limits(
        maxproc=_whole(f"{path}.maxproc", v["maxproc"], _hint(PLUGIN_SCHEMA, key, "maxproc")),
        openfiles=_whole(f"{path}.openfiles", v["openfiles"],
                         _hint(PLUGIN_SCHEMA, key, "openfiles")),
    )


def plugin_config_from(v: Mapping[str, Any], platform: str = sys.platform) -> PluginConfig:
    """Semantic checks on values already type-checked by ``hclschema.read``."""
    p = "config"
    h = functools.partial(_hint, PLUGIN_SCHEMA)
    dataset = v["dataset"]
    if not _DATASET_RE.match(dataset) or len(dataset) > 200:
        raise ConfigError(f"{p}.dataset", f"{dataset!r} is not a ZFS dataset name", h("dataset"))
    backend = v["backend"]
    if backend not in ("auto", "freebsd", "linux"):
        raise ConfigError(f"{p}.backend", f"{backend!r} is not a backend", h("backend"))
    state_dir = v["state_dir"] or default_state_dir(platform)
    state_dir = _absolute(f"{p}.state_dir", state_dir, h("state_dir"))
    for i, reg in enumerate(v["allow_insecure_registries"]):
        if not _HOSTPORT_RE.match(reg):
            raise ConfigError(f"{p}.allow_insecure_registries[{i}]",
                              f"{reg!r} is not host[:port]", h("allow_insecure_registries"))
    for i, name in enumerate(v["allowed_jail_params"]):
        if not _JAIL_PARAM_RE.match(name):
            raise ConfigError(f"{p}.allowed_jail_params[{i}]", f"{name!r} is not a jail parameter",
                              h("allowed_jail_params"))
    vol = v["volumes"]
    allowed = tuple(
        _absolute(f"{p}.volumes.allowed_host_paths[{i}]", hp, h("volumes", "allowed_host_paths"))
        for i, hp in enumerate(vol["allowed_host_paths"])
    )
    auth = v["auth"]
    if auth["config"]:
        _absolute(f"{p}.auth.config", auth["config"], h("auth", "config"))
    default_limits = _limits(v["default_limits"], f"{p}.default_limits", "default_limits")
    max_limits = _limits(v["max_limits"], f"{p}.max_limits", "max_limits")
    for key in ("maxproc", "openfiles"):
        dflt, mx = getattr(default_limits, key), getattr(max_limits, key)
        # An unset default under a maximum means "the maximum" (see Limits.under).
        if mx and dflt > mx:
            raise ConfigError(
                f"{p}.default_limits.{key}",
                f"{dflt} is above max_limits.{key} = {mx}",
                f"set default_limits {{ {key} = {mx} }} or lower",
            )
    return PluginConfig(
        dataset=dataset,
        backend=backend,
        state_dir=state_dir,
        allow_insecure_registries=tuple(v["allow_insecure_registries"]),
        auth=AuthFiles(config=auth["config"], helper=auth["helper"]),
        platform=_platform(f"{p}.platform", v["platform"], h("platform")),
        allowed_jail_params=frozenset(v["allowed_jail_params"]),
        volumes=VolumesConfig(enabled=vol["enabled"], allowed_host_paths=allowed),
        gc=GcConfig(
            image=v["gc"]["image"],
            image_delay=_duration(f"{p}.gc.image_delay", v["gc"]["image_delay"],
                                  h("gc", "image_delay"), positive=False),
        ),
        default_limits=default_limits,
        max_limits=max_limits,
        pull_activity_timeout=_duration(f"{p}.pull_activity_timeout", v["pull_activity_timeout"],
                                        h("pull_activity_timeout")),
    )


def decode_plugin_config(raw: bytes, platform: str = sys.platform) -> PluginConfig:
    """SetConfig's msgpack_config -> PluginConfig (empty bytes: all defaults)."""
    try:
        value = cty.decode(raw)
    except cty.CtyDecodeError as exc:
        raise ConfigError("config", str(exc), "send the block encoded as go-cty msgpack") from exc
    return plugin_config_from(read(PLUGIN_SCHEMA, value, "config"), platform)


# ---- the task config ----


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


@dataclass(frozen=True)
class TaskConfig:
    image: str
    command: str | None = None
    args: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    work_dir: str | None = None
    hostname: str | None = None
    mounts: tuple[MountSpec, ...] = ()
    jail_params: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    auth: RegistryAuth | None = None
    auth_soft_fail: bool = False
    force_pull: bool = False
    image_pull_timeout: timedelta = timedelta(minutes=5)
    platform: str = ""
    maxproc: int = 0
    openfiles: int = 0
    cpu_hard_limit: bool = False
    readonly_rootfs: bool = False
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


def _mount_target(path: str, target: str, hint: str) -> str:
    t = _absolute(path, target, hint)
    if t == "/":
        raise ConfigError(path, "cannot mount over the task's root /", hint)
    return t


def _octal_mode(path: str, value: Any, hint: str) -> int:
    n = _whole(path, value, hint)
    # HCL has no octal literals: 1777 is written meaning octal 1777, as docker's tmpfs mode.
    digits = str(n)
    if any(c not in "01234567" for c in digits) or int(digits, 8) > 0o7777:
        raise ConfigError(path, f"{n} is not a file mode", hint)
    return int(digits, 8)


def _mounts(v: Mapping[str, Any], p: str) -> list[MountSpec]:
    h = functools.partial(_hint, TASK_SCHEMA)
    out = []
    for i, m in enumerate(v["mount"]):
        mp = f"{p}.mount[{i}]"
        kind = m["type"]
        if kind not in ("bind", "tmpfs"):
            raise ConfigError(f"{mp}.type", f"{kind!r} is not a mount type", h("mount", "type"))
        target = _mount_target(f"{mp}.target", m["target"], h("mount", "target"))
        source = m["source"] or ""
        tmpfs = m["tmpfs_options"]
        size = _whole(f"{mp}.tmpfs_options.size", tmpfs["size"],
                      h("mount", "tmpfs_options", "size"))
        mode = None
        if tmpfs["mode"] is not None:
            mode = _octal_mode(f"{mp}.tmpfs_options.mode", tmpfs["mode"],
                               h("mount", "tmpfs_options", "mode"))
        if kind == "bind" and not source:
            raise ConfigError(f"{mp}.source", "required for a bind mount", h("mount", "source"))
        if kind == "tmpfs" and source:
            raise ConfigError(f"{mp}.source", "a tmpfs mount has no source", "remove source")
        if kind == "bind" and (size or mode is not None):
            raise ConfigError(f"{mp}.tmpfs_options", "only for type = \"tmpfs\"",
                              "remove tmpfs_options or set type = \"tmpfs\"")
        out.append(MountSpec(kind, source, target, m["readonly"], size, mode, mp))
    for i, vol in enumerate(v["volumes"]):
        vp = f"{p}.volumes[{i}]"
        parts = vol.split(":")
        hint = h("volumes")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
            raise ConfigError(vp, f"{vol!r} is not host_path:task_path[:ro]", hint)
        readonly = False
        if len(parts) == 3:
            if parts[2] not in ("ro", "rw"):
                raise ConfigError(vp, f"mode {parts[2]!r} is not ro or rw", hint)
            readonly = parts[2] == "ro"
        out.append(MountSpec("bind", parts[0], _mount_target(vp, parts[1], hint), readonly,
                              origin=vp))
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
    return out


def task_config_from(v: Mapping[str, Any]) -> TaskConfig:
    p = "config"
    h = functools.partial(_hint, TASK_SCHEMA)
    image = v["image"]
    if any(c.isspace() for c in image):
        raise ConfigError(f"{p}.image", f"{image!r} contains whitespace", h("image"))
    work_dir = v["work_dir"]
    if work_dir is not None:
        work_dir = _absolute(f"{p}.work_dir", work_dir, h("work_dir"))
    hostname = v["hostname"]
    if hostname is not None and not _HOSTNAME_RE.match(hostname):
        raise ConfigError(f"{p}.hostname", f"{hostname!r} is not a host name", h("hostname"))
    jail_params = v["jail_params"] or {}
    for name in jail_params:
        if not _JAIL_PARAM_RE.match(name):
            raise ConfigError(f"{p}.jail_params.{name}", "not a jail parameter name",
                              'use names from jail(8), e.g. "allow.raw_sockets"')
    a = v["auth"]
    auth = None
    if any(a[k] for k in ("username", "password", "email", "server_address")):
        if not a["username"] or a["password"] is None:
            raise ConfigError(f"{p}.auth", "needs both username and password",
                              'set auth { username = "..." password = "..." }')
        auth = RegistryAuth(a["username"], a["password"], a["email"] or "",
                            a["server_address"] or "")
    return TaskConfig(
        image=image,
        command=v["command"],
        args=v["args"],
        entrypoint=v["entrypoint"],
        work_dir=work_dir,
        hostname=hostname,
        mounts=tuple(_mounts(v, p)),
        jail_params=MappingProxyType(dict(jail_params)),
        auth=auth,
        auth_soft_fail=v["auth_soft_fail"],
        force_pull=v["force_pull"],
        image_pull_timeout=_duration(f"{p}.image_pull_timeout", v["image_pull_timeout"],
                                     h("image_pull_timeout")),
        platform=_platform(f"{p}.platform", v["platform"], h("platform")),
        maxproc=_whole(f"{p}.maxproc", v["maxproc"], h("maxproc")),
        openfiles=_whole(f"{p}.openfiles", v["openfiles"], h("openfiles")),
        cpu_hard_limit=v["cpu_hard_limit"],
        readonly_rootfs=v["readonly_rootfs"],
        labels=MappingProxyType(dict(v["labels"] or {})),
    )


def decode_task_config(raw: bytes) -> TaskConfig:
    """StartTask's msgpack_driver_config -> TaskConfig."""
    if not raw:
        raise ConfigError("config", "the task has no config block",
                          'add config { image = "registry/name:tag" } to the task')
    try:
        value = cty.decode(raw)
    except cty.CtyDecodeError as exc:
        raise ConfigError("config", str(exc), "send the block encoded as go-cty msgpack") from exc
    return task_config_from(read(TASK_SCHEMA, value, "config"))


def under(path: str, roots: Sequence[str]) -> bool:
    """True when ``path`` is one of ``roots`` or below one (paths compared as written)."""
    p = PurePosixPath(path)
    return any(p == PurePosixPath(r) or PurePosixPath(r) in p.parents for r in roots)


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
        if allowed and not under(m.source, allowed):
            raise ConfigError(
                m.origin, f"host path {m.source} is outside the allowed host paths",
                "use a path under one of: " + ", ".join(allowed),
            )
    for key in ("maxproc", "openfiles"):
        mx = getattr(plugin.max_limits, key)
        if mx and getattr(task, key) > mx:
            raise ConfigError(f"config.{key}", f"{getattr(task, key)} is above this client's "
                              f"maximum {mx}", f"set {key} to {mx} or less")
