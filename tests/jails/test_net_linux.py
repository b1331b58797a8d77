"""Alloc networks on Linux, for real: namespaces, veths, a test-made bridge, iptables DNAT.

Traffic goes only to loopback, to the test bridge's own address, or to addresses inside the
namespaces the test made (a test-only 10.x pool on that bridge). Servers are busybox httpd run
in the alloc's namespace with ``ip netns exec``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from jails.errors import CommandFailed
from jails.net import AllocNetwork, NetworkConfig, NetworkError, PortMapping
from jails.net.leases import Lease
from jails.net.linuxnet import LinuxNetworks
from tests.fixtures.network import (
    assert_routed_to_test_bridge,
    leftovers,
    net_bridge,
    net_prefix,
)

pytestmark = pytest.mark.root

A = "aaaaaaaa-0000-4000-8000-000000000001"
B = "bbbbbbbb-0000-4000-8000-000000000002"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> str:
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return str(r.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Callable[[AllocNetwork, str], None]]:
    """Starts busybox httpd on 8080 in an alloc's namespace serving ``page``; killed after."""
    procs: list[subprocess.Popen[bytes]] = []

    def serve(net: AllocNetwork, page: str) -> None:
        www = tmp_path / f"www-{len(procs)}"
        www.mkdir()
        (www / "index.html").write_text(page)
        ns = Path(net.netns_path).name
        procs.append(subprocess.Popen(["ip", "netns", "exec", ns, "busybox", "httpd", "-f",
                                       "-p", "8080", "-h", str(www)]))

    yield serve
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGKILL)
        p.wait()


def in_netns(net: AllocNetwork, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", Path(net.netns_path).name, *argv],
                          capture_output=True, text=True, timeout=20, check=False)


def assert_clean(nets: LinuxNetworks, state: Path) -> None:
    left = leftovers(net_prefix(), net_bridge(), state)
    assert left.empty(), left
    for key in (A, B):
        assert nets.get(key) is None


def test_two_allocs_publish_their_own_pages_and_reach_each_other(
        linux_networks: Callable[..., LinuxNetworks], net_state: Path,
        servers: Callable[[AllocNetwork, str], None]) -> None:
    nets = linux_networks()
    pa, pb = free_port(), free_port()
    a = nets.ensure(A, "bridge", [PortMapping("http", pa, 8080)], task="web")
    b = nets.ensure(B, "bridge", [PortMapping("http", pb, 8080, "127.0.0.1")], task="web")
    assert a.address != b.address and a.gateway == b.gateway == nets.config.ipv4_gateway
    assert a.port_map() == {"http": 8080}
    assert a.jail_spec_fields() == {"network": "netns", "netns_path": a.netns_path}
    servers(a, "page of A\n")
    servers(b, "page of B\n")
    assert get(f"http://127.0.0.1:{pa}/") == "page of A\n"
    assert get(f"http://127.0.0.1:{pb}/") == "page of B\n"
    # A on every local address (here the bridge's own), B only on the 127.0.0.1 it asked for.
    assert get(f"http://{a.gateway}:{pa}/") == "page of A\n"
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{a.gateway}:{pb}/", timeout=1)
    assert_routed_to_test_bridge(a.address)
    fetched = in_netns(a, "busybox", "wget", "-q", "-O", "-", f"http://{b.address}:8080/")
    assert fetched.stdout == "page of B\n", fetched.stderr
    route = in_netns(a, "ip", "route", "show", "default").stdout
    assert f"via {a.gateway}" in route
    assert nets.release(A, task="web") and nets.release(B, task="web")
    assert_clean(nets, net_state)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{pa}/", timeout=1)


def test_none_sees_only_loopback(linux_networks: Callable[..., LinuxNetworks],
                                 net_state: Path) -> None:
    nets = linux_networks()
    n = nets.ensure(A, "none", task="t")
    assert (n.address, n.ports) == ("", ())
    dev = in_netns(n, "cat", "/proc/net/dev").stdout.splitlines()[2:]
    assert {line.split(":")[0].strip() for line in dev} == {"lo"}
    assert "UP" in in_netns(n, "ip", "link", "show", "lo").stdout
    nets.release(A, task="t")
    assert_clean(nets, net_state)


