"""In-memory stand-ins for the jails runtime and the image store, for lifecycle tests.

They implement the part of ``jails.Runtime`` and of ``driver.ports.Images`` that ``XcDriver``
uses, with the same contract where the lifecycle depends on it: ``start`` refuses a name that
exists, ``destroy`` and ``destroy_rootfs`` of what is gone succeed, ``wait`` blocks until the
task exits and fails with JailNotFound when its jail is removed first. ``fail`` makes the next
call of a method raise, to reach every failure point of a start.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zfsimage
from jails import ExitStatus, JailSpec, TaskHandle
from jails.errors import JailExists, JailNotFound, NotRunning
from zfsimage import ImageConfig


class Faults:
    """Exceptions to raise on the next call of a named method."""

    def __init__(self) -> None:
        self._next: dict[str, BaseException] = {}
        self.calls: list[str] = []

    def fail(self, method: str, exc: BaseException) -> None:
        self._next[method] = exc

    def check(self, method: str) -> None:
        self.calls.append(method)
        exc = self._next.pop(method, None)
        if exc is not None:
            raise exc


@dataclass
class FakeJail:
    spec: JailSpec
    pid: int
    started_at: float
    status: ExitStatus | None = None
    signals: list[int] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)


class FakeRuntime(Faults):
    backend = "fake"
    derive_cpu_percent = True
    init_exit_kills_all = True

    def __init__(self) -> None:
        super().__init__()
        self.jails: dict[str, FakeJail] = {}
        self._pids = itertools.count(1000)
        self._mu = threading.Lock()

    def _jail(self, name: str) -> FakeJail:
        with self._mu:
            jail = self.jails.get(name)
        if jail is None:
            raise JailNotFound(name)
        return jail

    def start(self, spec: JailSpec,
              rootfs_ready: Callable[[], Path] | None = None) -> TaskHandle:
        self.check("start")
        if rootfs_ready is not None:
            rootfs_ready()  # the clone's failure is the start's, as in the real runtime
        with self._mu:
            if spec.name in self.jails:
                raise JailExists(spec.name)
            jail = self.jails[spec.name] = FakeJail(spec, next(self._pids), time.time())
        return TaskHandle(spec.name, jail.pid, jail.pid + 1, Path("/fake") / spec.name,
                          jail.started_at)

    def exists(self, name: str) -> bool:
        return name in self.jails

    def status(self, name: str) -> str:
        jail = self.jails.get(name)
        if jail is None:
            return "unknown"
        return "running" if jail.status is None else "exited"

    def exit_status(self, name: str) -> ExitStatus | None:
        return self._jail(name).status

    def exit(self, name: str, code: int, signal: int = 0) -> None:
        """The task ends on its own."""
        jail = self._jail(name)
        with jail.changed:
            if jail.status is None:
                jail.status = ExitStatus(code, signal, finished_at=time.time())
            jail.changed.notify_all()

    def wait(self, name: str, timeout: float | None = None) -> ExitStatus:
        jail = self._jail(name)
        with jail.changed:
            jail.changed.wait_for(lambda: jail.status is not None or self.jails.get(name)
                                  is not jail, timeout)
            if self.jails.get(name) is not jail:
                raise JailNotFound(name)
            assert jail.status is not None
            return jail.status

    def signal(self, name: str, signum: int) -> None:
        jail = self._jail(name)
        if jail.status is not None:
            raise NotRunning(name)
        jail.signals.append(signum)

    def stop(self, name: str, signum: int = 15, timeout_s: float = 5.0) -> ExitStatus:
        self.signal(name, signum)
        self.exit(name, 128 + signum, signum)
        return self._jail(name).status or ExitStatus(-1)

    def destroy(self, name: str) -> None:
        self.check("destroy")
        with self._mu:
            jail = self.jails.pop(name, None)
        if jail is not None:
            with jail.changed:
                jail.changed.notify_all()

    def handle(self, name: str) -> TaskHandle:
        jail = self._jail(name)
        return TaskHandle(name, jail.pid, jail.pid + 1, Path("/fake") / name, jail.started_at)

    def exec_interactive(self, name: str, argv: Sequence[str], **kw: Any) -> Any:
        raise NotImplementedError("no exec in the fake runtime")


class FakeImages(Faults):
    """Images that are always there; task clones as directories under ``mount_root``."""

    def __init__(self, mount_root: Path) -> None:
        super().__init__()
        self.mount_root = mount_root
        self.clones: set[str] = set()
        self.quotas: dict[str, int | None] = {}  # task key -> the refquota it was cloned with
        self.pulls: list[str] = []
        self.config = ImageConfig(cmd=("/bin/sleep", "60"))  # what every image is
        self.idle: dict[str, tuple[str, int | None]] = {}  # idle spare -> (image, quota)
        self._spare_seq = itertools.count(1)
        self._spare_mu = threading.Lock()

    def ensure_image(self, reference: str, auth: zfsimage.RegistryAuth | None = None,
                     platform: Any = None,
                     progress: Callable[[zfsimage.PullProgress], None] | None = None,
                     revalidate: bool | None = None) -> zfsimage.Image:
        self.check("ensure_image")
        self.pulls.append(reference)
        return zfsimage.Image(reference=reference, manifest_digest="sha256:" + "ab" * 32,
                              chain_id="sha256:" + "cd" * 32,
                              config=self.config, platform=str(platform or "linux/amd64"))

    def clone_rootfs(self, image: zfsimage.Image, task_key: str,
                     refquota: int | None = None) -> Path:
        self.check("clone_rootfs")
        self.quotas[task_key] = refquota
        path = self.mount_root / "tasks" / task_key
        path.mkdir(parents=True, exist_ok=True)
        self.clones.add(task_key)
        return path

    def destroy_rootfs(self, task_key: str) -> None:
        self.check("destroy_rootfs")
        path = self.mount_root / "tasks" / task_key
        if path.exists():
            path.rmdir()
        self.clones.discard(task_key)

    # Spare clones as zfsimage.spares keeps them: idle ones are keyed by image and quota, a
    # taken one is a clone like any other until its taker destroys it.

    def taking_spare(self, image: zfsimage.Image, refquota: int | None = None
                     ) -> contextlib.AbstractContextManager[tuple[str, Path] | None]:
        self.check("taking_spare")
        with self._spare_mu:
            key = next((k for k, v in self.idle.items() if v == (image.manifest_digest,
                                                                  refquota)), None)
            if key is not None:
                del self.idle[key]
        return contextlib.nullcontext(
            None if key is None else (key, self.mount_root / "tasks" / key))

    def refill_spares(self, image: zfsimage.Image, refquota: int | None,
                      keep: int) -> list[str]:
        self.check("refill_spares")
        made = []
        while sum(v == (image.manifest_digest, refquota) for v in self.idle.values()) < keep:
            key = f"spare.{next(self._spare_seq)}"
            self.clone_rootfs(image, key, refquota)
            with self._spare_mu:
                self.idle[key] = (image.manifest_digest, refquota)
            made.append(key)
        return made

    def expire_spares(self, max_idle_s: float) -> list[str]:
        self.check("expire_spares")
        gone = list(self.idle) if max_idle_s < 0 else []
        for key in gone:
            del self.idle[key]
            self.destroy_rootfs(key)
        return gone

    def sweep_spares(self, owned: Callable[[], Collection[str]]) -> list[str]:
        self.check("sweep_spares")
        keep = set(owned()) | set(self.idle)
        gone = [k for k in self.clones if k.startswith("spare.") and k not in keep]
        for key in gone:
            self.destroy_rootfs(key)
        return gone
