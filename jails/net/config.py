"""What an operator configures and what a caller asks for: ``NetworkConfig``, ``PortMapping``,
and what comes back, ``AllocNetwork``. Pure and frozen; every field validated at construction,
with a ``NetworkError`` naming the plugin option or request field.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from jails.errors import JailError

# What a task may ask for. "host" is not here: it needs no network of its own.
MODES = ("bridge", "none", "alias")
BACKEND_MODES = {"linux": ("bridge", "none"), "freebsd": ("bridge", "none", "alias")}
IFNAMSIZ = 15  # Linux and FreeBSD interface names: 15 characters + NUL
CHAIN_MAX = 28  # iptables chain names (XT_EXTENSION_MAXNAMELEN - 1)
_PREFIX_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,14}$")
_IFNAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,14}$")
_SAFE = re.compile(r"[^a-z0-9]")
KEY_LEN = 12


class NetworkError(JailError):
    """A network option or request is invalid, or the host cannot provide it. ``field`` names the
    plugin option (``network.ipv4_pool``) or the task field (``network_mode``, ``ports``)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def _net(option: str, value: str, version: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise NetworkError(option, f"{value!r} is not a network in CIDR form ({exc})") from None
    if net.version != version:
        raise NetworkError(option, f"{value!r} is not an IPv{version} network")
    if net.num_addresses < 4:
        raise NetworkError(option, f"{value!r} is too small: use at most a /30 (/126)")
    return net


def _addr_in(option: str, value: str, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise NetworkError(option, f"{value!r} is not an IP address") from None
    if addr not in net or addr in (net.network_address, net.broadcast_address):
        raise NetworkError(option, f"{value} is not a host address of {net}")
    return str(addr)


def _ifname(option: str, value: str, *, empty_ok: bool = False) -> None:
    if empty_ok and not value:
        return
    if not _IFNAME_RE.match(value):
        raise NetworkError(option, f"{value!r} must be an interface name of at most {IFNAMSIZ} "
                           "characters of [A-Za-z0-9_.-] starting with a letter")


@dataclass(frozen=True)
class NetworkConfig:
    """The plugin's ``network {}`` block. Nothing is created on the host until a task asks.

    bridge: the Linux bridge / FreeBSD if_bridge(4) the alloc networks hang on (made on first
    use when absent, and then owned). ipv4_pool: the alloc addresses; ipv4_gateway: the bridge's
    own address (default: the pool's first host). ipv6_pool/ipv6_gateway: optional, the same for
    IPv6 (addresses only: published ports are IPv4). nat: masquerade traffic from the pool that
    leaves through another interface (``external_interface``, "" = any), and enable forwarding.
    alias_interface/alias_pool: FreeBSD ``alias`` mode, addresses added to a host interface.
    pf_anchor: the pf(4) anchor under which each alloc gets ``<pf_anchor>/<key>``.
    name_prefix: the start of every object name (namespaces, chains, jails); tests use their own.
    """

    bridge: str = "xcbr0"
    ipv4_pool: str = "10.213.0.0/16"
    ipv4_gateway: str = ""
    ipv6_pool: str = ""
    ipv6_gateway: str = ""
    nat: bool = False
    external_interface: str = ""
    alias_interface: str = ""
    alias_pool: str = ""
    pf_anchor: str = "xc"
    name_prefix: str = "xc"

    def __post_init__(self) -> None:
        _ifname("network.bridge", self.bridge)
        pool = _net("network.ipv4_pool", self.ipv4_pool, 4)
        gw = self.ipv4_gateway or str(next(pool.hosts()))
        object.__setattr__(self, "ipv4_gateway", _addr_in("network.ipv4_gateway", gw, pool))
        if self.ipv6_pool:
            pool6 = _net("network.ipv6_pool", self.ipv6_pool, 6)
            gw6 = self.ipv6_gateway or str(pool6.network_address + 1)
            object.__setattr__(self, "ipv6_gateway",
                               _addr_in("network.ipv6_gateway", gw6, pool6))
        elif self.ipv6_gateway:
            raise NetworkError("network.ipv6_gateway", "needs network.ipv6_pool")
        if not isinstance(self.nat, bool):
            raise NetworkError("network.nat", f"{self.nat!r} must be true or false")
        _ifname("network.external_interface", self.external_interface, empty_ok=True)
        _ifname("network.alias_interface", self.alias_interface, empty_ok=True)
        if self.alias_pool:
            _net("network.alias_pool", self.alias_pool, 4)
        if not re.match(r"^[A-Za-z0-9_-]{1,32}$", self.pf_anchor):
            raise NetworkError("network.pf_anchor", f"{self.pf_anchor!r} must be 1-32 "
                               "characters of [A-Za-z0-9_-] (each alloc gets <anchor>/<id>)")
        if not _PREFIX_RE.match(self.name_prefix):
            raise NetworkError("network.name_prefix", f"{self.name_prefix!r} must be 1-15 "
                               "characters of [A-Za-z0-9_-] starting with a letter")

    @property
    def pool(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.ipv4_pool)

    @property
    def prefix_len(self) -> int:
        return self.pool.prefixlen

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> NetworkConfig:
        """From the plugin config's ``network`` block (unknown keys named in the error)."""
        known = set(cls.__dataclass_fields__)
        for k in raw:
            if k not in known:
                raise NetworkError(f"network.{k}", f"unknown option; known: {sorted(known)}")
        return cls(**raw)


@dataclass(frozen=True)
class PortMapping:
    """One published port: host ``host_ip:value`` -> the task's ``address:to`` (Nomad's
    PortMapping; ``to`` 0 means the same as ``value``; ``host_ip`` "" or "0.0.0.0" means every
    local address of the host, as docker publishes)."""

    label: str
    value: int
    to: int = 0
    host_ip: str = ""

    def __post_init__(self) -> None:
        if not self.label or not re.match(r"^[A-Za-z0-9_-]{1,64}$", self.label):
            raise NetworkError("ports", f"label {self.label!r} must be 1-64 characters of "
                               "[A-Za-z0-9_-]")
        for what, v, low in (("value", self.value, 1), ("to", self.to, 0)):
            if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= 65535:
                raise NetworkError("ports", f"port {self.label!r}: {what} {v!r} must be a port "
                                   f"number {low}..65535")
        if self.to == 0:
            object.__setattr__(self, "to", self.value)
        ip = self.host_ip
        if ip in ("", "0.0.0.0"):
            object.__setattr__(self, "host_ip", "")
        else:
            try:
                parsed = ipaddress.ip_address(ip)
            except ValueError:
                raise NetworkError("ports", f"port {self.label!r}: host_ip {ip!r} is not an IP "
                                   "address") from None
            if parsed.version != 4:
                raise NetworkError("ports", f"port {self.label!r}: host_ip {ip} is IPv6; "
                                   "published ports are IPv4")
            object.__setattr__(self, "host_ip", str(parsed))

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "value": self.value, "to": self.to, "host_ip": self.host_ip}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PortMapping:
        return cls(str(d["label"]), int(d["value"]), int(d["to"]), str(d["host_ip"]))


def check_ports(ports: tuple[PortMapping, ...]) -> tuple[PortMapping, ...]:
    """Refuse two labels on one host address:port (the second would never be reached); an
    empty host_ip is every local address, so it overlaps any other host_ip."""
    for i, p in enumerate(ports):
        if not isinstance(p, PortMapping):
            raise NetworkError("ports", f"{p!r} is not a jails.net.PortMapping")
        for q in ports[:i]:
            same_ip = not p.host_ip or not q.host_ip or p.host_ip == q.host_ip
            if q.label != p.label and q.value == p.value and same_ip:
                raise NetworkError("ports", f"{p.label!r} and {q.label!r} both publish host "
                                   f"port {p.value}")
    return tuple(ports)


def alloc_key(alloc_id: str) -> str:
    """The alloc's part of every object name: its first 12 id characters (a Nomad alloc id is
    a UUID; 12 hex digits keep collisions out of any real cluster and fit iptables' 28)."""
    key = _SAFE.sub("", alloc_id.lower())[:KEY_LEN]
    if not alloc_id or len(key) < 8:
        raise NetworkError("alloc_id", f"{alloc_id!r} must have at least 8 letters or digits")
    return key


@dataclass(frozen=True)
class Names:
    """Every object name of one alloc's network, derived from the prefix and the alloc id."""

    key: str
    netns: str  # Linux network namespace; also the per-alloc iptables chain
    host_if: str  # host end of the veth/epair (the jail end is <host_if> with 'b' on FreeBSD)
    parent_jail: str  # FreeBSD per-alloc parent jail
    anchor: str  # FreeBSD pf anchor

    @classmethod
    def of(cls, cfg: NetworkConfig, alloc_id: str) -> Names:
        key = alloc_key(alloc_id)
        base = f"{cfg.name_prefix}-{key}"
        digest = hashlib.sha256(base.encode()).hexdigest()[:10]
        # The prefix's first two characters keep an operator able to tell ours apart ("xc...").
        host_if = f"{cfg.name_prefix[:2]}v{digest}"
        return cls(key, base, host_if, base.replace("-", "_").replace(".", "_"),
                   f"{cfg.pf_anchor}/{key}")


@dataclass(frozen=True)
class AllocNetwork:
    """One alloc's network as made: what a JailSpec and Nomad's DriverNetwork need.

    ``address`` is "" in ``none`` mode. ``ports`` is the union of what the alloc's tasks publish.
    """

    alloc_id: str
    mode: str
    address: str = ""
    prefix_len: int = 0
    gateway: str = ""
    address6: str = ""
    ports: tuple[PortMapping, ...] = ()
    netns_path: str = ""  # Linux: the namespace every task of the alloc joins
    parent_jail: str = ""  # FreeBSD: the jail every task jail of the alloc is a child of
    holders: tuple[str, ...] = field(default=())

    def port_map(self) -> dict[str, int]:
        """label -> the port the task listens on (DriverNetwork.port_map)."""
        return {p.label: p.to for p in self.ports}

    def jail_spec_fields(self) -> dict[str, str]:
        """The JailSpec keyword arguments that put a task into this network."""
        if self.netns_path:
            return {"network": "netns", "netns_path": self.netns_path}
        return {"network": "parent", "parent_jail": self.parent_jail}
