"""FreeBSD alloc networks through exact command tables (ifconfig(8), jail(8), jexec(8), route(8),
pfctl(8) cannot run on Linux), and the task jail joining its alloc's parent jail.

Replies follow the tools' documented behaviour: ``ifconfig epair create`` prints the a end it
made (``epair0a``), ``ifconfig <missing>`` exits 1 with "interface ... does not exist",
``jail -r`` of an absent jail exits 1 with ``"<name>" not found``.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import pytest

from jails import JailSpec, Limits
from jails._cmd import Result
from jails.errors import CommandFailed, SpecError
from jails.freebsd import FreeBSDRuntime
from jails.jailparams import jail_create_argv, jail_ref
from jails.net import NetworkConfig, NetworkError, PortMapping
from jails.net.freebsdnet import FreeBSDNetworks
from tests.jails.test_freebsd import FakeLauncher

ALLOC = "0123abcd-5678-4000-8000-00000000aaaa"
KEY = "0123abcd5678"
PJ = f"xc_{KEY}"
IF = "xcv" + __import__("hashlib").sha256(f"xc-{KEY}".encode()).hexdigest()[:10]


class NetRecorder:
    """Records argv (+ stdin) and answers from (argv prefix -> rc, stdout, stderr) replies."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.inputs: list[str | None] = []
        self.replies: list[tuple[list[str], int, str, str, bool]] = []

    def reply(self, prefix: list[str], rc: int = 0, stdout: str = "", stderr: str = "",
              *, exact: bool = False) -> None:
        self.replies.insert(0, (prefix, rc, stdout, stderr, exact))

    def __call__(self, argv: Sequence[str], *, ok_codes: Collection[int] = (0,),
                 timeout_s: float | None = 60.0, input: str | None = None) -> Result:
        args = list(argv)
        self.calls.append(args)
        self.inputs.append(input)
        rc, out, err = 0, "", ""
        for prefix, r, o, e, exact in self.replies:
            if (args == prefix) if exact else (args[: len(prefix)] == prefix):
                rc, out, err = r, o, e
                break
        if rc not in ok_codes:
            raise CommandFailed(args, rc, err)
        return Result(tuple(args), rc, out, err)


@pytest.fixture
def rec() -> NetRecorder:
    r = NetRecorder()
    r.reply(["/sbin/ifconfig", "xcbr0"], 1, "", "ifconfig: interface xcbr0 does not exist\n",
            exact=True)
    r.reply(["/sbin/ifconfig", "epair", "create"], 0, "epair0a\n")
    return r


def nets(rec: NetRecorder, tmp_path: Path, **cfg: Any) -> FreeBSDNetworks:
    return FreeBSDNetworks(tmp_path / "state", NetworkConfig(**cfg), runner=rec)


def test_bridge_create_table(rec: NetRecorder, tmp_path: Path) -> None:
    n = nets(rec, tmp_path)
    net = n.ensure(ALLOC, "bridge", [PortMapping("http", 28080, 8080)], task="web")
    assert (net.address, net.prefix_len, net.gateway) == ("10.213.0.2", 16, "10.213.0.1")
    assert net.parent_jail == PJ and net.netns_path == ""
    assert net.jail_spec_fields() == {"network": "parent", "parent_jail": PJ}
    jexec = ["/usr/sbin/jexec", PJ]
    assert rec.calls == [
        ["/sbin/ifconfig", "xcbr0"],
        ["/sbin/ifconfig", "bridge", "create", "name", "xcbr0"],
        ["/sbin/ifconfig", "xcbr0", "inet", "10.213.0.1/16", "up"],
        ["/sbin/ifconfig", "epair", "create"],
        ["/sbin/ifconfig", "epair0a", "name", IF + "a"],
        ["/sbin/ifconfig", "epair0b", "name", IF + "b"],
        ["/sbin/ifconfig", "xcbr0", "addm", IF + "a"],
        ["/sbin/ifconfig", IF + "a", "up"],
        ["/usr/sbin/jail", "-c", f"name={PJ}", "path=/", f"host.hostname={PJ}", "vnet",
         f"vnet.interface={IF}b", "persist", "children.max=256"],
        [*jexec, "/sbin/ifconfig", "lo0", "inet", "127.0.0.1/8", "up"],
        [*jexec, "/sbin/ifconfig", IF + "b", "inet", "10.213.0.2/16", "up"],
        [*jexec, "/sbin/route", "-q", "add", "default", "10.213.0.1"],
        ["/sbin/pfctl", "-a", f"xc/{KEY}", "-f", "-"],
    ]
    assert rec.inputs[-1] == ("rdr pass inet proto { tcp udp } from any to self port 28080 "
                              "-> 10.213.0.2 port 8080\n")


