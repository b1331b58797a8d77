"""Nomad group networks through the rig (which makes the alloc's netns like the Nomad client):
``mode = "none"`` sees only its own loopback, ``mode = "bridge"`` is reachable at the alloc's
address with /etc/hosts and /etc/resolv.conf as Nomad gave them, host mode is unchanged, and a
recovered plugin leaves a bridge task's network alone. Real runc, zfs-fuse and registry."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.images import (
    build_image,
    busybox_base,
    f,
    opt_layer,
    push_image,
    sym,
    tar_bytes,
)
from tests.fixtures.nomad import Nomad, TaskRun, netns_names
from tests.fixtures.sweep import test_name

pytestmark = [pytest.mark.root, pytest.mark.slow]

BB = "/bin/busybox"
PORT = 8080
# What every network test task prints first: its interfaces (from its own /proc/net/dev).
IFACES = f"echo ifaces: $({BB} sed -n 's/^ *\\([^:]*\\):.*/\\1/p' /proc/net/dev)"


def sh(script: str) -> str:
    return f'command = "/bin/sh"\nargs = ["-c", {json.dumps(script)}]'


def ifaces_of(run: TaskRun) -> set[str]:
    for line in run.stdout().splitlines():
        if line.startswith("ifaces:"):
            return set(line.split()[1:])
    raise AssertionError(f"no ifaces line in {run.stdout()!r}")


def host_ifaces() -> set[str]:
    lines = Path("/proc/net/dev").read_text().splitlines()[2:]
    return {line.split(":", 1)[0].strip() for line in lines}


def finish(nomad: Nomad, run: TaskRun) -> None:
    assert nomad.destroy(run)["ok"]
    left = nomad.leftovers()
    assert not any(run.jail in str(v) for v in left.values()), left
    net = run.reply.get("network")
    if net:
        assert net["netns"] not in netns_names(), "the rig must delete the alloc's netns"


@pytest.fixture
def host_listener() -> Iterator[tuple[int, list[str]]]:
    """A TCP port on the host's 127.0.0.1 that accepts, notes who came, and closes."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    seen: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, peer = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            seen.append(peer[0])
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1], seen
    finally:
        stop.set()
        t.join(5)
        srv.close()


def probe_script(port: int) -> str:
    return (f"{IFACES}; if {BB} nc -w 3 127.0.0.1 {port} </dev/null; then echo reach: yes; "
            "else echo reach: no; fi")


def test_none_mode_sees_only_loopback_and_not_the_hosts(
        nomad: Nomad, host_listener: tuple[int, list[str]]) -> None:
    port, seen = host_listener
    # Control: a host-mode task reaches the port, so a "no" below is the namespace's doing.
    host = nomad.start(sh(probe_script(port)))
    assert nomad.wait(host)["result"]["exit_code"] == 0
    nomad.wait_for(lambda: "reach:" in host.stdout(), what="the host task's probe")
    assert "reach: yes" in host.stdout(), host.stdout() + host.stderr()
    assert len(seen) == 1

    run = nomad.start(sh(probe_script(port)), network={"mode": "none"})
    net = run.reply["network"]
    assert net["mode"] == "none" and net["path"] == f"/var/run/netns/{net['netns']}"
    assert net["netns"] in netns_names()
    spec = run.reply["task_config"]["network_isolation_spec"]
    assert spec["mode"] == "GROUP" and spec["path"] == net["path"]
    assert nomad.wait(run)["result"]["exit_code"] == 0
    nomad.wait_for(lambda: "reach:" in run.stdout(), what="the none task's probe")
    assert ifaces_of(run) == {"lo"}
    assert "reach: no" in run.stdout(), run.stdout()
    assert len(seen) == 1  # nothing new came in
    finish(nomad, host)
    finish(nomad, run)


def test_host_mode_is_unchanged(nomad: Nomad) -> None:
    before = host_ifaces()
    run = nomad.start(sh(IFACES))
    assert nomad.wait(run)["result"]["exit_code"] == 0
    after = host_ifaces()
    nomad.wait_for(lambda: "ifaces:" in run.stdout(), what="the task's output")
    seen = ifaces_of(run)
    # the host's own interfaces (other sessions may add or remove veths meanwhile)
    assert before & after <= seen <= before | after
    assert run.reply["task_config"].get("network_isolation_spec") is None
    assert "network" not in run.reply
    finish(nomad, run)


def connect_and_talk(address: str, port: int, timeout: float = 20) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((address, port), timeout=2) as s:
                s.settimeout(5)
                s.sendall(b"ping from host\n")
                data = b""
                with contextlib.suppress(TimeoutError):
                    while not data.endswith(b"\n"):
                        chunk = s.recv(100)
                        if not chunk:
                            break
                        data += chunk
                if data:
                    return data
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing answered at {address}:{port}")
        time.sleep(0.1)


