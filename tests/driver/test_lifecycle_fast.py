"""XcDriver's lifecycle rules with an in-memory runtime and image store (no root, no zfs).

Start undoes every effect on any failure, one alloc's task holds its jail name, a new plugin
recovers a task from its driver_state (and destroys one it never saw from its record), destroy
is idempotent, and records written by earlier plugin versions still load. The same rules on
real runc + zfs-fuse are in tests/e2e.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from driver.config import ConfigError, PluginConfig, TaskConfig
from driver.driver import XcDriver
from driver.errors import StartFailed, TaskConflict, TaskGone, TaskNotFound
from driver.state import DriverState, Resources
from driver.taskspec import NomadTask
from driver.taskstore import TaskStore
from jails.errors import JailError, SpecError
from tests.driver.fakes import FakeImages, FakeRuntime
from zfsimage.errors import ImageNotFound, RegistryUnavailable, ZfsError

T = TypeVar("T")

ALLOC = "0b5c4d3e-1111-2222-3333-444455556666"
NAME = "xc-0b5c4d3e-web"  # jails.jail_name(ALLOC, "web")


class Host:
    """One host: a state dir, a runtime and an image store that outlive any plugin."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = PluginConfig(state_dir=str(root / "state"))
        self.runtime = FakeRuntime()
        self.images = FakeImages(root / "state" / "images")

    def plugin(self) -> XcDriver:
        """A (new) plugin process on this host."""
        return XcDriver(self.config, runtime=lambda: self.runtime, images=lambda: self.images,
                        tasks=TaskStore(self.root / "state" / "driver"))

    def nomad(self, suffix: str = "1a2b3c4d", task: str = "web") -> NomadTask:
        alloc_dir = self.root / "alloc"
        return NomadTask(id=f"{ALLOC}/{task}/{suffix}", name=task, alloc_id=ALLOC,
                         alloc_dir=str(alloc_dir), stdout_path=str(alloc_dir / "out"),
                         stderr_path=str(alloc_dir / "err"),
                         resources=Resources(cpu_mhz=100, memory_mb=64))

    def record(self, name: str = NAME) -> Path:
        return self.root / "state" / "driver" / f"{name}.json"

    def assert_clean(self, name: str = NAME) -> None:
        """Nothing of the task is left: no record, no clone, no jail."""
        assert not self.record(name).exists()
        assert name not in self.images.clones
        assert not self.runtime.exists(name)


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


