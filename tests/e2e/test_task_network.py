"""Task networks through the rig, as Nomad's client hands them over: the group's ports placed on
the client's address (``client { network_interface = "lo" }``: 127.0.0.1), given to the task as
``resources.ports`` and ``NOMAD_*`` variables, and the services Nomad would register from what
StartTask returned. Real runc, zfs-fuse and registry; traffic only to loopback or to addresses
inside namespaces the test made."""

from __future__ import annotations

import base64
import concurrent.futures
import ipaddress
import json
import socket
from collections.abc import Callable
from typing import Any

import pytest

from tests.fixtures.network import http_get, test_pool
from tests.fixtures.nomad import Nomad, TaskRun

pytestmark = [pytest.mark.root, pytest.mark.slow]


def sh(script: str) -> str:
    return f'command = "/bin/sh"\nargs = ["-c", {json.dumps(script)}]'


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_lines(run: TaskRun) -> dict[str, str]:
    out = {}
    for line in run.stdout().splitlines():
        k, sep, v = line.partition("=")
        if sep and k.startswith("NOMAD_"):
            out[k] = v
    return out


def port(reply: dict[str, Any], label: str) -> dict[str, Any]:
    return next(p for p in reply["ports"] if p["label"] == label)


def test_host_mode_task_gets_the_groups_ports_as_nomad_gives_them(nomad: Nomad) -> None:
    static = free_loopback_port()
    services = [{"provider": "nomad", "address_mode": "host", "port": "http"},
                {"name": "admin", "provider": "nomad", "port": "admin"},
                {"name": "own", "provider": "nomad", "address_mode": "driver", "port": "http"}]
    run = nomad.start(sh("env | sort; echo done"), services=services, network={
        "ports": [{"label": "http", "to": 8080}, {"label": "admin", "static": static}]})
    http, admin = port(run.reply, "http"), port(run.reply, "admin")
    assert 20000 <= http["value"] <= 32000 and http["to"] == 8080
    assert http["host_ip"] == admin["host_ip"] == "127.0.0.1"
    assert admin["value"] == static and admin["to"] == 0
    mapped = run.reply["task_config"]["resources"]["ports"]
    assert {(m["label"], m["value"], m["to"], m["host_ip"]) for m in mapped} == {
        ("http", http["value"], 8080, "127.0.0.1"), ("admin", static, 0, "127.0.0.1")}
    assert nomad.wait(run)["result"]["exit_code"] == 0
    nomad.wait_for(lambda: "done" in run.stdout(), what="the task's env")
    env = env_lines(run)
    assert env["NOMAD_PORT_http"] == "8080"
    assert env["NOMAD_HOST_PORT_http"] == str(http["value"])
    assert env["NOMAD_ADDR_http"] == f"127.0.0.1:{http['value']}"
    assert env["NOMAD_IP_http"] == env["NOMAD_HOST_IP_http"] == "127.0.0.1"
    assert env["NOMAD_PORT_admin"] == env["NOMAD_HOST_PORT_admin"] == str(static)
    # Host networking: no driver network, so "auto" is the host's port and "driver" fails.
    assert run.reply["driver_network"] is None
    regs = {r["service"]: r for r in run.reply["services"]}
    assert (regs["xctest-g-" + run.name]["address"], regs["xctest-g-" + run.name]["port"]) == \
        ("127.0.0.1", http["value"])
    assert (regs["admin"]["address"], regs["admin"]["port"]) == ("127.0.0.1", static)
    assert "no driver network exists" in regs["own"]["error"]
    assert nomad.destroy(run)["ok"]


# ---- the driver's own networks ----

HTTP = [{"label": "http", "to": 8080}]
IFACES = "echo ifaces: $(/bin/busybox sed -n 's/^ *\\([^:]*\\):.*/\\1/p' /proc/net/dev)"
BRIDGE = 'network_mode = "bridge"\nports = ["http"]'


