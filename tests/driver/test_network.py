"""driver.network and its conversions: Nomad's network_isolation_spec/dns -> NomadTask (round
trip), the plan compose uses (namespace, hostname, read-only file mounts, one clear error per bad
value), the generated hosts/resolv.conf, their writing into the task dir, and capabilities."""

from __future__ import annotations

import os
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from driver import convert
from driver.config import ConfigError, MountSpec, TaskConfig
from driver.network import (
    NomadDNS,
    NomadHosts,
    NomadNetwork,
    file_contents,
    hosts_file,
    plan,
    resolv_file,
    write_files,
)
from driver.taskspec import ImageDefaults, NomadTask
from jails import Mount
from plugin_proto import driver_pb2
from tests.driver.test_taskspec import nomad, spec

NETNS = "/var/run/netns/a1b2c3d4-0000-0000-0000-000000000000"
BRIDGE = NomadNetwork("group", NETNS, MappingProxyType({"docker_sandbox_container_id": "x"}),
                      NomadHosts("a1b2c3d4", "172.26.64.9"))
DNS = NomadDNS(("10.0.0.53", "2001:db8::53"), ("svc.local", "local"), ("ndots:2",))
HOST_RESOLV = ("# host\nnameserver 192.0.2.1\nnameserver 192.0.2.2 # second\n"
               "domain old.example\nsearch corp.example example\noptions rotate timeout:1\n")


def compose_for(n: NomadTask, task: TaskConfig | None = None) -> Any:
    return spec(task, image=ImageDefaults(cmd=("/bin/true",)), n=n)


# ---- conversions ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("network", "dns"),
    [
        (None, None),
        (BRIDGE, None),
        (NomadNetwork("group", NETNS), None),  # mode none: a netns, no hosts_config
        (BRIDGE, DNS),
        (None, NomadDNS(("1.1.1.1",))),
        (NomadNetwork("host"), NomadDNS()),
    ],
)
def test_nomad_task_network_round_trip(network: NomadNetwork | None, dns: NomadDNS | None
                                       ) -> None:
    t = nomad(network=network, dns=dns)
    msg = convert.nomad_task_to_proto(t)
    assert msg.HasField("network_isolation_spec") == (network is not None)
    assert msg.HasField("dns") == (dns is not None)
    assert convert.nomad_task_from_proto(msg) == t


def test_network_from_nomads_message() -> None:
    msg = driver_pb2.TaskConfig(
        id="a/web/1", name="web", alloc_id="a", alloc_dir="/x",
        network_isolation_spec=driver_pb2.NetworkIsolationSpec(
            mode=driver_pb2.NetworkIsolationSpec.GROUP, path=NETNS, labels={"k": "v"},
            hostsConfig=driver_pb2.HostsConfig(hostname="web-1", address="10.1.2.3")),
        dns=driver_pb2.DNSConfig(servers=["8.8.8.8"], searches=["a.b"], options=["edns0"]))
    t = convert.nomad_task_from_proto(msg)
    assert t.network == NomadNetwork("group", NETNS, MappingProxyType({"k": "v"}),
                                     NomadHosts("web-1", "10.1.2.3"))
    assert t.dns == NomadDNS(("8.8.8.8",), ("a.b",), ("edns0",))
    assert convert.nomad_task_from_proto(driver_pb2.TaskConfig(id="a/w/1")).network is None


# ---- the plan and compose --------------------------------------------------------------------

def test_host_network_changes_nothing() -> None:
    s = compose_for(nomad())
    assert (s.network, s.netns_path) == ("host", "")
    assert [m.target for m in s.mounts] == ["/alloc", "/local", "/secrets"]
    assert s.hostname == "xc-a1b2c3d4-web"
    assert plan(NomadNetwork("host"), None, "/t") == plan(None, None, "/t")


def test_bridge_joins_the_netns_with_hosts_file_and_hostname() -> None:
    s = compose_for(nomad(network=BRIDGE))
    assert (s.network, s.netns_path) == ("netns", NETNS)
    assert s.hostname == "a1b2c3d4"
    assert s.mounts[-1] == Mount(Path("/nomad/alloc/a1/web/private/hosts"), "/etc/hosts",
                                 readonly=True)
    assert "/etc/resolv.conf" not in {m.target for m in s.mounts}  # no dns: the image's


