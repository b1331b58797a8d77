"""The network conformance cases (net_conformance.py) on both backends: Linux for real (runc tasks
in jails.net namespaces on a test bridge, iptables DNAT), FreeBSD on the fake host
(tests/fixtures/fakefreebsdnet.py: vnet parent jails as namespaces, epairs as veths).

Record-and-check where the Linux fake cannot act as FreeBSD: pf (the rdr rules loaded into the
alloc's anchor are checked instead of forwarded traffic).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from jails import Runtime
from jails.net import AllocNetwork, NetworkConfig, Networks
from jails.net.freebsdnet import FreeBSDNetworks
from jails.net.linuxnet import LinuxNetworks
from tests.fixtures.execs import run_in
from tests.fixtures.fakefreebsd import FakeFreeBSDHost
from tests.fixtures.fakefreebsdnet import FakeFreeBSDNet
from tests.fixtures.network import (
    assert_routed_to_test_bridge,
    leftovers,
    net_bridge,
    net_prefix,
    network_usable,
    remove_by_name,
    test_pool,
)
from tests.fixtures.rootfs import rootfs_copy
from tests.fixtures.runc import runc_usable
from tests.fixtures.sweep import test_name
from tests.jails.net_conformance import NetworkConformance

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def net_rootfs(busybox_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Own copy: the tasks write their pages into it, and the fake finds jails by root dir.
    return rootfs_copy(busybox_rootfs, tmp_path_factory.mktemp("netfs") / "root")


@pytest.fixture(scope="module")
def usable() -> Iterator[None]:
    reason = network_usable() or runc_usable()
    if reason:
        pytest.skip(reason)
    yield
    remove_by_name(net_prefix(), net_bridge())
    remove_by_name(net_prefix(), net_bridge(suffix="f"))


class TestLinuxNetworks(NetworkConformance):
    @pytest.fixture
    def rootfs(self, net_rootfs: Path) -> Path:
        return net_rootfs

    @pytest.fixture
    def nets(self, usable: None, tmp_path: Path) -> Iterator[Networks]:
        cfg = NetworkConfig(bridge=net_bridge(), ipv4_pool=test_pool(2),
                            name_prefix=net_prefix())
        n = LinuxNetworks(tmp_path / "netstate", cfg)
        yield n
        n.sweep([])

    @pytest.fixture
    def rt(self, usable: None, linux_runtime_factory: Callable[[], Runtime]) -> Runtime:
        return linux_runtime_factory()

    def published(self, nets: Networks, net: AllocNetwork, port: int) -> str:
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                    return str(r.read().decode())
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stack_interfaces(self, rt: Runtime, name: str, net: AllocNetwork) -> set[str]:
        out = run_in(rt, name, ["/bin/cat", "/proc/net/dev"], 10).stdout.decode()
        return {line.split(":")[0].strip() for line in out.splitlines()[2:]}

    def assert_nothing_left(self, nets: Networks) -> None:
        left = leftovers(net_prefix(), net_bridge(), nets.leases.root.parent)
        assert left.empty(), left


class TestFreeBSDNetworksOnFakeHost(NetworkConformance):
    @pytest.fixture
    def rootfs(self, net_rootfs: Path) -> Path:
        return net_rootfs

    @pytest.fixture
    def fake(self, usable: None, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[FakeFreeBSDNet]:
        work = tmp_path_factory.mktemp(test_name("fbsdnet"))
        host = FakeFreeBSDHost()
        fake = FakeFreeBSDNet(host, work, net_prefix())
        yield fake
        fake.cleanup()
        host.cleanup()

    @pytest.fixture
    def nets(self, fake: FakeFreeBSDNet, tmp_path: Path) -> Iterator[Networks]:
        cfg = NetworkConfig(bridge=net_bridge(suffix="f"), ipv4_pool=test_pool(3),
                            name_prefix=net_prefix())
        n = FreeBSDNetworks(tmp_path / "netstate", cfg, runner=fake.run)
        yield n
        n.sweep([])
        with contextlib.suppress(Exception):
            n.remove_host()

    @pytest.fixture
    def rt(self, fake: FakeFreeBSDNet, tmp_path: Path) -> Runtime:
        return fake.runtime(tmp_path / "rtstate")

    def published(self, nets: Networks, net: AllocNetwork, port: int) -> str:
        # pf cannot run here: the anchor's rules are what FreeBSD would forward with.
        fake: FakeFreeBSDNet = nets.run.__self__  # type: ignore[attr-defined]
        rules = fake.anchors[nets.names(net.alloc_id).anchor]
        assert rules == (f"rdr pass inet proto {{ tcp udp }} from any to self port {port} -> "
                         f"{net.address} port 8080\n")
        # ...and the address they forward to serves the task's page (from the host).
        assert_routed_to_test_bridge(net.address)
        with urllib.request.urlopen(f"http://{net.address}:8080/", timeout=5) as r:
            return str(r.read().decode())

    def stack_interfaces(self, rt: Runtime, name: str, net: AllocNetwork) -> set[str]:
        # No procfs in the fake jail: the task's namespace is checked to be the parent's.
        fake_ns = f"{net_prefix()}-{net.parent_jail[-12:]}"
        pid = rt.handle(name).pid
        deadline = time.monotonic() + 10  # the supervisor forks, attaches, then execs the task
        while b"supervisor" in Path(f"/proc/{pid}/cmdline").read_bytes():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/var/run/netns/{fake_ns}").st_ino
        out = subprocess.run(["ip", "-n", fake_ns, "-o", "link"], capture_output=True,
                             text=True, check=True).stdout
        return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}

    def assert_nothing_left(self, nets: Networks) -> None:
        fake: FakeFreeBSDNet = nets.run.__self__  # type: ignore[attr-defined]
        left = leftovers(net_prefix(), net_bridge(suffix="f"), nets.leases.root.parent)
        assert left.empty(), left
        assert fake.parents == {} and fake.anchors == {}