def test_teardown_table_reverses_it(rec: NetRecorder, tmp_path: Path) -> None:
    n = nets(rec, tmp_path)
    n.ensure(ALLOC, "bridge", [PortMapping("http", 28080, 8080)], task="web")
    rec.calls.clear()
    assert n.release(ALLOC, task="web")
    assert rec.calls == [
        ["/sbin/pfctl", "-a", f"xc/{KEY}", "-F", "all"],
        ["/usr/sbin/jail", "-r", PJ],
        ["/sbin/ifconfig", IF + "a", "destroy"],
    ]
    assert n.get(ALLOC) is None and n.leases.alloc_keys() == []


def test_second_task_reloads_the_anchor_only(rec: NetRecorder, tmp_path: Path) -> None:
    n = nets(rec, tmp_path)
    n.ensure(ALLOC, "bridge", [PortMapping("http", 28080, 8080)], task="web")
    rec.calls.clear()
    net = n.ensure(ALLOC, "bridge", [PortMapping("admin", 28081, 9000, "192.0.2.7")], task="adm")
    assert rec.calls == [["/sbin/pfctl", "-a", f"xc/{KEY}", "-f", "-"]]
    assert rec.inputs[-1] == (
        "rdr pass inet proto { tcp udp } from any to 192.0.2.7 port 28081 -> 10.213.0.2 port "
        "9000\nrdr pass inet proto { tcp udp } from any to self port 28080 -> 10.213.0.2 port "
        "8080\n")
    assert net.port_map() == {"admin": 9000, "http": 8080}
    rec.calls.clear()
    assert not n.release(ALLOC, task="web")
    assert rec.calls == [["/sbin/pfctl", "-a", f"xc/{KEY}", "-f", "-"]]


def test_none_and_alias_tables(rec: NetRecorder, tmp_path: Path) -> None:
    n = nets(rec, tmp_path, alias_interface="vtnet0", alias_pool="192.0.2.16/28")
    n.ensure(ALLOC, "none", task="t")
    assert rec.calls == [
        ["/usr/sbin/jail", "-c", f"name={PJ}", "path=/", f"host.hostname={PJ}", "vnet",
         "persist", "children.max=256"],
        ["/usr/sbin/jexec", PJ, "/sbin/ifconfig", "lo0", "inet", "127.0.0.1/8", "up"],
    ]
    n.release(ALLOC, task="t")
    rec.calls.clear()
    other = "fedcba98-7654-4000-8000-00000000bbbb"
    pj2 = "xc_fedcba987654"
    net = n.ensure(other, "alias", [PortMapping("http", 8080)], task="t")
    assert (net.address, net.prefix_len) == ("192.0.2.17", 32)
    assert rec.calls == [
        ["/sbin/ifconfig", "vtnet0", "inet", "192.0.2.17/32", "alias"],
        ["/usr/sbin/jail", "-c", f"name={pj2}", "path=/", f"host.hostname={pj2}",
         "ip4.addr=192.0.2.17", "persist", "children.max=256"],
        ["/sbin/pfctl", "-a", "xc/fedcba987654", "-f", "-"],
    ]
    rec.calls.clear()
    n.release(other, task="t")
    assert rec.calls == [
        ["/sbin/pfctl", "-a", "xc/fedcba987654", "-F", "all"],
        ["/usr/sbin/jail", "-r", pj2],
        ["/sbin/ifconfig", n.names(other).host_if + "a", "destroy"],
        ["/sbin/ifconfig", "vtnet0", "inet", "192.0.2.17", "-alias"],
    ]


