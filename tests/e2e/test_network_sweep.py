"""The nomad fixture's sweep removes network namespaces a dead test session's rig left (named
``xctest-<pid>-ns<n>``), with the veth pair inside, and leaves live sessions' alone."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.fixtures import nomad as nomad_fixture
from tests.fixtures.sweep import is_stale, test_name

pytestmark = [pytest.mark.root]


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


def test_sweep_removes_a_dead_sessions_netns_and_its_veth() -> None:
    dead = f"xctest-{dead_pid()}-ns1"
    live = test_name("ns-live")
    veth = f"xcs{dead.split('-')[1][-6:]}"
    try:
        ip("netns", "add", dead)
        ip("netns", "add", live)
        ip("link", "add", veth, "type", "veth", "peer", "name", "xcpeer", "netns", dead)
        assert link_exists(veth)
        nomad_fixture.sweep_leftovers(is_stale)
        names = nomad_fixture.netns_names()
        assert dead not in names
        assert live in names
        assert not link_exists(veth), "the veth pair goes with its namespace"
    finally:
        for ns in (dead, live):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", veth], capture_output=True)
