"""What the lifecycle needs from its collaborators, as protocols.

``XcDriver`` is given its runtime and image store (``driver.wiring`` builds the real ones); these
protocols name the part of each it uses, so a test can hand it small in-memory fakes and the
image store can be split behind ``zfsimage``'s public API without touching the lifecycle. The
runtime is ``jails.Runtime`` itself: that class is the jails package's interface.

``TaskSource`` is what the TaskStats and exec code need from the driver, so that they do not
import ``driver.driver`` (which would be a cycle through the servicer).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from contextlib import AbstractContextManager
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

    def clone_rootfs(self, image: zfsimage.Image, task_key: str,
                     refquota: int | None = None) -> Path:
        """A writable clone of the image for one task, mounted, with at most ``refquota``
        bytes of disk (None: unlimited); idempotent."""

    def destroy_rootfs(self, task_key: str) -> None:
        """Remove a task's clone; gone already is success."""

    def taking_spare(self, image: zfsimage.Image, refquota: int | None = None
                     ) -> AbstractContextManager[tuple[str, Path] | None]:
        """An idle spare clone of ``image`` with this quota, now the caller's: (task key,
        root), or None; the caller records the key inside the block."""

    def refill_spares(self, image: zfsimage.Image, refquota: int | None,
                      keep: int) -> list[str]:
        """Make spare clones of ``image`` until ``keep`` are idle; blocking."""

    def expire_spares(self, max_idle_s: float) -> list[str]:
        """Destroy the idle spare clones made more than ``max_idle_s`` ago."""

    def sweep_spares(self, owned: Callable[[], Collection[str]]) -> list[str]:
        """Destroy the taken spare clones whose key is not in ``owned()``."""


class TaskSource(Protocol):
    """The known tasks and the runtime they run in (``XcDriver``)."""

    @property
    def runtime(self) -> Runtime: ...

    def task(self, task_id: str) -> TaskEntry:
        """The known task ``task_id``; TaskNotFound otherwise."""