def test_parent_jails_carry_what_their_children_may_have(rec: NetRecorder,
                                                         tmp_path: Path) -> None:
    n = FreeBSDNetworks(tmp_path / "state", NetworkConfig(), runner=rec, parent_params={
        "allow.raw_sockets": "1", "enforce_statfs": "1"})
    n.ensure(ALLOC, "none", task="t")
    assert rec.calls[0][-3:] == ["children.max=256", "allow.raw_sockets=1", "enforce_statfs=1"]
    with pytest.raises(NetworkError) as err:
        FreeBSDNetworks(tmp_path / "s2", NetworkConfig(), runner=rec,
                        parent_params={"path": "/x"})
    assert err.value.field == "parent_params"


def test_alias_needs_its_options(rec: NetRecorder, tmp_path: Path) -> None:
    with pytest.raises(NetworkError) as err:
        nets(rec, tmp_path).ensure(ALLOC, "alias", task="t")
    assert err.value.field == "network.alias_interface" and rec.calls == []


def test_a_missing_alias_interface_names_the_option(rec: NetRecorder, tmp_path: Path) -> None:
    rec.reply(["/sbin/ifconfig", "vtnet9"], 1, "", "ifconfig: interface vtnet9 does not exist\n")
    n = nets(rec, tmp_path, alias_interface="vtnet9", alias_pool="192.0.2.16/28")
    with pytest.raises(NetworkError) as err:
        n.ensure(ALLOC, "alias", task="t")
    assert err.value.field == "network.alias_interface" and "vtnet9" in err.value.message
    assert not any(c[0] == "/usr/sbin/jail" and c[1] == "-c" for c in rec.calls)
    assert n.get(ALLOC) is None  # the lease went with the failed setup


def test_failed_setup_is_undone_in_reverse(rec: NetRecorder, tmp_path: Path) -> None:
    rec.reply(["/usr/sbin/jexec", PJ, "/sbin/route"], 1, "", "route: writing to routing "
              "socket: Network is unreachable\n")
    rec.reply(["/usr/sbin/jail", "-r"], 1, "", f'jail: "{PJ}" not found\n')
    n = nets(rec, tmp_path)
    with pytest.raises(CommandFailed):
        n.ensure(ALLOC, "bridge", task="t")
    route = rec.calls.index(["/usr/sbin/jexec", PJ, "/sbin/route", "-q", "add", "default",
                             "10.213.0.1"])
    assert rec.calls[route + 1:] == [
        ["/sbin/pfctl", "-a", f"xc/{KEY}", "-F", "all"],
        ["/usr/sbin/jail", "-r", PJ],
        ["/sbin/ifconfig", IF + "a", "destroy"],
    ]
    assert n.leases.alloc_keys() == []


def test_sweep_finds_parent_jails_and_anchors_by_name(rec: NetRecorder, tmp_path: Path) -> None:
    rec.reply(["/usr/sbin/jls", "name"], 0, f"{PJ}\n{PJ}.xc-0123abcd-web\nother_jail\n")
    rec.reply(["/sbin/pfctl", "-a", "xc", "-s", "Anchors"], 0, "  xc/fedcba987654\n  xc/zz\n")
    n = nets(rec, tmp_path)
    assert n.sweep(live_allocs=[]) == [KEY, "fedcba987654"]
    assert ["/usr/sbin/jail", "-r", PJ] in rec.calls
    assert ["/usr/sbin/jail", "-r", "xc_fedcba987654"] in rec.calls
    assert not any("other_jail" in a for c in rec.calls for a in c)


@pytest.mark.parametrize(("replies", "reason"), [
    ({"kern.features.vimage": "0"}, "VIMAGE"),
    ({"-C": "lo bridge"}, "epair"),
    ({"info": "Status: Disabled"}, "pf is not enabled"),
    ({"nat": 'nat-anchor "xc/*" all'}, 'rdr-anchor "xc/*"'),
    ({}, ""),
])
def test_probe_says_what_to_fix(tmp_path: Path, replies: dict[str, str], reason: str) -> None:
    r = NetRecorder()
    r.reply(["/sbin/sysctl", "-n", "kern.features.vimage"], 0,
            replies.get("kern.features.vimage", "1") + "\n")
    r.reply(["/sbin/sysctl", "-n", "net.inet.ip.forwarding"], 0, "1\n")
    r.reply(["/sbin/ifconfig", "-C"], 0, replies.get("-C", "bridge epair lo tun") + "\n")
    r.reply(["/sbin/pfctl", "-s", "info"], 0, replies.get("info", "Status: Enabled for 1 days"))
    r.reply(["/sbin/pfctl", "-s", "nat"], 0, replies.get(
        "nat", 'nat-anchor "xc/*" all\nrdr-anchor "xc/*" all\n'))
    p = FreeBSDNetworks(tmp_path / "s", NetworkConfig(), runner=r).probe()
    assert p.healthy == (reason == "")
    assert reason in p.reason
    assert p.attributes["driver.xc.network.bridge_mode"] == ("1" if not reason else "0")


