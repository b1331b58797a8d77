"""The plugin config: the agent's ``plugin "xc" { config {} }`` block, declared once.

Every option is a field of ``PluginConfig`` (or of a nested block's dataclass) carrying its HCL
type, default and fix hint (``driver.options``); ``PLUGIN_SCHEMA`` and the decoder derive from
them. Names follow Nomad's docker driver where the meaning is the same.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, Literal

from driver import cty, options
from driver import hclschema as hs
from driver import values as val
from driver.hclschema import ConfigError
from driver.imagelimits import ImageLimitsBlock, to_layer_limits
from driver.options import block, hint_of, option
from jails.net import NetworkConfig, NetworkError
from zfsimage.limits import LayerLimits

_HOSTPORT_RE = re.compile(
    r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)(:\d{1,5})?$")
_DATASET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*(/[A-Za-z0-9][A-Za-z0-9_.:-]*)*$")
_BACKENDS = ("auto", "freebsd", "linux")


def default_state_dir(platform: str = sys.platform) -> str:
    if platform.startswith("freebsd"):
        return "/var/db/nomad-driver-xc"
    return "/var/lib/nomad-driver-xc"


def _dataset(path: str, name: str, hint: str) -> str:
    if not _DATASET_RE.match(name) or len(name) > 200:
        raise ConfigError(path, f"{name!r} is not a ZFS dataset name", hint)
    return name


def _backend(path: str, name: str, hint: str) -> Any:
    if name not in _BACKENDS:
        raise ConfigError(path, f"{name!r} is not a backend", hint)
    return name


def _state_dir(path: str, text: str, hint: str) -> str:
    # decode_plugin_config fills in the default of the platform it is told; this one is the host's
    return val.absolute(path, text or default_state_dir(), hint)


def _config_file(path: str, text: str, hint: str) -> str:
    if text:
        val.absolute(path, text, hint)
    return text


def _jail_params(path: str, names: tuple[str, ...], hint: str) -> frozenset[str]:
    return frozenset(val.each_matching(val.JAIL_PARAM_RE, "a jail parameter")(path, names, hint))


@dataclass(frozen=True)
class AuthFiles:
    """Where registry credentials come from when a task gives none (docker's plugin `auth`)."""

    config: str = option("string", 'set config to the path of a Docker config.json', default="",
                         parse=_config_file)
    helper: str = option("string", 'set helper to a credential helper name, e.g. "ecr-login"',
                         default="")


@dataclass(frozen=True)
class VolumesConfig:
    enabled: bool = option("bool", "set enabled = true or false", default=False)
    allowed_host_paths: tuple[str, ...] = option(
        "list(string)", 'list absolute host paths tasks may mount, e.g. ["/srv/data"]',
        default=[], parse=val.absolutes)


@dataclass(frozen=True)
class GcConfig:
    image: bool = option("bool", "set image = true or false", default=True)
    image_delay: timedelta = option("string", 'set image_delay to a duration such as "3m"',
                                    default="3m", parse=val.duration_or_zero)


MAX_SPARE_CLONES = 16


def _spare_count(path: str, value: Any, hint: str) -> int:
    n = val.whole(path, value, hint)
    if n > MAX_SPARE_CLONES:
        raise ConfigError(path, f"{n} is above {MAX_SPARE_CLONES}", hint)
    return n


@dataclass(frozen=True)
class SpareClones:
    """Idle clones kept of recently started images, so their next start needs no clone."""

    count: int = option("number", "set count to a whole number >= 0 (idle clones kept per "
                        "recently started image and disk quota, at most 16; 0: none)",
                        default=1, parse=_spare_count)
    idle: timedelta = option("string", 'set idle to a duration such as "30m" (a spare not '
                             "taken for this long is destroyed; \"0\": never)", default="30m",
                             parse=val.duration_or_zero)


@dataclass(frozen=True)
class Limits:
    """rctl/ulimit values and the task's disk (its clone's refquota, bytes); 0 means not set."""

    maxproc: int = option("number", "set maxproc to a whole number >= 0 (0: no limit)",
                          default=0, parse=val.whole)
    openfiles: int = option("number", "set openfiles to a whole number >= 0 (0: no limit)",
                            default=0, parse=val.whole)
    disk: int = option("string", 'set disk to a size such as "10G" (bytes, or k/m/g/t; '
                       '"0": no quota)', default="", parse=val.size)

    def under(self, maximum: Limits) -> Limits:
        """These defaults with each unset value replaced by the maximum (0 stays 0 if none)."""
        return Limits(self.maxproc or maximum.maxproc, self.openfiles or maximum.openfiles,
                      self.disk or maximum.disk)


@dataclass(frozen=True)
class NetworkOptions:
    """The networks the driver makes itself for tasks with network_mode = "bridge", "none" or
    "alias" (see driver/README.md). Nothing is created on the host until a task asks."""

    bridge: str = option("string", 'set bridge to an interface name such as "xcbr0"',
                         default="xcbr0")
    ipv4_pool: str = option("string", 'set ipv4_pool to a private IPv4 network in CIDR form, '
                            'e.g. "10.213.0.0/16"', default="10.213.0.0/16")
    ipv4_gateway: str = option("string", "set ipv4_gateway to a host address of ipv4_pool (the "
                               "bridge's own; default: the pool's first)", default="")
    ipv6_pool: str = option("string", 'set ipv6_pool to an IPv6 network in CIDR form, e.g. '
                            '"fd00:xc::/64" ("": no IPv6)', default="")
    ipv6_gateway: str = option("string", "set ipv6_gateway to a host address of ipv6_pool",
                               default="")
    nat: bool = option("bool", "set nat = true to masquerade the pool's outbound traffic",
                       default=False)
    external_interface: str = option(
        "string", 'set external_interface to the host interface outbound NAT leaves by, e.g. '
        '"em0" ("": any)', default="")
    alias_interface: str = option(
        "string", 'set alias_interface to the host interface alias-mode addresses go on, e.g. '
        '"em0"', default="")
    alias_pool: str = option("string", 'set alias_pool to the IPv4 network in CIDR form alias '
                             'addresses come from, e.g. "192.0.2.128/25"', default="")
    pf_anchor: str = option("string", 'set pf_anchor to the pf anchor name your pf.conf loads, '
                            'e.g. "xc"', default="xc")
    name_prefix: str = option(
        "string", 'set name_prefix to 1-15 letters, digits, "_" or "-" (starts every namespace, '
        'chain and jail name the driver makes)', default="xc")


def _network_config(path: str, opts: NetworkOptions, hint: str) -> NetworkConfig:
    try:
        return NetworkConfig(**dataclasses.asdict(opts))
    except NetworkError as exc:
        key = exc.field.removeprefix("network.")
        known = {f.name for f in dataclasses.fields(NetworkOptions)}
        fix = hint_of(NetworkOptions, key) if key in known else "fix the network block"
        raise ConfigError(f"{path}.{key}" if path else exc.field, exc.message, fix) from exc


_MAX_HINTS = {
    "maxproc": "set maxproc to a whole number >= 0 (0: no maximum)",
    "openfiles": "set openfiles to a whole number >= 0 (0: no maximum)",
    "disk": 'set disk to a size such as "10G" (bytes, or k/m/g/t; "0": no maximum)',
}
LIMIT_KEYS = ("maxproc", "openfiles", "disk")


@dataclass(frozen=True)
class PluginConfig:
    dataset: str = option(
        "string", 'set dataset = "zroot/xc" (a ZFS dataset for images and task roots)',
        default="zroot/xc", parse=_dataset)
    backend: Literal["auto", "freebsd", "linux"] = option(
        "string", 'set backend = "auto", "freebsd" or "linux"', default="auto", parse=_backend)
    state_dir: str = option(
        "string", 'set state_dir to an absolute path such as "/var/db/nomad-driver-xc"',
        default="", parse=_state_dir)
    allow_insecure_registries: tuple[str, ...] = option(
        "list(string)",
        'list registries allowed over plain HTTP as host[:port], e.g. ["127.0.0.1:5000"]',
        default=[], parse=val.each_matching(_HOSTPORT_RE, "host[:port]"))
    auth: AuthFiles = block(AuthFiles)
    platform: str = option("string", 'set platform = "os/arch[/variant]", e.g. "freebsd/amd64"',
                           default="", parse=val.platform)
    allowed_jail_params: frozenset[str] = option(
        "list(string)",
        'list the jail parameters tasks may set, e.g. ["allow.raw_sockets", "sysvipc"]',
        default=[], parse=_jail_params)
    volumes: VolumesConfig = block(VolumesConfig)
    gc: GcConfig = block(GcConfig)
    default_limits: Limits = block(Limits)
    max_limits: Limits = block(Limits, hints=_MAX_HINTS)
    pull_activity_timeout: timedelta = option(
        "string", 'set pull_activity_timeout to a duration such as "2m"', default="2m",
        parse=val.duration)
    linux_images: bool = option("bool", "set linux_images = true to run Linux images through "
                                "FreeBSD's Linux ABI, or false", default=False)
    # every bound on an image (zfsimage.LayerLimits), each raisable: image_limits { max_... }
    image_limits: LayerLimits = block(ImageLimitsBlock, parse=to_layer_limits)
    network: NetworkConfig = block(NetworkOptions, parse=_network_config)
    spare_clones: SpareClones = block(SpareClones)

    def resolved_backend(self, platform: str = sys.platform) -> Literal["freebsd", "linux"]:
        if self.backend != "auto":
            return self.backend
        return "freebsd" if platform.startswith("freebsd") else "linux"


PLUGIN_SCHEMA: hs.Schema = options.schema_of(PluginConfig)


def _check_limits(cfg: PluginConfig) -> None:
    for key in LIMIT_KEYS:
        dflt, mx = getattr(cfg.default_limits, key), getattr(cfg.max_limits, key)
        # An unset default under a maximum means "the maximum" (see Limits.under).
        if mx and dflt > mx:
            shown = f'"{val.show_size(mx)}"' if key == "disk" else str(mx)
            raise ConfigError(
                f"config.default_limits.{key}",
                f"{val.show_size(dflt) if key == 'disk' else dflt} is above "
                f"max_limits.{key} = {shown}",
                f"set default_limits {{ {key} = {shown} }} or lower",
            )


def decode_plugin_config(raw: bytes, platform: str = sys.platform) -> PluginConfig:
    """SetConfig's msgpack_config -> PluginConfig (empty bytes: all defaults)."""
    try:
        value = cty.decode(raw)
    except cty.CtyDecodeError as exc:
        raise ConfigError("config", str(exc), "send the block encoded as go-cty msgpack") from exc
    typed = hs.read(PLUGIN_SCHEMA, value, "config")
    cfg = options.build(PluginConfig, typed, "config")
    if not typed["state_dir"]:
        cfg = replace(cfg, state_dir=default_state_dir(platform))
    _check_limits(cfg)
    return cfg
