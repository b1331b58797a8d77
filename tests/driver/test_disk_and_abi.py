"""StartTask's disk quota (storage_opt size -> the clone's refquota) and Linux images on the
FreeBSD backend (JailSpec abi and the task event), with the in-memory runtime and image store of
tests/driver/fakes.py. The quota itself on zfs-fuse: tests/zfsimage/test_task_quota.py and
tests/e2e/test_disk_quota.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from driver.config import ConfigError, Limits, PluginConfig, StorageOpt, TaskConfig
from driver.driver import XcDriver, describe
from driver.events import EventBus, TaskEvent
from driver.state import DriverState
from driver.taskstore import TaskStore
from tests.driver.test_lifecycle_fast import NAME, Host, run
from zfsimage import ImageConfig
from zfsimage.errors import QuotaTooSmall

G = 1 << 30
TASK = TaskConfig(image="registry.example/app:1")


class Recorder(EventBus):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[TaskEvent] = []

    def publish(self, event: TaskEvent) -> None:
        self.seen.append(event)


def plugin(host: Host, config: PluginConfig, events: EventBus | None = None) -> XcDriver:
    return XcDriver(config, runtime=lambda: host.runtime, images=lambda: host.images,
                    tasks=TaskStore(host.root / "state" / "driver"), events=events)


def config(host: Host, **changes: Any) -> PluginConfig:
    return dataclasses.replace(host.config, **changes)


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


# (task storage_opt size, plugin default_limits disk, max_limits disk) -> refquota of the clone
QUOTAS = [
    (0, 0, 0, None),            # nothing set: no quota
    (G, 0, 0, G),               # the task's ask
    (0, 2 * G, 0, 2 * G),       # the operator's default
    (G, 2 * G, 4 * G, G),       # the task's ask beats the default
    (0, 0, 4 * G, 4 * G),       # a maximum alone is everyone's default (as maxproc/openfiles)
    (4 * G, 0, 4 * G, 4 * G),   # up to the maximum is fine
]


@pytest.mark.parametrize(("ask", "default", "cap", "quota"), QUOTAS)
def test_the_clone_gets_the_quota_and_the_state_records_it(host: Host, ask: int, default: int,
                                                           cap: int, quota: int | None) -> None:
    cfg = config(host, default_limits=Limits(disk=default), max_limits=Limits(disk=cap))
    task = dataclasses.replace(TASK, storage_opt=StorageOpt(ask))

    async def scenario() -> None:
        d = plugin(host, cfg)
        state = await d.start_task(host.nomad(), task)
        assert host.images.quotas[NAME] == quota
        assert state.disk_bytes == (quota or 0)
        assert DriverState.decode(host.record().read_bytes()).disk_bytes == (quota or 0)
        assert describe(d.task(state.task_id)).get("disk_quota_bytes") == (
            str(quota) if quota else None)
        # a new plugin recovers the task with its quota from the handle alone
        again = await plugin(host, cfg).recover_task(state.task_id, state.encode())
        assert again.state.disk_bytes == (quota or 0)

    run(scenario)


def test_an_ask_above_the_maximum_is_refused_before_anything_is_made(host: Host) -> None:
    cfg = config(host, max_limits=Limits(disk=2 * G))
    task = dataclasses.replace(TASK, storage_opt=StorageOpt(3 * G))

    async def scenario() -> None:
        with pytest.raises(ConfigError) as ei:
            await plugin(host, cfg).start_task(host.nomad(), task)
        assert ei.value.field == "config.storage_opt.size"
        assert "3G is above this client's maximum disk 2G" in str(ei.value)
        assert "clone_rootfs" not in host.images.calls and not host.runtime.calls
        host.assert_clean()

    run(scenario)


def test_a_quota_below_the_image_size_names_the_option_and_undoes_the_start(host: Host) -> None:
    host.images.fail("clone_rootfs", QuotaTooSmall(
        "a disk quota of 1048576 bytes is smaller than image x itself (5000000 bytes); ask "
        "for more than 5M", 1 << 20, 5_000_000))
    task = dataclasses.replace(TASK, storage_opt=StorageOpt(1 << 20))

    async def scenario() -> None:
        with pytest.raises(ConfigError) as ei:
            await plugin(host, host.config).start_task(host.nomad(), task)
        assert ei.value.field == "config.storage_opt.size" and "ask for more than 5M" in str(
            ei.value)
        host.assert_clean()

    run(scenario)


ABI_EVENT = "Image linux/amd64 runs under FreeBSD's Linux ABI (linux64)"

# (backend, image os, linux_images) -> JailSpec abi, or the error; the event only for "linux"
ABIS = [
    ("freebsd", "linux", True, "linux"),
    ("freebsd", "freebsd", True, "native"),
    ("freebsd", "freebsd", False, "native"),
    ("linux", "linux", False, "native"),     # Linux images are native on the Linux backend
    ("linux", "linux", True, "native"),
    ("freebsd", "linux", False, "refused"),
]


@pytest.mark.parametrize(("backend", "image_os", "allowed", "abi"), ABIS)
def test_linux_images_on_freebsd(host: Host, backend: str, image_os: str, allowed: bool,
                                 abi: str) -> None:
    cfg = config(host, backend=backend, linux_images=allowed)
    host.images.config = ImageConfig(cmd=("/bin/sleep", "60"), os=image_os,
                                      architecture="amd64")
    events = Recorder()

    async def scenario() -> None:
        d = plugin(host, cfg, events)
        if abi == "refused":
            with pytest.raises(ConfigError) as ei:
                await d.start_task(host.nomad(), TASK)
            assert ei.value.field == "config.image"
            assert "linux_images = true" in str(ei.value)
            host.assert_clean()
        else:
            await d.start_task(host.nomad(), TASK)
            assert host.runtime.jails[NAME].spec.abi == abi
        messages = [e.message for e in events.seen]
        assert (ABI_EVENT in messages) == (abi == "linux")

    run(scenario)


def test_the_event_names_the_image_platform(host: Host) -> None:
    cfg = config(host, backend="freebsd", linux_images=True)
    host.images.config = ImageConfig(cmd=("/bin/true",), os="linux", architecture="arm64",
                                     variant="v8")
    events = Recorder()

    async def scenario() -> None:
        await plugin(host, cfg, events).start_task(host.nomad(), TASK)

    run(scenario)
    [ev] = [e for e in events.seen if "Linux ABI" in e.message]
    assert ev.message == "Image linux/arm64/v8 runs under FreeBSD's Linux ABI (linux64)"
    assert dict(ev.annotations) == {"image": TASK.image, "abi": "linux64"}
    assert ev.task_name == "web"
