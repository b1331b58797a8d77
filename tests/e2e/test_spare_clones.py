"""Spare clones through the rig on real runc and zfs-fuse (plugin option ``spare_clones``).

A start leaves an idle clone of its image; the next start of that image runs on it (a fresh
root, not the last task's), its destroy removes it, and another is made. A plugin started after
a crash removes a spare that was taken but never recorded, and keeps the roots of tasks it
recovers. Idle spares expire.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.fixtures import images as im
from tests.fixtures.clones import idle_spares
from tests.fixtures.nomad import Nomad, TaskRun
from zfsimage import zfs

pytestmark = [pytest.mark.root, pytest.mark.slow]

DIRTY = ('command = "/bin/sh"\n'
         'args = ["-c", "echo dirty > /dirty; echo ready; exec /bin/sleep 600"]')
CLEAN = ('command = "/bin/sh"\n'
         'args = ["-c", "test -e /dirty && echo reused || cat /etc/hello; '
         'exec /bin/sleep 600"]')


def idle(nomad: Nomad, run: TaskRun | None = None) -> set[str]:
    """The idle spares, or those a start like ``run`` (its image, no quota) would take."""
    keys = idle_spares(nomad.state_dir / "images")
    if run is None:
        return keys
    prefix = f"spare.{run.driver_state['image_digest'].split(':')[1][:16]}.0."
    return {k for k in keys if k.startswith(prefix)}


def exists(nomad: Nomad, key: str) -> bool:
    return zfs.exists(f"{nomad.dataset}/tasks/{key}")


@pytest.fixture
def spares_on(nomad: Nomad) -> Iterator[Nomad]:
    """The session's plugin keeps one spare per image (the default); the test's own plugin
    config, if any, is undone after it."""
    yield nomad
    if nomad.extra_config:
        nomad.kill_plugin()  # its housekeeping must not go on expiring the next tests' spares
        nomad.extra_config = ""
        nomad.relaunch()


def test_the_next_start_runs_on_a_fresh_spare_and_another_is_made(spares_on: Nomad) -> None:
    nomad = spares_on
    first = nomad.start(DIRTY)
    nomad.wait_for(lambda: "ready" in first.stdout(), what="the first task")
    nomad.wait_for(lambda: bool(idle(nomad, first)), what="a spare of the image")
    spares = idle(nomad, first)
    second = nomad.start(CLEAN)
    assert second.root_key in spares and second.root_key not in idle(nomad)
    nomad.wait_for(lambda: second.stdout().strip() != "", what="the second task's output")
    # a new clone of the image, not the last task's root
    assert second.stdout().strip() == im.HELLO, second.stdout()
    nomad.wait_for(lambda: bool(idle(nomad, first) - spares), what="a new spare")
    nomad.destroy(first)
    nomad.destroy(second)
    assert not exists(nomad, second.root_key)
    assert not (nomad.state_dir / "images" / "tasks" / second.root_key).exists()


def test_a_new_plugin_removes_a_taken_unrecorded_spare_and_keeps_task_roots(
        spares_on: Nomad) -> None:
    nomad = spares_on
    warm = nomad.start(DIRTY)
    nomad.wait_for(lambda: bool(idle(nomad, warm)), what="a spare of the image")
    run = nomad.start(DIRTY)  # runs on the spare
    assert run.root_key.startswith("spare.")
    nomad.wait_for(lambda: bool(idle(nomad, warm)), what="the refill")
    nomad.kill_plugin()
    debris = sorted(idle(nomad, warm))[0]
    os.unlink(nomad.state_dir / "images" / "spares" / debris)  # taken, then the crash
    nomad.relaunch()
    nomad.wait_for(lambda: not exists(nomad, debris), what="the sweep of the taken spare")
    assert nomad.recover(run)["ok"]
    assert exists(nomad, run.root_key) and nomad.inspect(run)["task"]["state"] == "RUNNING"
    nomad.destroy(run)
    nomad.destroy(warm)
    assert not exists(nomad, run.root_key)


def test_idle_spares_expire(spares_on: Nomad) -> None:
    nomad = spares_on
    nomad.extra_config = 'spare_clones {\n  idle = "2s"\n}'
    nomad.relaunch()
    run = nomad.start(DIRTY)
    nomad.wait_for(lambda: bool(idle(nomad, run)), what="a spare of the image")
    made = idle(nomad, run)
    nomad.wait_for(lambda: not (made & idle(nomad)) and not any(exists(nomad, k) for k in made),
                   timeout=30, what="the spare to expire")
    nomad.destroy(run)


def test_count_zero_keeps_no_spare(spares_on: Nomad) -> None:
    nomad = spares_on
    nomad.extra_config = 'spare_clones {\n  count = 0\n}'
    nomad.relaunch()
    nomad.wait_for(lambda: not idle(nomad), what="the idle spares to go")
    run = nomad.start(DIRTY)
    assert run.root_key == run.jail
    nomad.wait_for(lambda: "ready" in run.stdout(), what="the task")
    assert not idle(nomad)
    nomad.destroy(run)