def httpd(page: str, port: int = 8080, mode: str = BRIDGE) -> str:
    """busybox httpd serving ``page`` at / on ``port``, printing its interfaces first."""
    return sh(f"{IFACES}; mkdir -p /local/www; echo {json.dumps(page)} > /local/www/index.html; "
              f"echo serving; exec /bin/busybox httpd -f -p {port} -h /local/www") + "\n" + mode


def exec_out(nomad: Nomad, run: TaskRun, script: str) -> str:
    res = nomad.check_rpc("ExecTask", {"task_id": run.task_id, "timeout": "20s",
                                       "command": ["/bin/sh", "-c", script]})
    return base64.b64decode(res.get("stdout", "")).decode(errors="replace")


def fetch(address: str, port: int = 8080) -> str:
    """A shell line GETting / from inside a task (busybox's wget crashes in this image)."""
    return (f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | /bin/busybox nc -w 5 {address} {port}")


def ifaces_of(run: TaskRun) -> set[str]:
    for line in run.stdout().splitlines():
        if line.startswith("ifaces:"):
            return set(line.split()[1:])
    raise AssertionError(f"no ifaces line in {run.stdout()!r}")


def in_pool(address: str) -> bool:
    return ipaddress.ip_address(address) in ipaddress.ip_network(test_pool())


Clean = Callable[[], None]
_KINDS = ("netns", "net_chains", "net_leases", "bridge_ports", "containers", "records", "clones")


@pytest.fixture
def assert_clean(nomad: Nomad) -> Clean:
    """Checks that the test left nothing of its own on the host. What was there before it is
    an earlier test's failure and is reported there, not again in every test after it."""
    before = nomad.leftovers()

    def check() -> None:
        left = nomad.leftovers()
        new = {k: sorted(set(left[k]) - set(before[k])) for k in _KINDS}
        assert not any(new.values()), new
    return check


def start_web(nomad: Nomad, page: str, **kw: Any) -> TaskRun:
    kw.setdefault("network", {"ports": HTTP})
    run = nomad.start(httpd(page), **kw)
    nomad.wait_for(lambda: "serving" in run.stdout(), what=f"{page} to serve")
    return run


def test_two_allocs_publish_http_on_their_own_host_ports(nomad: Nomad, assert_clean: Clean) -> None:
    svc = [{"name": "web", "provider": "nomad", "address_mode": "driver", "port": "http"},
           {"name": "web-auto", "provider": "nomad", "port": "http"}]
    a = start_web(nomad, "page of a", services=svc)
    b = start_web(nomad, "page of b", services=svc)
    try:
        for run, page in ((a, "page of a"), (b, "page of b")):
            http, dn = port(run.reply, "http"), run.reply["driver_network"]
            assert http["host_ip"] == "127.0.0.1" and http["to"] == 8080
            assert in_pool(dn["ip"]) and dn["port_map"] == {"http": 8080}
            assert dn["auto_advertise"] is True
            # From the host, on loopback: the host port reaches this task and no other.
            assert page in http_get("127.0.0.1", http["value"])
            regs = {r["service"]: r for r in run.reply["services"]}
            assert (regs["web"]["address"], regs["web"]["port"]) == (dn["ip"], 8080)
            assert (regs["web-auto"]["address"], regs["web-auto"]["port"]) == (dn["ip"], 8080)
            assert ifaces_of(run) == {"lo", "eth0"}
        assert a.reply["driver_network"]["ip"] != b.reply["driver_network"]["ip"]
        assert port(a.reply, "http")["value"] != port(b.reply, "http")["value"]
        # Task A reaches task B at B's own address over the bridge.
        b_ip = b.reply["driver_network"]["ip"]
        got = exec_out(nomad, a, fetch(b_ip))
        assert "page of b" in got, got
    finally:
        for run in (a, b):
            nomad.destroy(run)
    assert_clean()


def test_none_task_sees_only_loopback(nomad: Nomad, assert_clean: Clean) -> None:
    run = nomad.start(sh(f"{IFACES}; echo done") + '\nnetwork_mode = "none"')
    assert nomad.wait(run)["result"]["exit_code"] == 0
    nomad.wait_for(lambda: "done" in run.stdout(), what="the task's interfaces")
    assert ifaces_of(run) == {"lo"}
    assert run.reply["driver_network"] is None
    nomad.destroy(run)
    assert_clean()


def test_two_tasks_of_one_alloc_talk_over_loopback(nomad: Nomad, assert_clean: Clean) -> None:
    server = start_web(nomad, "shared page")
    client = nomad.start(sh(f"{fetch('127.0.0.1')}; echo rc=$?")
                         + '\nnetwork_mode = "bridge"', alloc_id=server.alloc_id,
                         network={"ports": HTTP})
    try:
        assert nomad.wait(client)["result"]["exit_code"] == 0
        nomad.wait_for(lambda: "rc=" in client.stdout(), what="the client's request")
        assert "shared page" in client.stdout() and "rc=0" in client.stdout(), client.stdout()
        # One network for the alloc: the same address for both tasks.
        assert client.reply["driver_network"]["ip"] == server.reply["driver_network"]["ip"]
        nomad.destroy(client)
        # The server's network stays while it runs.
        assert "shared page" in http_get("127.0.0.1", port(server.reply, "http")["value"])
    finally:
        nomad.destroy(server)
    assert_clean()


def test_a_restarted_plugin_keeps_addresses_and_ports_and_destroy_removes_all(
        nomad: Nomad, assert_clean: Clean) -> None:
    run = start_web(nomad, "survivor")
    host_port = port(run.reply, "http")["value"]
    address = run.reply["driver_network"]["ip"]
    assert "survivor" in http_get("127.0.0.1", host_port)
    nomad.kill_plugin()
    nomad.relaunch()  # SetConfig sweeps leftovers: this alloc's task record keeps its network
    assert nomad.recover(run)["ok"]
    assert nomad.inspect(run)["task"]["state"] == "RUNNING"
    assert "survivor" in http_get("127.0.0.1", host_port)
    assert "survivor" in http_get(address, 8080)  # inside the namespace the test made
    nomad.stop(run)
    assert nomad.destroy(run)["ok"]
    assert_clean()


def test_twenty_concurrent_networked_starts_and_stops_leak_nothing(
        nomad: Nomad, assert_clean: Clean) -> None:
    def one(i: int) -> str:
        run = nomad.start(sh("exec /bin/busybox sleep 600") + "\n" + BRIDGE,
                          network={"ports": HTTP}, timeout=300)
        try:
            return str(run.reply["driver_network"]["ip"])
        finally:
            nomad.destroy(run)

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        addresses = list(pool.map(one, range(20)))
    assert all(in_pool(a) for a in addresses)
    assert_clean()


@pytest.mark.parametrize(("config", "network", "field", "words"), [
    ('network_mode = "vlan"', None, "config.network_mode", "unknown network mode"),
    ('network_mode = "alias"', None, "config.network_mode", "FreeBSD"),
    (BRIDGE, {"ports": [{"label": "admin", "to": 9000}]}, "config.ports[0]",
     "no port 'http' (its ports: admin)"),
    ('ports = ["http"]', {"ports": HTTP}, "config.ports", 'network_mode "host"'),
    ('network_mode = "bridge"', {"mode": "bridge"}, "config.network_mode",
     "inside a Nomad group network"),
])
def test_bad_network_configs_give_one_error_and_leave_nothing(
        nomad: Nomad, assert_clean: Clean, config: str, network: dict[str, Any] | None,
        field: str, words: str) -> None:
    reply = nomad.start_raw(sh("echo never") + "\n" + config, network=network)
    assert not reply["ok"], reply
    assert reply["code"] == "InvalidArgument", reply
    assert field in reply["message"] and words in reply["message"], reply["message"]
    assert_clean()
