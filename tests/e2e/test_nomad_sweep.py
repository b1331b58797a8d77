"""The nomad fixture's sweep removes network namespaces a dead test session's rig left (named
``xctest-<pid>-ns<n>``), with the veth pair inside, and plugins orphaned by a run-job killed from
outside; it leaves live sessions' alone."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

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


def sleeper(*argv_words: str) -> subprocess.Popen[bytes]:
    """A process whose argv carries the given words, as a plugin's carries its path."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", *argv_words])


def gone(p: subprocess.Popen[bytes], within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if p.poll() is not None:
            return True
        time.sleep(0.05)
    return False


def test_cleanup_kills_plugins_launched_from_its_state_dir_only() -> None:
    mine = Path("/tmp") / test_name("orphan-nomad")
    other = Path("/tmp") / test_name("other-nomad")
    (mine / "plugins").mkdir(parents=True)
    orphan = sleeper(f"{mine}/plugins/xc")
    bystander = sleeper(f"{other}/plugins/xc")
    try:
        nomad_fixture._cleanup(mine)
        assert gone(orphan), "a plugin from the cleaned state dir survived"
        assert bystander.poll() is None
        assert not mine.exists()
    finally:
        for p in (orphan, bystander):
            p.kill()
            p.wait()


def test_sweep_kills_a_dead_sessions_orphaned_plugin_after_its_dir_is_gone() -> None:
    dead = Path("/tmp") / f"xctest-{dead_pid()}-examples-nomad"
    live = Path("/tmp") / test_name("examples-nomad")
    orphan = sleeper(f"{dead}/plugins/xc")
    alive = sleeper(f"{live}/plugins/xc")
    try:
        assert not dead.exists()
        nomad_fixture.sweep_leftovers(is_stale)
        assert gone(orphan), "the dead session's plugin survived the sweep"
        assert alive.poll() is None, "the sweep killed a live session's plugin"
    finally:
        for p in (orphan, alive):
            p.kill()
            p.wait()
