"""A task's network as Nomad hands it over: the group's network namespace, /etc/hosts and DNS.

For a group ``network { mode = "bridge" | "none" | "cni/..." }`` the Nomad client creates the
namespace itself (``/var/run/netns/<alloc_id>``) and passes ``network_isolation_spec`` (mode GROUP,
its path, and for bridge the alloc's address and hostname); a ``dns {}`` block (or CNI) gives
``dns``. Like Nomad's docker driver, the task then gets

- ``/etc/hosts``: localhost lines plus ``<address> <hostname>``, when GROUP carries a
  hosts_config with both (Nomad fills it when the docker driver made the network; otherwise the
  image's /etc/hosts is left alone, as Nomad's exec driver does);
- ``/etc/resolv.conf``: the given servers/searches/options, each empty list falling back to the
  host's own resolv.conf values (all empty: the host's file); when Nomad gives no dns the
  image's file is left alone.

Both files are written into Nomad's task dir (``<task_dir>/private/``, which the task itself
never sees) and bind-mounted read-only: nothing is written through the image's /etc, whose
entries (symlinks) the image controls.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from driver.config import ConfigError
from jails import Mount

RESOLV_TARGET, HOSTS_TARGET = "/etc/resolv.conf", "/etc/hosts"
PRIVATE_DIR = "private"  # Nomad's per-task dir that is not mounted into the task
HOST_RESOLV_CONF = Path("/etc/resolv.conf")
NETWORK_HINT = "check the group's network block (mode, hostname, dns)"


@dataclass(frozen=True)
class NomadHosts:
    """NetworkIsolationSpec.hostsConfig: the alloc's address in its network and its hostname."""

    hostname: str
    address: str


@dataclass(frozen=True)
class NomadNetwork:
    """TaskConfig.network_isolation_spec. ``mode`` is Nomad's enum in lower case."""

    mode: str  # "host" | "group" | "task" | "none"
    path: str = ""
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    hosts: NomadHosts | None = None


@dataclass(frozen=True)
class NomadDNS:
    """TaskConfig.dns."""

    servers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class NetworkPlan:
    """What a task's JailSpec gets from its network settings."""

    network: str = "host"  # JailSpec.network
    netns_path: str = ""
    hostname: str = ""  # the group's hostname ("" = none given)
    mounts: tuple[Mount, ...] = ()


def plan(network: NomadNetwork | None, dns: NomadDNS | None, task_dir: str) -> NetworkPlan:
    """Validate Nomad's settings and decide namespace, hostname and file mounts (pure)."""
    mode, netns, hostname = "host", "", ""
    if network is not None and network.mode != "host":
        if network.mode != "group":
            raise ConfigError("network.mode", f"Nomad asked for {network.mode!r} network "
                              "isolation, which this driver does not offer",
                              'use a group network (mode = "bridge", "none" or "cni/...") '
                              "or host networking")
        if not network.path.startswith("/"):
            raise ConfigError("network", f"Nomad sent a group network without a namespace path "
                              f"({network.path!r})", "restart the task; if it persists, check "
                              "the Nomad client's network setup")
        mode, netns = "netns", network.path
        hosts = _hosts_of(network)
        if hosts is not None:
            _check_hosts(hosts)
            hostname = hosts.hostname
    if dns is not None:
        _check_dns(dns)
    private = Path(task_dir) / PRIVATE_DIR
    mounts = [Mount(private / posixpath.basename(t), t, readonly=True)
              for t in sorted(file_contents(network, dns, host_resolv=""))]
    return NetworkPlan(mode, netns, hostname, tuple(mounts))


def _hosts_of(network: NomadNetwork | None) -> NomadHosts | None:
    """The group's hosts_config if there is one to write: Nomad's own drivers write no hosts
    file when either value is empty; neither do we."""
    if network is None or network.mode != "group" or network.hosts is None:
        return None
    h = network.hosts
    return h if h.hostname and h.address else None


def _check_hosts(hosts: NomadHosts) -> None:
    try:
        ipaddress.ip_address(hosts.address)
    except ValueError:
        raise ConfigError("network.hostsConfig.address", f"{hosts.address!r} is not an IP "
                          "address", NETWORK_HINT) from None
    if not _is_hostname(hosts.hostname):
        raise ConfigError("network.hostname", f"{hosts.hostname!r} is not a host name "
                          "(letters, digits, '-' and '.', at most 63 characters)", NETWORK_HINT)