def test_tasks_of_one_alloc_share_it_until_the_last_release(
        linux_networks: Callable[..., LinuxNetworks], net_state: Path) -> None:
    nets = linux_networks()
    p1, p2 = free_port(), free_port()
    first = nets.ensure(A, "bridge", [PortMapping("http", p1, 8080)], task="web")
    again = nets.ensure(A, "bridge", [PortMapping("http", p1, 8080)], task="web")
    assert again == first  # idempotent
    both = nets.ensure(A, "bridge", [PortMapping("admin", p2, 9090)], task="admin")
    assert both.address == first.address and both.netns_path == first.netns_path
    assert both.port_map() == {"admin": 9090, "http": 8080}
    assert both.holders == ("admin", "web")
    rules = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True).stdout
    assert f"--dport {p2} -j DNAT --to-destination {first.address}:9090" in rules
    with pytest.raises(NetworkError) as err:
        nets.ensure(A, "none", task="other")
    assert err.value.field == "network_mode"
    assert not nets.release(A, task="web")
    rules = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True).stdout
    assert f"--dport {p1} " not in rules and f"--dport {p2} " in rules
    # A fresh manager (the plugin restarted) finds the alloc's network as it was.
    reborn = LinuxNetworks(net_state, nets.config)
    got = reborn.get(A)
    assert got is not None and got.address == first.address and got.holders == ("admin",)
    assert reborn.release(A, task="admin")
    assert reborn.release(A, task="admin")  # idempotent
    assert_clean(nets, net_state)


def test_twenty_concurrent_ensure_release_leak_nothing(
        linux_networks: Callable[..., LinuxNetworks], net_state: Path) -> None:
    nets = linux_networks()
    ids = [f"{i:08x}-cccc-4000-8000-{i:012x}" for i in range(1, 21)]
    ports = [free_port() for _ in ids]

    def cycle(i: int) -> str:
        # Each worker its own manager, as separate plugin processes would be.
        mine = LinuxNetworks(net_state, nets.config)
        net = mine.ensure(ids[i], "bridge", [PortMapping("http", ports[i], 8080)], task="t")
        assert Path(net.netns_path).exists()
        mine.release(ids[i], task="t")
        return net.address

    with ThreadPoolExecutor(20) as pool:
        addresses = list(pool.map(cycle, range(20)))
    assert len(addresses) == 20
    assert_clean(nets, net_state)
    for i in ids:
        assert not Path(f"/sys/class/net/{nets.names(i).host_if}").exists()


def test_a_crash_leaves_objects_the_sweep_removes(
        linux_networks: Callable[..., LinuxNetworks], net_state: Path) -> None:
    nets = linux_networks()
    nets.ensure(A, "bridge", [PortMapping("http", free_port(), 8080)], task="t")
    # B: a setup cut short after its lease and namespace, before anything was marked ready.
    names_b = nets.names(B)
    nets.leases.put(Lease(B, names_b.key, "bridge", "10.0.0.9", holders={"t": ()}))
    subprocess.run(["ip", "netns", "add", names_b.netns], check=True)
    # C: a namespace with our prefix but no lease at all (lease file lost).
    orphan = f"{net_prefix()}-cccccccc0000"
    subprocess.run(["ip", "netns", "add", orphan], check=True)
    assert not leftovers(net_prefix(), net_bridge(), net_state).empty()
    removed = LinuxNetworks(net_state, nets.config).sweep(live_allocs=[A])
    assert sorted(removed) == sorted([names_b.key, "cccccccc0000"])
    left = leftovers(net_prefix(), net_bridge(), net_state)
    assert left.netns == (nets.names(A).netns,) and len(left.leases) == 1
    assert LinuxNetworks(net_state, nets.config).sweep(live_allocs=[]) == [nets.names(A).key]
    assert_clean(nets, net_state)


def test_pool_exhaustion_is_one_error_naming_the_option(
        linux_networks: Callable[..., LinuxNetworks], net_state: Path) -> None:
    base = int(net_prefix().rsplit("-", 1)[1]) % 250
    nets = linux_networks(pool=f"10.239.{base}.0/30")  # gateway .1 and one alloc address .2
    nets.ensure(A, "bridge", task="t")
    with pytest.raises(NetworkError) as err:
        nets.ensure(B, "bridge", task="t")
    assert err.value.field == "network.ipv4_pool"
    assert "network.ipv4_pool" in str(err.value) and "widen" in str(err.value)
    assert nets.get(B) is None and not Path(f"/var/run/netns/{nets.names(B).netns}").exists()
    nets.release(A, task="t")
    assert_clean(nets, net_state)


