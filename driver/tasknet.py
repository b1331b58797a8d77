"""The networks the driver makes itself for a task (``network_mode = "bridge" | "none" |
"alias"``), as opposed to a Nomad group network it joins (``driver.network``).

One network per alloc, shared by the alloc's tasks (``jails.net``): the first task makes it, the
last DestroyTask removes it, a recovered task finds it again by its alloc id. ``ports`` publishes
labels of the group's ``network { port "<label>" {} }``: Nomad's allocated host ``host_ip:value``
goes to the task's ``address:to``. StartTask answers with Nomad's DriverNetwork (the address, the
label -> ``to`` port map, auto-advertise) so ``address_mode = "driver"``/``"auto"`` services and
checks use the task's own address.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from driver.config import ConfigError, PluginConfig, TaskConfig
from driver.errors import StartFailed
from jails.net import (
    AllocNetwork,
    NetworkConfig,
    NetworkError,
    NetworkProbe,
    Networks,
    open_networks,
)
from jails.net import PortMapping as JailPort

PORTS_HINT = ('define the label in the group: network { port "http" { to = 8080 } }, or '
              "remove it from ports")


@dataclass(frozen=True)
class NomadPort:
    """One of TaskConfig.resources.ports: the alloc's host port ``host_ip:value`` for
    ``label``, and ``to``, the port the task listens on (0: not set)."""

    label: str
    value: int
    to: int = 0
    host_ip: str = ""


@dataclass(frozen=True)
class DriverNetwork:
    """StartTaskResponse.network_override (Nomad's DriverNetwork)."""

    address: str
    port_map: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    auto_advertise: bool = True


@dataclass(frozen=True)
class NetRequest:
    """What a task asks of its alloc's network."""

    mode: str  # "bridge" | "none" | "alias"
    ports: tuple[JailPort, ...] = ()


def request_of(task: TaskConfig, network_is_group: bool,
               nomad_ports: tuple[NomadPort, ...]) -> NetRequest | None:
    """The task's network request (None: the host's or Nomad's group network), or one
    ConfigError naming the field (pure)."""
    if task.network_mode == "host":
        if task.ports:
            raise ConfigError("config.ports", "publishing ports needs a network of the task's "
                              "own; with network_mode \"host\" the task binds host ports itself",
                              'set network_mode = "bridge", or remove ports')
        return None
    if network_is_group:
        raise ConfigError("config.network_mode", f"{task.network_mode!r} inside a Nomad group "
                          "network: the task already joins the network the group's "
                          "network { mode } made", 'remove network_mode from the task config, '
                          'or remove the group\'s network mode')
    by_label = {p.label: p for p in nomad_ports}
    ports = []
    for i, label in enumerate(task.ports):
        p = by_label.get(label)
        if p is None:
            known = ", ".join(sorted(by_label)) or "none"
            raise ConfigError(f"config.ports[{i}]", f"the group defines no port {label!r} "
                              f"(its ports: {known})", PORTS_HINT)
        try:
            ports.append(JailPort(p.label, p.value, p.to, p.host_ip))
        except NetworkError as exc:
            raise ConfigError(f"config.ports[{i}]", exc.message, PORTS_HINT) from exc
    return NetRequest(task.network_mode, tuple(ports))


def driver_network(alloc: AllocNetwork) -> DriverNetwork | None:
    """Nomad's DriverNetwork for a network with an address of its own (bridge, alias)."""
    if not alloc.address:
        return None
    return DriverNetwork(alloc.address, MappingProxyType(dict(alloc.port_map())), True)


def _start_error(exc: NetworkError) -> Exception:
    """A task field's problem is the task's config; a plugin option's is the operator's (it
    may pass: a pool frees up when allocs go), and so is a host that cannot do it."""
    if exc.field in ("network_mode", "ports"):
        return ConfigError(f"config.{exc.field}", exc.message, "fix the task config")
    if exc.field.startswith("network."):
        return StartFailed(f"plugin option {exc.field}: {exc.message}", recoverable=True)
    return StartFailed(f"task network: {exc}", recoverable=True)


def parent_params_of(allowed: Iterable[str]) -> dict[str, str]:
    """What a FreeBSD alloc's parent jail carries so its task jails may set what the operator
    allows: kern_jail.c refuses a child any ``allow.*`` its parent lacks and an
    ``enforce_statfs`` below its parent's. The parent runs nothing, so this grants nothing."""
    params = {name: "1" for name in sorted(allowed) if name.startswith("allow.")}
    if "enforce_statfs" in allowed:
        params["enforce_statfs"] = "0"
    return params


class TaskNetworks:
    """The plugin's alloc networks, opened on first use (nothing runs until a task asks)."""

    def __init__(self, config: PluginConfig, state_dir: Path) -> None:
        self.config = config
        self.state_dir = state_dir
        self._nets: Networks | None = None
        self._lock = threading.Lock()

    @property
    def nets(self) -> Networks:
        with self._lock:
            if self._nets is None:
                backend = self.config.resolved_backend()
                options = ({"parent_params": parent_params_of(self.config.allowed_jail_params)}
                           if backend == "freebsd" else {})
                self._nets = open_networks(backend, self.state_dir, self.config.network,
                                           **options)
            return self._nets

    def ensure(self, alloc_id: str, task: str, req: NetRequest) -> AllocNetwork:
        try:
            return self.nets.ensure(alloc_id, req.mode, req.ports, task=task)
        except NetworkError as exc:
            raise _start_error(exc) from exc

    def release(self, alloc_id: str, task: str) -> None:
        self.nets.release(alloc_id, task=task)

    def get(self, alloc_id: str) -> AllocNetwork | None:
        return self.nets.get(alloc_id)

    def sweep(self, live_allocs: Iterable[str]) -> list[str]:
        return self.nets.sweep(live_allocs)

    def probe(self) -> NetworkProbe:
        return self.nets.probe()

    def has_leases(self) -> bool:
        leases = self.state_dir / "net" / "leases"
        return leases.is_dir() and any(leases.iterdir())


def configured(cfg: NetworkConfig) -> bool:
    """Whether the operator wrote anything into the plugin's network block."""
    return cfg != NetworkConfig()