def _is_hostname(name: str) -> bool:
    return len(name) <= 63 and all(c.isascii() and (c.isalnum() or c in "-_.") for c in name)


def _check_dns(dns: NomadDNS) -> None:
    for server in dns.servers:
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise ConfigError("network.dns.servers", f"{server!r} is not an IP address",
                              "list name servers by address") from None
    for what, values in (("searches", dns.searches), ("options", dns.options)):
        for v in values:
            if not v or any(c.isspace() for c in v) or "#" in v or ";" in v:
                raise ConfigError(f"network.dns.{what}", f"{v!r} must be one word (no spaces, "
                                  "'#' or ';')", f"fix dns {what} in the group's network block")


def hosts_file(hosts: NomadHosts) -> str:
    """/etc/hosts for a task of a group network (the lines Nomad's docker driver writes)."""
    return (
        "# this file was generated by the xc driver from Nomad's network settings\n"
        "127.0.0.1 localhost\n"
        "::1 localhost ip6-localhost ip6-loopback\n"
        "fe00::0 ip6-localnet\n"
        "ff00::0 ip6-mcastprefix\n"
        "ff02::1 ip6-allnodes\n"
        "ff02::2 ip6-allrouters\n"
        "\n"
        "# the address and hostname of the allocation in its group network\n"
        f"{hosts.address} {hosts.hostname}\n"
    )


def resolv_file(dns: NomadDNS, host_resolv: str) -> str:
    """resolv.conf from Nomad's dns; a list Nomad left empty takes the host's own values, and
    with all three empty the task gets the host's file as it is (Nomad's resolvconf does both)."""
    if not (dns.servers or dns.searches or dns.options):
        return host_resolv
    host = _parse_resolv(host_resolv)
    servers = dns.servers or tuple(host["nameserver"])
    searches = dns.searches or tuple(host["search"])
    options = dns.options or tuple(host["options"])
    lines = ["# generated by the xc driver from Nomad's dns settings"]
    lines += [f"nameserver {s}" for s in servers]
    if searches:
        lines.append("search " + " ".join(searches))
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"


def _parse_resolv(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"nameserver": [], "search": [], "options": []}
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if not words:
            continue
        key, rest = words[0], words[1:]
        if key == "nameserver" and rest:
            out["nameserver"].append(rest[0])
        elif key in ("search", "domain"):
            out["search"] = list(rest)  # the last search/domain line wins (resolv.conf(5))
        elif key == "options":
            out["options"] += rest
    return out


def file_contents(network: NomadNetwork | None, dns: NomadDNS | None, *,
                  host_resolv: str) -> dict[str, str]:
    """target path in the task -> content, for the files the task gets (pure)."""
    out: dict[str, str] = {}
    hosts = _hosts_of(network)
    if hosts is not None:
        out[HOSTS_TARGET] = hosts_file(hosts)
    if dns is not None:
        out[RESOLV_TARGET] = resolv_file(dns, host_resolv)
    return out


def write_files(network: NomadNetwork | None, dns: NomadDNS | None, task_dir: str) -> None:
    """Write the task's hosts/resolv.conf into ``<task_dir>/private`` (idempotent, atomic).

    Files are created relative to the opened private dir with O_NOFOLLOW and renamed into
    place, so a name planted there cannot redirect the write.
    """
    host_resolv = ""
    if dns is not None:
        with contextlib.suppress(OSError):
            host_resolv = HOST_RESOLV_CONF.read_text(errors="replace")
    contents = file_contents(network, dns, host_resolv=host_resolv)
    if not contents:
        return
    private = Path(task_dir) / PRIVATE_DIR
    private.mkdir(mode=0o700, exist_ok=True)
    dfd = os.open(private, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for target, text in contents.items():
            name = posixpath.basename(target)
            tmp = f".{name}.xc-tmp"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dfd)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644,
                         dir_fd=dfd)
            with os.fdopen(fd, "wb") as f:
                f.write(text.encode())
                os.fchmod(f.fileno(), 0o644)  # readable by any task user, whatever the umask
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    finally:
        os.close(dfd)