@pytest.mark.parametrize(("mode", "ports", "field"), [
    ("alias", (), "network_mode"),
    ("host", (), "network_mode"),
    ("weird", (), "network_mode"),
    ("none", (PortMapping("http", 18080, 80),), "ports"),
    ("bridge", (PortMapping("a", 18080, 80), PortMapping("b", 18080, 81)), "ports"),
])
def test_bad_requests_are_refused_before_any_effect(
        linux_networks: Callable[..., LinuxNetworks], net_state: Path, mode: str,
        ports: tuple[PortMapping, ...], field: str) -> None:
    nets = linux_networks()
    with pytest.raises(NetworkError) as err:
        nets.ensure(A, mode, ports, task="t")
    assert err.value.field == field
    if mode == "alias":
        assert "FreeBSD" in str(err.value) and "bridge" in str(err.value)
    assert_clean(nets, net_state)


def test_a_failed_setup_is_undone(linux_networks: Callable[..., LinuxNetworks],
                                  net_state: Path) -> None:
    nets = linux_networks()
    real = nets.run

    def failing(argv: Any, **kw: Any) -> Any:
        if "-restore" in argv[0] and "--to-destination" in (kw.get("input") or ""):
            raise CommandFailed(argv, 1, "iptables-restore: line 3 failed")
        return real(argv, **kw)

    nets.run = failing
    nets.ipt.run = failing
    with pytest.raises(CommandFailed):
        nets.ensure(A, "bridge", [PortMapping("http", free_port(), 8080)], task="t")
    assert_clean(nets, net_state)
    assert not Path(f"/sys/class/net/{nets.names(A).host_if}").exists()


def test_probe_reports_bridge_networking(linux_networks: Callable[..., LinuxNetworks]) -> None:
    p = linux_networks().probe()
    assert p.healthy, p.reason
    assert p.attributes["driver.xc.network.bridge_mode"] == "1"
    assert "iptables" in p.attributes["driver.xc.network.firewall"]


def test_concurrent_tasks_of_one_alloc_hold_it_once_each(
        linux_networks: Callable[..., LinuxNetworks], net_state: Path) -> None:
    nets = linux_networks()
    barrier = threading.Barrier(6)

    def join(i: int) -> str:
        barrier.wait()
        return LinuxNetworks(net_state, nets.config).ensure(A, "bridge", task=f"t{i}").address

    with ThreadPoolExecutor(6) as pool:
        assert len(set(pool.map(join, range(6)))) == 1
    got = nets.get(A)
    assert got is not None and len(got.holders) == 6
    for i in range(6):
        assert nets.release(A, task=f"t{i}") == (i == 5)
    assert_clean(nets, net_state)
    assert os.listdir(net_state / "net" / "leases") == []


def test_ipv6_pool_gives_the_alloc_an_address_and_route(
        linux_networks: Callable[..., LinuxNetworks], net_state: Path) -> None:
    six = f"fd00:{os.getpid() % 0xffff:x}:1::/64"
    nets = linux_networks(ipv6_pool=six)
    n = nets.ensure(A, "bridge", task="t")
    assert n.address6.startswith(six.split("::")[0]) and n.address6 != nets.config.ipv6_gateway
    addrs = in_netns(n, "ip", "-6", "-o", "addr", "show", "dev", "eth0").stdout
    assert f"{n.address6}/64" in addrs
    assert f"default via {nets.config.ipv6_gateway}" in in_netns(n, "ip", "-6", "route").stdout
    nets.release(A, task="t")
    assert_clean(nets, net_state)


def test_a_dead_sessions_networks_are_swept_by_name(linux_networks: Callable[..., LinuxNetworks],
                                                    tmp_path: Path) -> None:
    from tests.fixtures import network as netfix
    from tests.fixtures.sweep import is_stale

    dead = subprocess.Popen(["true"])
    dead.wait()
    prefix, bridge = netfix.net_prefix(dead.pid), netfix.net_bridge(dead.pid)
    cfg = linux_networks().config
    left = LinuxNetworks(tmp_path / "dead", NetworkConfig(
        bridge=bridge, ipv4_pool="10.239.255.0/30", name_prefix=prefix))
    left.ensure(A, "bridge", [PortMapping("http", free_port(), 80)], task="t")
    assert not leftovers(prefix, bridge).empty()
    netfix.sweep_leftovers(is_stale)
    assert leftovers(prefix, bridge, shared=True).empty()
    assert not Path(f"/sys/class/net/{bridge}").exists()
    assert cfg.name_prefix == net_prefix()  # this session's objects were left alone