def test_task_hostname_wins_over_the_groups() -> None:
    s = compose_for(nomad(network=BRIDGE), TaskConfig(image="i", hostname="mine"))
    assert s.hostname == "mine"


def test_none_mode_joins_without_hosts_file() -> None:
    s = compose_for(nomad(network=NomadNetwork("group", NETNS)))
    assert (s.network, s.netns_path) == ("netns", NETNS)
    assert [m.target for m in s.mounts] == ["/alloc", "/local", "/secrets"]


def test_dns_mounts_resolv_conf_read_only_in_any_mode() -> None:
    for net in (None, BRIDGE):
        s = compose_for(nomad(network=net, dns=DNS))
        [m] = [m for m in s.mounts if m.target == "/etc/resolv.conf"]
        assert m == Mount(Path("/nomad/alloc/a1/web/private/resolv.conf"), "/etc/resolv.conf",
                          readonly=True)


@pytest.mark.parametrize("hosts", [NomadHosts("", "10.0.0.2"), NomadHosts("web", "")])
def test_a_half_empty_hosts_config_gives_no_hosts_file(hosts: NomadHosts) -> None:
    net = NomadNetwork("group", NETNS, hosts=hosts)
    s = compose_for(nomad(network=net))
    assert "/etc/hosts" not in {m.target for m in s.mounts}
    assert s.hostname == "xc-a1b2c3d4-web"
    assert file_contents(net, None, host_resolv="") == {}


def test_a_task_mount_over_etc_hosts_collides_clearly() -> None:
    task = TaskConfig(image="i", mounts=(MountSpec(type="bind", source="local/h",
                                                   target="/etc/hosts", readonly=True,
                                                   origin="config.mount[0]"),))
    with pytest.raises(ConfigError) as err:
        compose_for(nomad(network=BRIDGE), task)
    assert err.value.field == "config.mount" and "/etc/hosts" in str(err.value)


@pytest.mark.parametrize(
    ("network", "dns", "field", "words"),
    [
        (NomadNetwork("task", NETNS), None, "network.mode", "'task'"),
        (NomadNetwork("none"), None, "network.mode", "'none'"),
        (NomadNetwork("group", ""), None, "network", "namespace path"),
        (NomadNetwork("group", "netns/x"), None, "network", "namespace path"),
        (NomadNetwork("group", NETNS, hosts=NomadHosts("web", "not-an-ip")), None,
         "network.hostsConfig.address", "not an IP address"),
        (NomadNetwork("group", NETNS, hosts=NomadHosts("bad name", "10.0.0.2")), None,
         "network.hostname", "not a host name"),
        (None, NomadDNS(("dns.example",)), "network.dns.servers", "not an IP address"),
        (None, NomadDNS(searches=("a b",)), "network.dns.searches", "one word"),
        (None, NomadDNS(options=("ndots:1\nnameserver 6.6.6.6",)), "network.dns.options",
         "one word"),
        (None, NomadDNS(searches=("",)), "network.dns.searches", "one word"),
    ],
)
def test_bad_network_settings_name_the_field(network: NomadNetwork | None,
                                             dns: NomadDNS | None, field: str,
                                             words: str) -> None:
    with pytest.raises(ConfigError) as err:
        compose_for(nomad(network=network, dns=dns))
    assert err.value.field == field
    assert words in str(err.value)


# ---- the files -------------------------------------------------------------------------------

def test_hosts_file_has_localhost_and_the_alloc() -> None:
    text = hosts_file(NomadHosts("a1b2c3d4", "172.26.64.9"))
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == "127.0.0.1 localhost"
    assert "::1 localhost ip6-localhost ip6-loopback" in lines
    assert lines[-1] == "172.26.64.9 a1b2c3d4"


def test_resolv_conf_from_nomad() -> None:
    assert resolv_file(DNS, HOST_RESOLV).splitlines()[1:] == [
        "nameserver 10.0.0.53", "nameserver 2001:db8::53", "search svc.local local",
        "options ndots:2"]


