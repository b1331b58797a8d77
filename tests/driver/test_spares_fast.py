"""Spare clones in the lifecycle (option ``spare_clones``), with the in-memory runtime and store.

A start leaves a spare of its image behind; the next start of that image and quota takes it as
its root (the record names it, destroy removes it), a failed start removes what it took, a
replaced incarnation's spare root goes with it, and the plugin's housekeeping removes taken
spares no record names. The same on real zfs-fuse: tests/zfsimage/test_spares.py and
tests/e2e/test_spare_clones.py.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from datetime import timedelta

from driver.config import TaskConfig
from driver.driver import XcDriver
from driver.pluginconfig import SpareClones
from driver.spareclones import SpareKeeper
from driver.state import DriverState
from driver.taskconfig import StorageOpt
from jails.errors import JailError
from tests.driver.test_lifecycle_fast import NAME, TASK, Host, host, run

__all__ = ["host"]  # the fixture


def until(cond: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


async def leave_a_spare(host: Host, d: XcDriver) -> str:
    """Start and destroy a task whose start found no spare and left one; that spare's key."""
    first = await d.start_task(host.nomad("00000001"), TASK)
    assert first.rootfs_key == NAME  # nothing idle yet: cloned
    until(lambda: len(host.images.idle) == 1)
    (spare,) = host.images.idle
    await d.destroy_task(first.task_id, force=True)
    host.assert_clean()
    return spare


def test_the_next_start_takes_the_spare_the_last_one_left(host: Host) -> None:
    async def scenario() -> None:
        d = host.plugin()
        spare = await leave_a_spare(host, d)
        del host.images.quotas[NAME]  # the clones made from here on
        second = await d.start_task(host.nomad("00000002"), TASK)
        assert second.rootfs_key == spare and spare not in host.images.idle
        assert DriverState.decode(host.record().read_bytes()).rootfs_key == spare
        assert host.runtime.jails[NAME].spec.rootfs == host.images.mount_root / "tasks" / spare
        assert NAME not in host.images.quotas  # the start cloned nothing of its own
        until(lambda: len(host.images.idle) == 1)  # refilled for the start after
        await d.destroy_task(second.task_id, force=True)
        assert spare not in host.images.clones and not host.record().exists()

    run(scenario)


def test_a_spare_is_only_taken_for_the_same_disk_quota(host: Host) -> None:
    async def scenario() -> None:
        d = host.plugin()
        await leave_a_spare(host, d)
        sized = dataclasses.replace(TASK, storage_opt=StorageOpt(size=1 << 30))
        second = await d.start_task(host.nomad("00000002"), sized)
        assert second.rootfs_key == NAME and host.images.quotas[NAME] == 1 << 30
        until(lambda: len(host.images.idle) == 2)  # one per quota now
        assert sorted((q or 0) for _, q in host.images.idle.values()) == [0, 1 << 30]

    run(scenario)


def test_a_failed_start_removes_the_spare_it_took(host: Host) -> None:
    async def scenario() -> None:
        d = host.plugin()
        spare = await leave_a_spare(host, d)
        host.runtime.fail("start", JailError("runc said no"))
        try:
            await d.start_task(host.nomad("00000002"), TASK)
        except Exception as exc:
            assert "runc said no" in str(exc)
        else:
            raise AssertionError("the start should have failed")
        assert spare not in host.images.clones and spare not in host.images.idle
        host.assert_clean()

    run(scenario)


def test_a_replaced_incarnation_takes_its_spare_root_with_it(host: Host) -> None:
    async def scenario() -> None:
        d = host.plugin()
        await d.start_task(host.nomad("00000001"), TASK)
        until(lambda: len(host.images.idle) == 1)
        second = host.plugin()  # a plugin that never saw the first handle (Nomad lost it)
        old = await second.start_task(host.nomad("00000002"), TASK)  # took the spare
        assert old.rootfs_key.startswith("spare.")
        until(lambda: len(host.images.idle) == 1)
        third = host.plugin()
        new = await third.start_task(host.nomad("00000003"), TASK)  # the orphan goes first
        assert old.rootfs_key not in host.images.clones
        assert new.rootfs_key in host.images.clones
        await third.destroy_task(new.task_id, force=True)
        host.assert_clean()

    run(scenario)


def test_count_zero_takes_and_makes_no_spare(host: Host) -> None:
    host.config = dataclasses.replace(host.config, spare_clones=SpareClones(count=0))

    async def scenario() -> None:
        d = host.plugin()
        for n in ("00000001", "00000002"):
            state = await d.start_task(host.nomad(n), TASK)
            assert state.rootfs_key == NAME
            await d.destroy_task(state.task_id, force=True)
        time.sleep(0.1)
        assert not host.images.idle and "taking_spare" not in host.images.calls
        assert "refill_spares" not in host.images.calls

    run(scenario)


def test_housekeeping_removes_taken_spares_no_record_names(host: Host) -> None:
    host.config = dataclasses.replace(host.config,
                                      spare_clones=SpareClones(count=1, idle=timedelta(0)))

    async def scenario() -> None:
        d = host.plugin()
        kept = await d.start_task(host.nomad("00000001"), TASK)
        until(lambda: len(host.images.idle) == 1)
        other = TaskConfig(image="registry.example/other:1")
        # another alloc takes the spare (every image has one digest in the fake)
        taken = await d.start_task(host.nomad("00000009", task="db"), other)
        assert taken.rootfs_key.startswith("spare.")
        # a crash between take and record: the spare is taken, no record names it
        host.record(taken.name).unlink()
        until(lambda: len(host.images.idle) == 1)
        d.housekeep_spares()
        until(lambda: taken.rootfs_key not in host.images.clones)
        assert kept.rootfs_key in host.images.clones and len(host.images.idle) == 1

    run(scenario)


def test_a_refill_waits_until_no_start_is_under_way(host: Host) -> None:
    closed = threading.Event()
    keeper = SpareKeeper(SpareClones(count=1), lambda: host.images, closed)
    image = host.images.ensure_image("registry.example/busybox:1.36")
    with keeper.starting():
        with keeper.starting():
            keeper.after_start(image, None)
        time.sleep(0.2)  # one start is still under way: no clone for later yet
        assert "refill_spares" not in host.images.calls and not host.images.idle
    until(lambda: len(host.images.idle) == 1)
