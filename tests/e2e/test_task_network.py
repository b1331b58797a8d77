"""Task networks through the rig, as Nomad's client hands them over: the group's ports placed on
the client's address (``client { network_interface = "lo" }``: 127.0.0.1), given to the task as
``resources.ports`` and ``NOMAD_*`` variables, and the services Nomad would register from what
StartTask returned. Real runc, zfs-fuse and registry; traffic only to loopback or to addresses
inside namespaces the test made."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

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