# ---- the task jail as a child of the alloc's parent ------------------------------------------

def _spec(tmp_path: Path, **kw: Any) -> JailSpec:
    root = tmp_path / "jailroot"
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc" / "passwd").write_text("root:*:0:0::/root:/bin/sh\n")
    (root / "etc" / "group").write_text("wheel:*:0:root\n")
    base: dict[str, Any] = {"name": "xc-0123abcd-web", "rootfs": root, "argv": ("/bin/web",),
                            "stdout_path": tmp_path / "o", "stderr_path": tmp_path / "e"}
    base.update(kw)
    return JailSpec(**base)


def test_child_jail_params(tmp_path: Path) -> None:
    spec = _spec(tmp_path, network="parent", parent_jail=PJ)
    assert jail_ref(spec) == f"{PJ}.xc-0123abcd-web"
    argv = jail_create_argv(spec, "jail")
    assert argv[:3] == ["jail", "-c", f"name={PJ}.xc-0123abcd-web"]
    assert "ip4=inherit" in argv and "ip6=inherit" in argv
    assert not any(a.startswith("vnet") for a in argv)  # a child shares its parent's stack


@pytest.mark.parametrize(("kw", "field"), [
    ({"network": "parent"}, "parent_jail"),
    ({"network": "parent", "parent_jail": "a.b"}, "parent_jail"),
    ({"parent_jail": PJ}, "parent_jail"),
])
def test_parent_fields_are_checked(tmp_path: Path, kw: dict[str, str], field: str) -> None:
    with pytest.raises(SpecError) as err:
        _spec(tmp_path, **kw)
    assert err.value.field == field


def test_freebsd_runtime_addresses_the_child_by_its_full_name(tmp_path: Path) -> None:
    from tests.jails.test_freebsd import Recorder

    rec, launcher = Recorder(), FakeLauncher()
    rec.reply(["/usr/sbin/jls"], 0, "7\n")
    rt = FreeBSDRuntime(tmp_path / "state", runner=rec, launcher=launcher,
                        racct_reader=lambda s: "cputime=1\nmemoryuse=4096\n",
                        inode_of=rec.inode_of)
    spec = _spec(tmp_path, network="parent", parent_jail=PJ,
                 limits=Limits(memory_bytes=64 << 20))
    rt.start(spec)
    full = f"{PJ}.xc-0123abcd-web"
    assert next(c for c in rec.calls if c[0] == "/usr/sbin/jail")[2] == f"name={full}"
    assert ["/usr/sbin/jls", "-j", full, "jid"] in rec.calls
    rules = [c[2] for c in rec.calls if c[:2] == ["/usr/bin/rctl", "-a"]]
    assert rules and all(r.startswith(f"jail:{full}:memoryuse:") for r in rules)
    oom = launcher.oom[0]
    assert oom is not None and f"{full}:" in oom  # devd reports the child by its full name
    assert launcher.calls[0][0][:2] == ["jail", "7"]  # the supervisor attaches to jid 7
    meta = json.loads((tmp_path / "state" / "tasks" / spec.name / "spec.json").read_text())
    assert meta["jail"] == full
    assert rt.stats(spec.name).memory_rss_bytes >= 0
    rec.calls.clear()
    rt.destroy(spec.name)
    assert ["/usr/sbin/jail", "-r", full] in rec.calls
    assert ["/usr/bin/rctl", "-r", f"jail:{full}:"] in rec.calls


def test_linux_runtime_refuses_a_parent_jail(tmp_path: Path) -> None:
    from jails.linux import LinuxRuntime

    rt = LinuxRuntime.__new__(LinuxRuntime)  # no runc needed: refused before any effect
    with pytest.raises(SpecError) as err:
        rt.start(_spec(tmp_path, network="parent", parent_jail=PJ))
    assert err.value.field == "network" and "netns" in str(err.value)