def test_resolv_conf_lists_nomad_left_empty_come_from_the_host() -> None:
    assert resolv_file(NomadDNS(servers=("10.0.0.53",)), HOST_RESOLV).splitlines()[1:] == [
        "nameserver 10.0.0.53", "search corp.example example", "options rotate timeout:1"]
    assert resolv_file(NomadDNS(options=("edns0",)), HOST_RESOLV).splitlines()[1:] == [
        "nameserver 192.0.2.1", "nameserver 192.0.2.2", "search corp.example example",
        "options edns0"]
    assert resolv_file(NomadDNS(), HOST_RESOLV) == HOST_RESOLV  # a dns block with nothing set
    assert resolv_file(NomadDNS(), "") == ""


def test_which_files_a_task_gets() -> None:
    assert file_contents(None, None, host_resolv="") == {}
    assert set(file_contents(BRIDGE, None, host_resolv="")) == {"/etc/hosts"}
    assert set(file_contents(NomadNetwork("group", NETNS), None, host_resolv="")) == set()
    assert set(file_contents(BRIDGE, DNS, host_resolv="")) == {"/etc/hosts", "/etc/resolv.conf"}
    assert set(file_contents(None, DNS, host_resolv="")) == {"/etc/resolv.conf"}


def test_write_files_into_private_readable_and_idempotent(tmp_path: Path) -> None:
    task_dir = tmp_path / "web"
    task_dir.mkdir()
    write_files(BRIDGE, DNS, str(task_dir))
    hosts, resolv = task_dir / "private" / "hosts", task_dir / "private" / "resolv.conf"
    assert hosts.read_text() == hosts_file(BRIDGE.hosts)  # type: ignore[arg-type]
    assert "nameserver 10.0.0.53\n" in resolv.read_text()
    assert hosts.stat().st_mode & 0o777 == 0o644 and resolv.stat().st_mode & 0o777 == 0o644
    # compose's mounts point at exactly these files
    s = compose_for(nomad(alloc_dir=str(tmp_path), network=BRIDGE, dns=DNS))
    assert {m.source for m in s.mounts if m.target.startswith("/etc/")} == {hosts, resolv}
    write_files(BRIDGE, DNS, str(task_dir))  # again: same content, no temp files left
    assert sorted(os.listdir(task_dir / "private")) == ["hosts", "resolv.conf"]


def test_write_files_nothing_for_host_without_dns(tmp_path: Path) -> None:
    write_files(None, None, str(tmp_path))
    assert not (tmp_path / "private").exists()


def test_write_files_never_follows_a_planted_symlink(tmp_path: Path) -> None:
    task_dir = tmp_path / "web"
    (task_dir / "private").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.write_text("keep")
    (task_dir / "private" / "hosts").symlink_to(outside)
    (task_dir / "private" / ".hosts.xc-tmp").symlink_to(outside)
    write_files(BRIDGE, None, str(task_dir))
    assert outside.read_text() == "keep"
    assert not (task_dir / "private" / "hosts").is_symlink()
    # a private dir that is itself a symlink is refused
    other = tmp_path / "other"
    (other).mkdir()
    (tmp_path / "t2").mkdir()
    (tmp_path / "t2" / "private").symlink_to(other)
    with pytest.raises(OSError):
        write_files(BRIDGE, None, str(tmp_path / "t2"))
    assert list(other.iterdir()) == []


# ---- capabilities ---------------------------------------------------------------------------

def test_capabilities_offer_group_only_where_the_backend_joins_a_netns() -> None:
    linux, freebsd = convert.capabilities_for("linux"), convert.capabilities_for("freebsd")
    assert linux.network_isolation_modes == ("host", "group")
    assert freebsd.network_isolation_modes == ("host",)
    assert not linux.must_create_network and not freebsd.must_create_network
    msg = convert.capabilities_to_proto(linux)
    net = driver_pb2.NetworkIsolationSpec
    assert list(msg.network_isolation_modes) == [net.HOST, net.GROUP]
    assert convert.capabilities_from_proto(msg) == linux
