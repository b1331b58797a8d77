"""What the lifecycle needs from its collaborators, as protocols.

``XcDriver`` is given its runtime and image store (``driver.wiring`` builds the real ones); these
protocols name the part of each it uses, so a test can hand it small in-memory fakes and the
image store can be split behind ``zfsimage``'s public API without touching the lifecycle. The
runtime is ``jails.Runtime`` itself: that class is the jails package's interface.

``TaskSource`` is what the TaskStats and exec code need from the driver, so that they do not
import ``driver.driver`` (which would be a cycle through the servicer).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import zfsimage
from driver.taskstore import TaskEntry
from jails import Runtime


class Images(Protocol):
    """The image store as the lifecycle uses it (``zfsimage.ImageStore``)."""

    @property
    def mount_root(self) -> Path: ...

    def ensure_image(self, reference: str, auth: zfsimage.RegistryAuth | None = None,
                     platform: zfsimage.Platform | str | None = None,
                     progress: Callable[[zfsimage.PullProgress], None] | None = None,
                     revalidate: bool | None = None) -> zfsimage.Image:
        """Make the image available locally (pulling what is missing); blocking, idempotent."""

    def clone_rootfs(self, image: zfsimage.Image, task_key: str) -> Path:
        """A writable clone of the image for one task, mounted; idempotent."""

    def destroy_rootfs(self, task_key: str) -> None:
        """Remove a task's clone; gone already is success."""


class TaskSource(Protocol):
    """The known tasks and the runtime they run in (``XcDriver``)."""

    @property
    def runtime(self) -> Runtime: ...

    def task(self, task_id: str) -> TaskEntry:
        """The known task ``task_id``; TaskNotFound otherwise."""