def run(fn: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await asyncio.wait_for(fn(), 10)
    return asyncio.run(main())


TASK = TaskConfig(image="registry.example/busybox:1.36")


# ---- start, wait, destroy ----


def test_start_wait_destroy(host: Host) -> None:
    async def scenario() -> None:
        d = host.plugin()
        state = await d.start_task(host.nomad(), TASK)
        assert (state.name, state.image) == (NAME, TASK.image)
        assert host.runtime.status(NAME) == "running"
        recorded = DriverState.decode(host.record().read_bytes())
        assert (recorded.task_id, recorded.rootfs_key) == (state.task_id, NAME)
        assert await d.start_task(host.nomad(), TASK) == state  # StartTask again: same task
        assert host.runtime.calls.count("start") == 1
        with pytest.raises(TaskConflict):
            await d.destroy_task(state.task_id, force=False)
        host.runtime.exit(NAME, 3)
        outcome = await d.wait_task(state.task_id)
        assert outcome.status is not None and outcome.status.exit_code == 3
        await d.destroy_task(state.task_id, force=False)
        host.assert_clean()
        await d.destroy_task(state.task_id, force=False)  # again: nothing to do, no error
        with pytest.raises(TaskNotFound):
            await d.wait_task(state.task_id)

    run(scenario)


def test_stop_then_wait_reports_the_signal(host: Host) -> None:
    async def scenario() -> None:
        d = host.plugin()
        state = await d.start_task(host.nomad(), TASK)
        await d.stop_task(state.task_id, "SIGTERM", 1.0)
        outcome = await d.wait_task(state.task_id)
        assert outcome.status is not None and outcome.status.exit_code == 128 + 15
        with pytest.raises(TaskConflict):
            await d.signal_task(state.task_id, "SIGHUP")
        await d.destroy_task(state.task_id, force=False)
        host.assert_clean()

    run(scenario)


def test_force_destroy_of_a_running_task_ends_its_waiter(host: Host) -> None:
    async def scenario() -> None:
        d = host.plugin()
        state = await d.start_task(host.nomad(), TASK)
        await d.destroy_task(state.task_id, force=True)
        host.assert_clean()
        assert d.tasks.get(state.task_id) is None

    run(scenario)


# ---- a failed start leaves nothing behind ----

class Interrupted(BaseException):
    """Not an Exception: what an interrupt looks like to the undo code."""


FAILURES: list[tuple[str, str, BaseException, type[BaseException], bool | None]] = [
    ("images", "ensure_image", ImageNotFound("no such image"), StartFailed, False),
    ("images", "ensure_image", RegistryUnavailable("connection refused"), StartFailed, True),
    ("images", "clone_rootfs", ZfsError(["zfs", "clone"], 1, "out of space"), StartFailed,
     False),
    ("runtime", "start", JailError("runc create failed"), StartFailed, False),
    ("runtime", "start", SpecError("mounts.target", "not absolute"), ConfigError, None),
    ("runtime", "start", Interrupted(), Interrupted, None),
]


@pytest.mark.parametrize(("where", "method", "exc", "raised", "recoverable"), FAILURES,
                         ids=[f"{m}-{type(e).__name__}" for _, m, e, _, _ in FAILURES])
def test_failed_start_undoes_everything(host: Host, where: str, method: str, exc: BaseException,
                                        raised: type[BaseException],
                                        recoverable: bool | None) -> None:
    async def scenario() -> None:
        d = host.plugin()
        getattr(host, where).fail(method, exc)
        with pytest.raises(raised) as info:
            await d.start_task(host.nomad(), TASK)
        if recoverable is not None:
            assert isinstance(info.value, StartFailed)
            assert info.value.recoverable is recoverable
        host.assert_clean()
        assert d.tasks.get(host.nomad().id) is None
        # the name was released: the next attempt starts
        state = await d.start_task(host.nomad("5e6f7a8b"), TASK)
        assert host.runtime.status(state.name) == "running"

    run(scenario)


def test_start_failing_beside_a_slow_clone_removes_the_clone_once_made(
        host: Host, monkeypatch: Any) -> None:
    # The clone runs in its own thread beside the runtime's start: a start that fails first must
    # wait for the clone before undoing it, or the clone would appear after its undo.
    real = host.images.clone_rootfs
    made = threading.Event()

    def slow(*args: Any, **kw: Any) -> Path:
        time.sleep(0.3)
        try:
            return real(*args, **kw)
        finally:
            made.set()

    async def scenario() -> None:
        d = host.plugin()
        monkeypatch.setattr(host.images, "clone_rootfs", slow)
        host.runtime.fail("start", JailError("runc create failed"))
        with pytest.raises(StartFailed):
            await d.start_task(host.nomad(), TASK)
        assert made.wait(10)  # the clone's making is over (it was, before start_task returned)
        host.assert_clean()

    run(scenario)


def test_bad_config_found_while_composing_undoes_nothing_it_did_not_do(host: Host) -> None:
    async def scenario() -> None:
        d = host.plugin()
        # an image whose Cmd is overridden by an empty entrypoint and no command: nothing to run
        bad = TaskConfig(image=TASK.image, entrypoint=())
        with pytest.raises(ConfigError, match=r"config\.command"):
            await d.start_task(host.nomad(), bad)
        host.assert_clean()
        assert "clone_rootfs" not in host.images.calls

    run(scenario)


def test_failing_record_write_leaves_no_clone(host: Host, monkeypatch: Any) -> None:
    async def scenario() -> None:
        d = host.plugin()

        def refuse(state: DriverState) -> None:
            raise OSError(28, "No space left on device")
        monkeypatch.setattr(d.tasks, "save", refuse)
        with pytest.raises(OSError):
            await d.start_task(host.nomad(), TASK)
        host.assert_clean()
        assert "clone_rootfs" not in host.images.calls

    run(scenario)


def test_failing_undo_does_not_hide_the_start_error(host: Host) -> None:
    async def scenario() -> None:
        d = host.plugin()
        host.runtime.fail("start", JailError("runc create failed"))
        host.images.fail("destroy_rootfs", ZfsError(["zfs", "destroy"], 1, "busy"))
        with pytest.raises(StartFailed, match="runc create failed"):
            await d.start_task(host.nomad(), TASK)
        assert not host.record().exists()  # the undos after the failing one still ran

    run(scenario)


# ---- one jail name per alloc's task ----


def test_a_running_incarnation_holds_the_name(host: Host) -> None:
    async def scenario() -> None:
        d = host.plugin()
        first = await d.start_task(host.nomad("00000001"), TASK)
        with pytest.raises(StartFailed, match="already running") as info:
            await d.start_task(host.nomad("00000002"), TASK)
        assert info.value.recoverable is False
        assert host.runtime.status(NAME) == "running"
        host.runtime.exit(NAME, 0)
        await d.wait_task(first.task_id)
        second = await d.start_task(host.nomad("00000002"), TASK)  # replaces the exited one
        assert DriverState.decode(host.record().read_bytes()).task_id == second.task_id
        # destroying the old incarnation must not touch the new one's jail, clone or record
        await d.destroy_task(first.task_id, force=True)
        assert host.runtime.status(NAME) == "running"
        assert second.rootfs_key in host.images.clones and host.record().exists()
        await d.destroy_task(second.task_id, force=True)
        host.assert_clean()

    run(scenario)


def test_an_orphan_of_a_lost_handle_is_removed_before_a_start(host: Host) -> None:
    async def scenario() -> None:
        await host.plugin().start_task(host.nomad("00000001"), TASK)
        # a new plugin, never told about the first task, is asked to start the alloc's task
        state = await host.plugin().start_task(host.nomad("00000002"), TASK)
        assert host.runtime.calls.count("destroy") == 1
        assert DriverState.decode(host.record().read_bytes()).task_id == state.task_id

    run(scenario)


# ---- recovery by a new plugin ----


def test_recover_a_running_task_and_wait_for_it(host: Host) -> None:
    async def scenario() -> None:
        state = await host.plugin().start_task(host.nomad(), TASK)
        d = host.plugin()
        entry = await d.recover_task(state.task_id, state.encode())
        assert entry.state == state and not entry.exited
        assert await d.recover_task(state.task_id, state.encode()) is entry  # idempotent
        host.runtime.exit(NAME, 7)
        outcome = await d.wait_task(state.task_id)
        assert outcome.status is not None and outcome.status.exit_code == 7

    run(scenario)


def test_recover_an_exited_task_and_write_a_missing_record(host: Host) -> None:
    async def scenario() -> None:
        state = await host.plugin().start_task(host.nomad(), TASK)
        host.runtime.exit(NAME, 0)
        host.record().unlink()
        d = host.plugin()
        entry = await d.recover_task(state.task_id, state.encode())
        assert entry.exited and entry.exit_status is not None
        assert host.record().exists()

    run(scenario)


def test_recover_refuses_what_it_cannot_own(host: Host) -> None:
    async def scenario() -> None:
        state = await host.plugin().start_task(host.nomad("00000001"), TASK)
        d = host.plugin()
        with pytest.raises(TaskGone, match="cannot be recovered"):
            await d.recover_task(state.task_id, b"")
        with pytest.raises(TaskGone, match="belongs to task"):
            await d.recover_task(f"{ALLOC}/web/ffffffff", state.encode())
        # the record says a newer incarnation owns the jail now
        newer = DriverState.decode(host.record().read_bytes())
        host.plugin().tasks.save(dataclasses.replace(newer, task_id=f"{ALLOC}/web/2"))
        with pytest.raises(TaskGone, match="now runs"):
            await d.recover_task(state.task_id, state.encode())
        await host.plugin().destroy_task(f"{ALLOC}/web/2", force=True)
        with pytest.raises(TaskGone, match="is gone"):  # no jail at all
            await d.recover_task(state.task_id, state.encode())

    run(scenario)


# ---- destroy by a plugin that never saw the task ----


def test_destroy_of_an_unseen_task_goes_by_its_record(host: Host) -> None:
    async def scenario() -> None:
        state = await host.plugin().start_task(host.nomad(), TASK)
        d = host.plugin()
        await d.destroy_task("not-a-nomad-task-id", force=True)  # no such task: success
        await d.destroy_task(f"{ALLOC}/web/ffffffff", force=True)  # not the record's task
        assert host.runtime.status(NAME) == "running"
        with pytest.raises(TaskConflict):
            await d.destroy_task(state.task_id, force=False)
        await d.destroy_task(state.task_id, force=True)
        host.assert_clean()
        await d.destroy_task(state.task_id, force=True)

    run(scenario)


# ---- records of earlier plugin versions ----

# Written by the plugin before TaskStore (driver/driver.py _save_state, DriverState v1).
V1_RECORD = (
    b'{"alloc_dir":"/var/lib/nomad/alloc/0b5c4d3e-1111-2222-3333-444455556666",'
    b'"alloc_id":"0b5c4d3e-1111-2222-3333-444455556666","image":"127.0.0.1:5000/busybox:1.36",'
    b'"image_digest":"sha256:abababababababababababababababababababababababababababababababab",'
    b'"name":"xc-0b5c4d3e-web","resources":{"cores":0,"cpu_mhz":500,"cpuset":[],'
    b'"memory_max_mb":256,"memory_mb":128},"rootfs_key":"xc-0b5c4d3e-web",'
    b'"started_at":1764930000.25,"stderr_path":"/x/.web.stderr.fifo",'
    b'"stdout_path":"/x/.web.stdout.fifo",'
    b'"task_id":"0b5c4d3e-1111-2222-3333-444455556666/web/1a2b3c4d","task_name":"web","v":1}'
)


def test_a_record_of_the_previous_version_loads_and_drives_destroy(host: Host) -> None:
    host.record().parent.mkdir(parents=True)
    host.record().write_bytes(V1_RECORD)
    store = TaskStore(host.record().parent)
    state = store.load(NAME)
    assert state is not None
    assert (state.task_id, state.rootfs_key, state.resources) == (
        f"{ALLOC}/web/1a2b3c4d", NAME, Resources(500, 128, 256))
    assert store.record_of(f"{ALLOC}/web/1a2b3c4d") == state

    async def scenario() -> None:
        host.runtime.jails.clear()
        await host.plugin().destroy_task(state.task_id, force=True)
        host.assert_clean()

    run(scenario)
