"""The composition root: the runtime, the image store and the lifecycle built from the config.

The only place that turns ``PluginConfig`` (and the environment) into components. Both
components run commands when opened, and the plugin starts with default settings until Nomad's
SetConfig, so each is opened once, on first use, by whichever thread needs it first.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

import jails
import zfsimage
from driver.config import PluginConfig
from driver.driver import XcDriver
from driver.events import EventBus
from driver.tasknet import TaskNetworks
from driver.taskspec import Node
from driver.taskstore import TaskStore

T = TypeVar("T")

CGROUP_PARENT_ENV = "XC_CGROUP_PARENT"  # Linux backend: cgroup parent of the task containers


class Once(Generic[T]):
    """``open()`` called on the first ``get()`` only, whatever the thread; callable as ``get``."""

    def __init__(self, open: Callable[[], T]) -> None:
        self._open = open
        self._value: T | None = None
        self._lock = threading.Lock()

    def __call__(self) -> T:
        with self._lock:
            if self._value is None:
                self._value = self._open()
            return self._value


def open_runtime(config: PluginConfig, environ: Mapping[str, str] = os.environ) -> jails.Runtime:
    backend = config.resolved_backend()
    options: dict[str, Any] = {}
    if backend == "linux":
        options["cgroup_parent"] = environ.get(CGROUP_PARENT_ENV, "xc")
    return jails.open_runtime(backend, Path(config.state_dir) / "jails", **options)


def open_image_store(config: PluginConfig) -> zfsimage.ImageStore:
    return zfsimage.ImageStore(zfsimage.StoreConfig(
        dataset=config.dataset,
        mount_root=Path(config.state_dir) / "images",
        platform=zfsimage.Platform.parse(config.platform) if config.platform else None,
        docker_config=Path(config.auth.config) if config.auth.config else None,
        credential_helper=config.auth.helper,
        registry=zfsimage.RegistryOptions(
            insecure_registries=config.allow_insecure_registries,
            # a read that sees no byte for this long is a stalled pull
            timeout_s=config.pull_activity_timeout.total_seconds()),
        gc_delay_s=config.gc.image_delay.total_seconds(),
        limits=config.image_limits,
        # Like Nomad's docker driver: a tag present locally is used as it is unless the task
        # sets force_pull (no registry round trip per start).
        revalidate_tags=False,
        linux_images=config.linux_images,
    ))


def build_driver(config: PluginConfig, events: EventBus,
                 node: Callable[[], Node] | None = None) -> XcDriver:
    """The lifecycle for ``config``: its runtime and store open on first use."""
    return XcDriver(
        config,
        runtime=Once(lambda: open_runtime(config)),
        images=Once(lambda: open_image_store(config)),
        tasks=TaskStore(Path(config.state_dir) / "driver"),
        networks=TaskNetworks(config, Path(config.state_dir)),
        events=events,
        node=node,
    )