def server_script(port: int) -> str:
    # One connection per nc; answer, log what came in, and go on listening.
    return (f"{IFACES}; echo hostname: $(hostname); echo '--- hosts'; cat /etc/hosts; "
            "echo '--- resolv'; cat /etc/resolv.conf; echo '--- end'; "
            f"while :; do echo pong from task | {BB} nc -l -p {port}; done")


def section(text: str, name: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(f"--- {name}") + 1
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("--- "))
    return lines[start:end]


def test_bridge_task_is_reachable_and_sees_hosts_and_dns(nomad: Nomad) -> None:
    dns = {"servers": ["10.0.0.53", "10.0.0.54"], "searches": ["svc.local"],
           "options": ["ndots:2"]}
    run = nomad.start(sh(server_script(PORT)),
                      network={"mode": "bridge", "hostname": "web-1", "dns": dns})
    net = run.reply["network"]
    spec = run.reply["task_config"]["network_isolation_spec"]
    assert spec["hostsConfig"] == {"hostname": "web-1", "address": net["address"]}
    assert run.reply["task_config"]["dns"] == dns
    nomad.wait_for(lambda: "--- end" in run.stdout(), what="the task's network report")
    out = run.stdout()
    assert ifaces_of(run) == {"lo", "eth0"}
    assert "hostname: web-1" in out
    hosts = section(out, "hosts")
    assert "127.0.0.1 localhost" in hosts
    assert f"{net['address']} web-1" in hosts
    resolv = [ln for ln in section(out, "resolv") if not ln.startswith("#")]
    assert resolv == ["nameserver 10.0.0.53", "nameserver 10.0.0.54", "search svc.local",
                      "options ndots:2"]
    # The host reaches the task at the alloc's address (nothing mapped, nothing on the host).
    assert connect_and_talk(net["address"], PORT) == b"pong from task\n"
    nomad.wait_for(lambda: "ping from host" in run.stdout(), what="the task to log the ping")
    # The files are Nomad's task dir copies, mounted read-only.
    res = nomad.check_rpc("ExecTask", {"task_id": run.task_id, "command": [
        "/bin/sh", "-c", "echo x >> /etc/hosts; echo rc=$?"], "timeout": "10s"})
    assert "rc=1" in base64.b64decode(res["stdout"]).decode()
    assert (run.task_dir / "private" / "hosts").read_text().endswith(f"{net['address']} web-1\n")
    nomad.stop(run)
    finish(nomad, run)


def evil_image(nomad: Nomad, bait: Path) -> str:
    """An image whose /etc/hosts is a symlink to a host path and with its own resolv.conf."""
    layer = [sym("etc/hosts", str(bait)), f("etc/resolv.conf", "nameserver 203.0.113.7\n")]
    built = build_image([tar_bytes(opt_layer() + busybox_base()), tar_bytes(layer)], "gzip")
    return push_image(nomad.registry, "ci/xc-net-evil", "v1", built)


def test_files_never_go_through_the_images_etc(nomad: Nomad) -> None:
    bait = Path("/tmp") / test_name("bait-hosts")
    bait.write_text("host file\n")
    try:
        image = evil_image(nomad, bait)
        script = "echo '--- hosts'; cat /etc/hosts; echo '--- resolv'; cat /etc/resolv.conf; " \
                 "echo '--- end'"
        # bridge without dns: Nomad's /etc/hosts, the image's own resolv.conf left alone
        run = nomad.start(sh(script), image=image, network={"mode": "bridge"})
        assert nomad.wait(run)["result"]["exit_code"] == 0
        nomad.wait_for(lambda: "--- end" in run.stdout(), what="the task's output")
        out = run.stdout()
        assert f"{run.reply['network']['address']} {run.alloc_id[:8]}" in section(out, "hosts")
        assert section(out, "resolv") == ["nameserver 203.0.113.7"]
        assert bait.read_text() == "host file\n"
        finish(nomad, run)
    finally:
        bait.unlink(missing_ok=True)


def test_a_recovered_plugin_leaves_a_bridge_task_reachable(nomad: Nomad) -> None:
    run = nomad.start(sh(server_script(PORT)), network={"mode": "bridge"})
    address = run.reply["network"]["address"]
    assert connect_and_talk(address, PORT) == b"pong from task\n"
    nomad.kill_plugin()
    nomad.relaunch()
    assert nomad.recover(run)["ok"]
    assert nomad.inspect(run)["task"]["state"] == "RUNNING"
    assert connect_and_talk(address, PORT) == b"pong from task\n"
    nomad.stop(run)
    finish(nomad, run)
