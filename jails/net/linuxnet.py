"""Linux alloc networks: a network namespace per alloc with one end of a veth pair, the other on
a Linux bridge; published ports as iptables DNAT in a per-alloc chain.

What is made (names from ``Names``; ``P`` is the name prefix):

- shared, on first use: the bridge (with the gateway address, ``route_localnet=1``) if absent;
  nat chains ``P-PORTS`` (jumped from PREROUTING and OUTPUT for local destinations, so a request
  from the host itself to 127.0.0.1:port is forwarded too, as docker does for loopback-published
  ports) and ``P-POST`` (masquerades loopback sources leaving to the bridge: the task could not
  answer 127.0.0.1 otherwise; and the pool, with ``nat``); filter chain ``P-FWD`` (accepts
  bridge-to-bridge, replies and DNATed traffic, for hosts whose FORWARD policy drops).
- per alloc: namespace ``P-<key>`` (lo up; ``eth0`` with the address and a default route via the
  gateway), host veth ``<P[:2]>v<hash>`` on the bridge, chain ``P-<key>`` jumped from ``P-PORTS``.

Tools: ``ip`` (batched through stdin), ``iptables``/``iptables-restore``/``iptables-save`` (the
nf_tables or legacy flavour, whichever the host's alternatives select) and /proc/sys.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

from jails import _cmd
from jails.errors import CommandFailed
from jails.net.config import AllocNetwork, Names, NetworkConfig
from jails.net.leases import Lease
from jails.net.manager import NetworkProbe, Networks

NETNS_DIR = Path("/var/run/netns")
SYS_NET = Path("/sys/class/net")
PROC_SYS = Path("/proc/sys")


class Ip:
    """The ``ip`` chokepoint; several commands go in one process through ``-batch -``."""

    def __init__(self, run: _cmd.InputRunner, ip_bin: str = "ip") -> None:
        self.run, self.bin = run, ip_bin

    def batch(self, lines: list[str], netns: str = "") -> None:
        argv = [self.bin, *(["-n", netns] if netns else []), "-batch", "-"]
        self.run(argv, input="".join(line + "\n" for line in lines))

    def __call__(self, *args: str, ok_codes: tuple[int, ...] = (0,)) -> _cmd.Result:
        return self.run([self.bin, *args], ok_codes=ok_codes)


class Iptables:
    """The iptables chokepoint: single rules, a restore of whole chains, and the saved table."""

    def __init__(self, run: _cmd.InputRunner, iptables_bin: str = "iptables") -> None:
        self.run, self.bin = run, iptables_bin

    def __call__(self, table: str, *args: str, ok_codes: tuple[int, ...] = (0,)) -> _cmd.Result:
        return self.run([self.bin, "-w", "-t", table, *args], ok_codes=ok_codes)

    def restore(self, text: str) -> None:
        # --noflush: only the chains declared in text are (re)filled; the rest stays.
        self.run([self.bin + "-restore", "-w", "--noflush"], input=text)

    def save(self, table: str) -> str:
        return self.run([self.bin + "-save", "-t", table]).stdout

    def version(self) -> str:
        return self.run([self.bin, "-V"], timeout_s=10).stdout.strip()


def write_sysctl(key: str, value: str, proc_sys: Path = PROC_SYS) -> None:
    """The sysctl chokepoint on Linux: /proc/sys/<key> (``/``-separated: an interface name may
    hold a dot)."""
    (proc_sys / key).write_text(value)


def _missing(exc: CommandFailed) -> bool:
    text = exc.stderr.lower()
    return any(s in text for s in ("no such", "does not exist", "cannot find", "not found"))


class LinuxNetworks(Networks):
    backend = "linux"

    def __init__(self, state_root: Path, config: NetworkConfig,
                 runner: _cmd.InputRunner = _cmd.run, *, ip_bin: str = "ip",
                 iptables_bin: str = "iptables", netns_dir: Path = NETNS_DIR,
                 proc_sys: Path = PROC_SYS) -> None:
        super().__init__(state_root, config, runner)
        self.ip = Ip(runner, ip_bin)
        self.ipt = Iptables(runner, iptables_bin)
        self.netns_dir = Path(netns_dir)
        self.proc_sys = Path(proc_sys)
        p = config.name_prefix
        self.ports_chain, self.post_chain, self.fwd_chain = f"{p}-PORTS", f"{p}-POST", f"{p}-FWD"
        self._made_marker = self.leases.root / f"bridge-{config.bridge}.made"
        self._rules_ok = False
        self._key_re = re.compile(rf"^{re.escape(p)}-([a-z0-9]{{12}})$")

    # ---- shared objects ------------------------------------------------------------------------

    def _ensure_host(self, mode: str) -> None:
        if mode != "bridge":
            return
        cfg = self.config
        br = cfg.bridge
        addrs = [f"{cfg.ipv4_gateway}/{cfg.prefix_len}"]
        if cfg.ipv6_pool:
            addrs.append(f"{cfg.ipv6_gateway}/{cfg.ipv6_pool.split('/')[1]}")
        if not (SYS_NET / br).exists():
            self._made_marker.write_text(br)  # before: a crash right after still owns it
            self.ip.batch([f"link add {br} type bridge",
                           *(f"addr add {a} dev {br}" for a in addrs), f"link set {br} up"])
            self._rules_ok = False
        elif not self._rules_ok:
            self.ip.batch([*(f"addr replace {a} dev {br}" for a in addrs), f"link set {br} up"])
        if not self._rules_ok:
            # Delivers DNATed 127.0.0.1 traffic to the bridge instead of dropping it as martian.
            write_sysctl(f"net/ipv4/conf/{br}/route_localnet", "1", self.proc_sys)
            if cfg.nat:
                write_sysctl("net/ipv4/ip_forward", "1", self.proc_sys)
            self._shared_rules()
            self._rules_ok = True

    def _shared_rules(self) -> None:
        cfg, br = self.config, self.config.bridge
        self.ipt("nat", "-N", self.ports_chain, ok_codes=(0, 1))  # never flushed: alloc jumps
        post = [f"-A {self.post_chain} -s 127.0.0.0/8 -o {br} -j MASQUERADE"]
        fwd = [f"-A {self.fwd_chain} -i {br} -o {br} -j ACCEPT",
               f"-A {self.fwd_chain} -o {br} -m conntrack --ctstate RELATED,ESTABLISHED,DNAT "
               "-j ACCEPT"]
        if cfg.nat:
            out = f"-o {cfg.external_interface}" if cfg.external_interface else f"! -o {br}"
            post.append(f"-A {self.post_chain} -s {cfg.ipv4_pool} {out} -j MASQUERADE")
            fwd.append(f"-A {self.fwd_chain} -i {br} {out} -j ACCEPT")
        self.ipt.restore("\n".join(["*nat", f":{self.post_chain} - [0:0]", *post, "COMMIT",
                                    "*filter", f":{self.fwd_chain} - [0:0]", *fwd, "COMMIT", ""]))
        local = ["-m", "addrtype", "--dst-type", "LOCAL"]
        for table, chain, match, target in (("nat", "PREROUTING", local, self.ports_chain),
                                            ("nat", "OUTPUT", local, self.ports_chain),
                                            ("nat", "POSTROUTING", [], self.post_chain),
                                            ("filter", "FORWARD", [], self.fwd_chain)):
            rule = [*match, "-j", target]
            if self.ipt(table, "-C", chain, *rule, ok_codes=(0, 1, 2)).returncode != 0:
                self.ipt(table, "-I", chain, "1", *rule)

    def _remove_host(self) -> None:
        local = ["-m", "addrtype", "--dst-type", "LOCAL"]
        for table, chain, match, target in (("nat", "PREROUTING", local, self.ports_chain),
                                            ("nat", "OUTPUT", local, self.ports_chain),
                                            ("nat", "POSTROUTING", [], self.post_chain),
                                            ("filter", "FORWARD", [], self.fwd_chain)):
            self._delete_all(table, chain, [*match, "-j", target])
        for table, chain in (("nat", self.ports_chain), ("nat", self.post_chain),
                             ("filter", self.fwd_chain)):
            self._drop_chain(table, chain)
        if self._made_marker.exists():
            if (SYS_NET / self.config.bridge).exists():
                self.ip("link", "del", self.config.bridge)
            self._made_marker.unlink()
        self._rules_ok = False

    def _delete_all(self, table: str, chain: str, rule: list[str]) -> None:
        for _ in range(64):  # duplicates only after crashes; bounded all the same
            if self.ipt(table, "-D", chain, *rule, ok_codes=(0, 1, 2)).returncode != 0:
                return

    def _drop_chain(self, table: str, chain: str) -> None:
        if self.ipt(table, "-F", chain, ok_codes=(0, 1, 2)).returncode == 0:
            self.ipt(table, "-X", chain, ok_codes=(0, 1, 2))

    # ---- per alloc -------------------------------------------------------------------------------

    def _create(self, lease: Lease, names: Names) -> None:
        ns = names.netns
        if lease.mode == "none":
            self.ip.batch([f"netns add {ns}"])
            self.ip.batch(["link set lo up"], netns=ns)
            return
        cfg = self.config
        self.ip.batch([f"netns add {ns}",
                       f"link add {names.host_if} type veth peer name eth0 netns {ns}",
                       f"link set {names.host_if} master {cfg.bridge} up"])
        inner = ["link set lo up", f"addr add {lease.address}/{cfg.prefix_len} dev eth0",
                 "link set eth0 up", f"route add default via {cfg.ipv4_gateway}"]
        if lease.address6:
            inner[2:2] = [f"addr add {lease.address6}/{cfg.ipv6_pool.split('/')[1]} dev eth0 "
                          "nodad"]
            inner.append(f"route add ::/0 via {cfg.ipv6_gateway}")
        self.ip.batch(inner, netns=ns)

    def _publish(self, lease: Lease, names: Names, *, first: bool) -> None:
        chain = names.netns
        ports = lease.ports()
        if not ports:
            self._unpublish(chain)
            return
        rules = []
        for p in ports:
            dst = f"-d {p.host_ip}/32 " if p.host_ip else ""
            for proto in ("tcp", "udp"):
                rules.append(f"-A {chain} {dst}-p {proto} -m {proto} --dport {p.value} "
                             f"-j DNAT --to-destination {lease.address}:{p.to}")
        jump = [f"-A {self.ports_chain} -j {chain}"] if first else []
        self.ipt.restore("\n".join(["*nat", f":{chain} - [0:0]", *rules, *jump, "COMMIT", ""]))
        if not first and self.ipt("nat", "-C", self.ports_chain, "-j", chain,
                                  ok_codes=(0, 1, 2)).returncode != 0:
            self.ipt("nat", "-A", self.ports_chain, "-j", chain)

    def _unpublish(self, chain: str) -> None:
        self._delete_all("nat", self.ports_chain, ["-j", chain])
        self._drop_chain("nat", chain)

    def _teardown(self, names: Names, lease: Lease | None) -> None:
        if lease is None or lease.ports():
            self._unpublish(names.netns)
        # The veth first, synchronously: a deleted namespace frees its devices only later.
        if (SYS_NET / names.host_if).exists():
            try:
                self.ip("link", "del", names.host_if)
            except CommandFailed as exc:
                if not _missing(exc):
                    raise
        if (self.netns_dir / names.netns).exists():
            try:
                self.ip("netns", "del", names.netns)
            except CommandFailed as exc:
                if not _missing(exc):
                    raise

    def _leftover_keys(self) -> set[str]:
        keys: set[str] = set()
        with contextlib.suppress(FileNotFoundError):
            for entry in os.listdir(self.netns_dir):
                if m := self._key_re.match(entry):
                    keys.add(m.group(1))
        for line in self.ipt.save("nat").splitlines():
            if line.startswith(":") and (m := self._key_re.match(line[1:].split(" ", 1)[0])):
                keys.add(m.group(1))
        return keys

    def _result(self, lease: Lease, names: Names) -> AllocNetwork:
        bridge = lease.mode == "bridge"
        return AllocNetwork(
            alloc_id=lease.alloc_id, mode=lease.mode, address=lease.address,
            prefix_len=self.config.prefix_len if bridge else 0,
            gateway=self.config.ipv4_gateway if bridge else "", address6=lease.address6,
            ports=lease.ports(), netns_path=str(self.netns_dir / names.netns),
            holders=tuple(sorted(lease.holders)))

    # ---- probe -----------------------------------------------------------------------------------

    def probe(self) -> NetworkProbe:
        cfg = self.config
        attrs = {"driver.xc.network.backend": "linux", "driver.xc.network.bridge": cfg.bridge,
                 "driver.xc.network.ipv4_pool": cfg.ipv4_pool,
                 "driver.xc.network.nat": str(cfg.nat).lower()}
        try:
            for tool in (self.ip.bin, self.ipt.bin, self.ipt.bin + "-restore"):
                if shutil.which(tool) is None:
                    return NetworkProbe(False, f"{tool} not found: install iproute2 and "
                                        "iptables for bridge networking", attrs)
            if os.geteuid() != 0:
                return NetworkProbe(False, "bridge networking needs root", attrs)
            attrs["driver.xc.network.firewall"] = self.ipt.version()
            self.ipt("nat", "-S", "PREROUTING")
            attrs["driver.xc.network.bridge_exists"] = str((SYS_NET / cfg.bridge).exists()).lower()
            fwd = (self.proc_sys / "net/ipv4/ip_forward").read_text().strip()
            attrs["driver.xc.network.ip_forward"] = fwd
        except (CommandFailed, OSError) as exc:
            return NetworkProbe(False, f"the iptables nat table is not usable ({exc}): load the "
                                "nf_nat/iptable_nat modules or install iptables", attrs)
        attrs["driver.xc.network.bridge_mode"] = "1"
        return NetworkProbe(True, "", attrs)
