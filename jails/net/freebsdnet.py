"""FreeBSD alloc networks: a per-alloc parent jail (``persist``, no processes) owning the network
stack; every task jail of the alloc is created as its child (``<parent>.<task>``, jail(8)
hierarchical names) with ``ip4=inherit``, so the alloc's tasks share it.

- ``bridge``: the parent is a vnet jail (``vnet vnet.interface=<epair b end>``); the a end is a
  member of an if_bridge(4) that carries the gateway; address and default route are set inside
  with ``jexec <parent> ifconfig/route`` (the parent's path is ``/``: it runs no task, so the
  host's tools are what jexec finds).
- ``none``: a vnet parent with only ``lo0``.
- ``alias``: a non-vnet parent with ``ip4.addr`` from the alias pool, added as an alias of the
  alias interface (pot's alias mode).
- published ports: ``rdr pass`` rules (and with ``nat`` a ``nat on`` rule) loaded into the
  anchor ``<pf_anchor>/<key>`` with ``pfctl -a ... -f -``; pf.conf must call the anchors
  (jails/README.md).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from pathlib import Path

from jails import _cmd
from jails.errors import CommandFailed
from jails.net.config import AllocNetwork, Names, NetworkConfig, NetworkError
from jails.net.leases import Lease
from jails.net.manager import NetworkProbe, Networks

CHILDREN_MAX = "256"  # task jails one alloc may have


def _gone(exc: CommandFailed) -> bool:
    text = exc.stderr.lower()
    return any(s in text for s in ("not found", "does not exist", "no such",
                                   "can't assign requested address"))


class FreeBSDNetworks(Networks):
    backend = "freebsd"
    ifconfig_bin, jail_bin, jexec_bin, jls_bin = ("/sbin/ifconfig", "/usr/sbin/jail",
                                                  "/usr/sbin/jexec", "/usr/sbin/jls")
    pfctl_bin, sysctl_bin, route_bin = "/sbin/pfctl", "/sbin/sysctl", "/sbin/route"

    _host_ok = False

    def __init__(self, state_root: Path, config: NetworkConfig,
                 runner: _cmd.InputRunner = _cmd.run, *,
                 parent_params: Mapping[str, str] | None = None) -> None:
        """parent_params: jail parameters the parent jails get so that their task jails may
        have them: kern_jail.c refuses a child any ``allow.*`` its parent lacks, and an
        ``enforce_statfs`` below its parent's. The parent runs no process, so giving it the
        operator's allowed ``allow.*`` (and lowest enforce_statfs) grants nothing by itself."""
        super().__init__(state_root, config, runner)
        params = dict(parent_params or {})
        for key in params:
            if not (key.startswith("allow.") or key == "enforce_statfs"):
                raise NetworkError("parent_params", f"{key!r}: only allow.* and enforce_statfs "
                                   "are passed to parent jails")
        self.parent_params = params

    # ---- tools (one place each builds its argv) ------------------------------------------------

    def ifconfig(self, *args: str, ok_codes: tuple[int, ...] = (0,)) -> str:
        return self.run([self.ifconfig_bin, *args], ok_codes=ok_codes).stdout

    def inside(self, jail: str, tool: str, *args: str) -> None:
        self.run([self.jexec_bin, jail, tool, *args])

    def pfctl(self, *args: str, rules: str | None = None,
              ok_codes: tuple[int, ...] = (0,)) -> str:
        return self.run([self.pfctl_bin, *args], input=rules, ok_codes=ok_codes).stdout

    def sysctl(self, name: str, value: str | None = None) -> str:
        arg = name if value is None else f"{name}={value}"
        return self.run([self.sysctl_bin, "-n", arg] if value is None
                        else [self.sysctl_bin, arg]).stdout.strip()

    # ---- shared ----------------------------------------------------------------------------------

    def _ensure_host(self, mode: str) -> None:
        if mode != "bridge" or self._host_ok:
            return
        cfg = self.config
        if self.run([self.ifconfig_bin, cfg.bridge], ok_codes=(0, 1)).returncode != 0:
            (self.leases.root / f"bridge-{cfg.bridge}.made").write_text(cfg.bridge)
            self.ifconfig("bridge", "create", "name", cfg.bridge)
            self.ifconfig(cfg.bridge, "inet", f"{cfg.ipv4_gateway}/{cfg.prefix_len}", "up")
            if cfg.ipv6_pool:
                self.ifconfig(cfg.bridge, "inet6",
                              f"{cfg.ipv6_gateway}/{cfg.ipv6_pool.split('/')[1]}")
        if cfg.nat:
            self.sysctl("net.inet.ip.forwarding", "1")
        self._host_ok = True

    def _remove_host(self) -> None:
        marker = self.leases.root / f"bridge-{self.config.bridge}.made"
        if marker.exists():
            with contextlib.suppress(CommandFailed):
                self.ifconfig(self.config.bridge, "destroy")
            marker.unlink()
        self._host_ok = False

    # ---- per alloc -------------------------------------------------------------------------------

    def _parent_argv(self, lease: Lease, names: Names) -> list[str]:
        argv = [self.jail_bin, "-c", f"name={names.parent_jail}", "path=/",
                f"host.hostname={names.parent_jail}"]
        if lease.mode == "alias":
            argv.append(f"ip4.addr={lease.address}")
        else:
            argv.append("vnet")
            if lease.mode == "bridge":
                argv.append(f"vnet.interface={names.host_if}b")
        extra = [f"{k}={v}" for k, v in sorted(self.parent_params.items())]
        return [*argv, "persist", f"children.max={CHILDREN_MAX}", *extra]

    def _create(self, lease: Lease, names: Names) -> None:
        cfg, pj = self.config, names.parent_jail
        a_end, b_end = names.host_if + "a", names.host_if + "b"
        if lease.mode == "bridge":
            made = self.ifconfig("epair", "create").strip()  # prints the a end: "epair3a"
            self.ifconfig(made, "name", a_end)
            self.ifconfig(made[:-1] + "b", "name", b_end)
            self.ifconfig(cfg.bridge, "addm", a_end)
            self.ifconfig(a_end, "up")
        elif lease.mode == "alias":
            try:
                self.ifconfig(cfg.alias_interface, "inet", f"{lease.address}/32", "alias")
            except CommandFailed as exc:
                if "does not exist" not in exc.stderr:  # ifconfig.c: "interface %s does not exist"
                    raise
                raise NetworkError("network.alias_interface", f"{cfg.alias_interface!r} is not an "
                                   "interface of this host; set alias_interface to one that "
                                   "`ifconfig -l` lists") from exc
        self.run(self._parent_argv(lease, names))
        if lease.mode == "alias":
            return
        self.inside(pj, self.ifconfig_bin, "lo0", "inet", "127.0.0.1/8", "up")
        if lease.mode == "bridge":
            self.inside(pj, self.ifconfig_bin, b_end, "inet",
                        f"{lease.address}/{cfg.prefix_len}", "up")
            self.inside(pj, self.route_bin, "-q", "add", "default", cfg.ipv4_gateway)
            if lease.address6:
                self.inside(pj, self.ifconfig_bin, b_end, "inet6",
                            f"{lease.address6}/{cfg.ipv6_pool.split('/')[1]}")
                self.inside(pj, self.route_bin, "-q", "add", "-inet6", "default",
                            cfg.ipv6_gateway)

    def pf_rules(self, lease: Lease) -> str:
        """The anchor's rules (pure): rdr per published port, nat when enabled."""
        lines = []
        for p in lease.ports():
            dst = p.host_ip or "self"
            lines.append(f"rdr pass inet proto {{ tcp udp }} from any to {dst} port {p.value} "
                         f"-> {lease.address} port {p.to}")
        if self.config.nat and lease.mode == "bridge" and self.config.external_interface:
            ext = self.config.external_interface
            lines.append(f"nat on {ext} inet from {lease.address} to any -> ({ext})")
        return "".join(line + "\n" for line in lines)

    def _publish(self, lease: Lease, names: Names, *, first: bool) -> None:
        rules = self.pf_rules(lease)
        if rules:
            self.pfctl("-a", names.anchor, "-f", "-", rules=rules)
        else:
            self.pfctl("-a", names.anchor, "-F", "all", ok_codes=(0, 1))

    def _teardown(self, names: Names, lease: Lease | None) -> None:
        self.pfctl("-a", names.anchor, "-F", "all", ok_codes=(0, 1))
        # jail -r also removes any child task jail left; the vnet's interfaces come home.
        for argv in ([self.jail_bin, "-r", names.parent_jail],
                     [self.ifconfig_bin, names.host_if + "a", "destroy"]):
            try:
                self.run(argv)
            except CommandFailed as exc:
                if not _gone(exc):
                    raise
        if lease is not None and lease.mode == "alias" and lease.address:
            try:
                self.ifconfig(self.config.alias_interface, "inet", lease.address, "-alias")
            except CommandFailed as exc:
                if not _gone(exc):
                    raise

    def _leftover_keys(self) -> set[str]:
        pj = Names.of(self.config, "0" * 12).parent_jail[:-12]
        key_re = re.compile(rf"^{re.escape(pj)}([a-z0-9]{{12}})$")
        out = self.run([self.jls_bin, "name"], ok_codes=(0, 1)).stdout
        keys = {m.group(1) for line in out.split() if (m := key_re.match(line))}
        anchors = self.pfctl("-a", self.config.pf_anchor, "-s", "Anchors", ok_codes=(0, 1))
        a_re = re.compile(rf"^{re.escape(self.config.pf_anchor)}/([a-z0-9]{{12}})$")
        return keys | {m.group(1) for line in anchors.split() if (m := a_re.match(line))}

    def _result(self, lease: Lease, names: Names) -> AllocNetwork:
        bridge = lease.mode == "bridge"
        return AllocNetwork(
            alloc_id=lease.alloc_id, mode=lease.mode, address=lease.address,
            prefix_len=self.config.prefix_len if bridge else (32 if lease.address else 0),
            gateway=self.config.ipv4_gateway if bridge else "", address6=lease.address6,
            ports=lease.ports(), parent_jail=names.parent_jail,
            holders=tuple(sorted(lease.holders)))

    # ---- probe -----------------------------------------------------------------------------------

    def probe(self) -> NetworkProbe:
        cfg = self.config
        attrs = {"driver.xc.network.backend": "freebsd", "driver.xc.network.bridge": cfg.bridge,
                 "driver.xc.network.ipv4_pool": cfg.ipv4_pool,
                 "driver.xc.network.pf_anchor": cfg.pf_anchor}
        try:
            vimage = self.run([self.sysctl_bin, "-n", "kern.features.vimage"],
                              ok_codes=(0, 1)).stdout.strip()
            attrs["driver.xc.network.vimage"] = "1" if vimage == "1" else "0"
            cloners = self.ifconfig("-C").split()
            attrs["driver.xc.network.epair"] = str("epair" in cloners).lower()
            attrs["driver.xc.network.if_bridge"] = str("bridge" in cloners).lower()
            attrs["driver.xc.network.ip_forwarding"] = self.sysctl("net.inet.ip.forwarding")
            info = self.pfctl("-s", "info", ok_codes=(0, 1))
            enabled = "Status: Enabled" in info
            attrs["driver.xc.network.pf"] = "enabled" if enabled else "disabled"
            nat_rules = self.pfctl("-s", "nat", ok_codes=(0, 1)) if enabled else ""
        except CommandFailed as exc:
            return NetworkProbe(False, f"network probe failed: {exc}", attrs)
        reason = self._probe_reason(attrs, nat_rules)
        attrs["driver.xc.network.bridge_mode"] = "0" if reason else "1"
        return NetworkProbe(not reason, reason, attrs)

    def _probe_reason(self, attrs: dict[str, str], nat_rules: str) -> str:
        a = self.config.pf_anchor
        if attrs["driver.xc.network.vimage"] != "1":
            return "the kernel lacks VIMAGE (kern.features.vimage): bridge/none need a vnet kernel"
        if attrs["driver.xc.network.epair"] != "true":
            return "epair(4) is not available: kldload if_epair (if_epair_load=YES)"
        if attrs["driver.xc.network.if_bridge"] != "true":
            return "if_bridge(4) is not available: kldload if_bridge (if_bridge_load=YES)"
        if attrs["driver.xc.network.pf"] != "enabled":
            return "pf is not enabled: set pf_enable=YES and load the pf.conf in jails/README.md"
        if f'rdr-anchor "{a}/*"' not in nat_rules:
            return f'pf.conf lacks rdr-anchor "{a}/*" (and nat-anchor, anchor): published ports' \
                   " would not be forwarded"
        if self.config.nat and attrs["driver.xc.network.ip_forwarding"] != "1":
            return "net.inet.ip.forwarding=0: set gateway_enable=YES for outbound nat"
        return ""
