"""``Starter``: the blocking part of StartTask (clear an orphan, record, clone, network, start).

``XcDriver.start_task`` pulls the image on the event loop's side and then runs
``Starter.start`` on its thread pool. Each effect registers its undo before it is made and the
undos run in reverse on any failure, so a failed start leaves no record, clone, network or jail.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Protocol

import zfsimage
from driver.config import ConfigError, PluginConfig, TaskConfig
from driver.errors import StartFailed
from driver.hostpaths import resolve_mount_sources, resolve_nomad_paths
from driver.network import write_files as write_network_files
from driver.ports import Images
from driver.pull import image_failure
from driver.state import DriverState
from driver.tasknet import NetRequest, TaskNetworks, request_of
from driver.taskspec import ImageDefaults, Node, NomadTask, compose, disk_quota_of, spec_field
from driver.taskstore import TaskStore
from jails import Runtime
from jails.errors import JailError, SpecError
from zfsimage.errors import ImageError, QuotaTooSmall

__all__ = ["Starter", "net_request", "start_error"]

log = logging.getLogger("driver")


@dataclasses.dataclass(frozen=True)
class Starter:
    """What a start touches: the plugin's config, the opened runtime and image store, the
    task records, the task networks and the node's compute figures."""

    config: PluginConfig
    runtime: Runtime
    images: Images
    tasks: TaskStore
    networks: TaskNetworks
    node: Callable[[], Node]

    def start(self, nomad: NomadTask, cfg: TaskConfig, name: str, image: zfsimage.Image,
              abi: str, net_req: NetRequest | None,
              steps: dict[str, float] | None = None) -> DriverState:
        """Start the task as jail ``name`` from the pulled ``image``; its ``driver_state``.
        Raises ConfigError or StartFailed (see ``start_error``) after undoing every effect.
        ``steps`` gets the ms of each part (spec and record, clone, network and files, runtime
        start) and ``spare`` 1 when the root was a spare clone."""
        rt, store = self.runtime, self.images
        split = steps if steps is not None else {}
        t = time.monotonic()
        undo: list[Callable[[], None]] = []
        try:
            self.clear_previous(name)
            ic = image.config
            defaults = ImageDefaults(tuple(ic.entrypoint), tuple(ic.cmd), tuple(ic.env),
                                     ic.working_dir, ic.user,
                                     root_id=image.chain_id or image.manifest_digest)
            placed = resolve_nomad_paths(nomad)  # its task_dir is resolved
            cfg = resolve_mount_sources(cfg, placed.task_dir,
                                        self.config.volumes.allowed_host_paths)
            quota = disk_quota_of(cfg, self.config)
            with self._spare(image, quota) as spare:
                if spare is not None:
                    key, predicted = spare
                    undo.append(lambda: store.destroy_rootfs(key))  # taken: ours to remove
                    split["spare"] = 1
                else:
                    key, predicted = name, store.mount_root / "tasks" / name
                spec = compose(name=name, rootfs=predicted, image=defaults, task=cfg,
                               nomad=placed, plugin=self.config, node=self.node(), abi=abi)
                state = DriverState(
                    task_id=nomad.id, alloc_id=nomad.alloc_id, task_name=nomad.name,
                    name=name, rootfs_key=key, image=cfg.image,
                    image_digest=image.manifest_digest, started_at=time.time(),
                    resources=nomad.resources, alloc_dir=nomad.alloc_dir,
                    stdout_path=nomad.stdout_path, stderr_path=nomad.stderr_path,
                    disk_bytes=quota or 0, network_mode=net_req.mode if net_req else "")
                # The record goes first: whenever a clone or jail of this name may exist, a
                # record says whose it is (what clear_previous and destroy of a lost handle rely
                # on), and which clone is its root.
                undo.append(lambda: self.tasks.forget(name))
                self.tasks.save(state)
            t_clone = time.monotonic()
            root: _Root
            if spare is not None:
                root = _Ready(predicted)
            else:
                # The clone runs beside the rest of the start (network, files, what the runtime
                # can do before the root exists); the runtime waits for it when it needs it.
                clone = root = _Clone(store, image, name, quota)  # refquota set as it is made
                undo.append(lambda: clone.undo(store))
            if net_req is not None:
                nets = self.networks
                undo.append(lambda: nets.release(nomad.alloc_id, nomad.name))
                alloc = nets.ensure(nomad.alloc_id, nomad.name, net_req)
                joins: dict[str, Any] = dict(alloc.jail_spec_fields())
                spec = dataclasses.replace(spec, **joins)
            write_network_files(nomad.network, nomad.dns, nomad.task_dir)  # hosts, resolv.conf
            inside = placed.task_dir.rstrip("/") + "/"
            for m in spec.mounts:
                # A relative source (config.mount/volumes) lives in Nomad's task dir, which the
                # task owns: create it like docker does for a missing bind source (a file there,
                # e.g. a template or the network files above, is bound as it is).
                if str(m.source).startswith(inside) and not m.source.exists():
                    m.source.mkdir(parents=True, exist_ok=True)
            t_run = time.monotonic()
            handle = rt.start(spec, rootfs_ready=root.result)
            split.update(spec_ms=_ms(t_clone - t), clone_ms=_ms(root.seconds),
                         files_ms=_ms(t_run - t_clone), runtime_ms=_ms(time.monotonic() - t_run))
            return dataclasses.replace(state, started_at=handle.started_at)
        except BaseException as exc:
            for fn in reversed(undo):
                try:
                    fn()
                except Exception:  # keep undoing; the original error is what matters
                    log.exception("undo after a failed start failed", extra={"jail": name})
            err = start_error(exc, cfg, nomad)
            if err is exc:
                raise
            raise err from exc

    def clear_previous(self, name: str) -> None:
        """Remove what an earlier incarnation of this alloc's task left behind. Nomad starts a
        task only when it holds no live handle for it, and start_task has already refused a
        live one this plugin knows, so a jail still running here is an orphan (a start whose
        caller went away, a handle Nomad dropped): it goes too."""
        rt = self.runtime
        recorded = self.tasks.recorded(name)
        if rt.exists(name):
            log.warning("removing a previous incarnation of the task",
                        extra={"jail": name, "status": rt.status(name)})
            rt.destroy(name)
        elif not recorded:
            return  # no record, no jail: no clone either (the record is written first)
        previous = self.tasks.load(name)  # unreadable: a spare it took goes at the next sweep
        self.images.destroy_rootfs(previous.rootfs_key if previous else name)
        self.tasks.forget(name)

    def _spare(self, image: zfsimage.Image, quota: int | None
               ) -> AbstractContextManager[tuple[str, Path] | None]:
        if self.config.spare_clones.count == 0:
            return nullcontext(None)
        return self.images.taking_spare(image, quota)


class _Ready:
    """A root that is there already (a spare clone)."""

    seconds = 0.0

    def __init__(self, root: Path) -> None:
        self._root = root

    def result(self) -> Path:
        return self._root


class _Root(Protocol):
    seconds: float

    def result(self) -> Path: ...


class _Clone:
    """``clone_rootfs`` run in a thread of its own from construction: the start goes on beside it
    and ``result`` waits for the root (or raises the clone's error)."""

    def __init__(self, store: Images, image: zfsimage.Image, name: str,
                 quota: int | None) -> None:
        self.name = name
        self.seconds = 0.0
        self._root: Path | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(store, image, name, quota),
                                         name=f"clone-{name}", daemon=True)
        self._thread.start()

    def _run(self, store: Images, image: zfsimage.Image, name: str, quota: int | None) -> None:
        t0 = time.monotonic()
        try:
            self._root = store.clone_rootfs(image, name, quota)
        except BaseException as exc:  # handed to whoever waits for the root
            self._error = exc
        finally:
            self.seconds = time.monotonic() - t0

    def result(self) -> Path:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._root is not None
        return self._root

    def undo(self, store: Images) -> None:
        """Destroy the clone once it is made or has failed (never beside its making)."""
        self._thread.join()
        store.destroy_rootfs(self.name)


def start_error(exc: BaseException, cfg: TaskConfig, nomad: NomadTask) -> BaseException:
    """The error StartTask reports for what failed a start (the config's field when it was the
    config, recoverable when the cause is transient)."""
    if isinstance(exc, ConfigError | StartFailed):
        return exc
    if isinstance(exc, SpecError):
        return ConfigError(spec_field(exc.field), exc.message, "fix the task config")
    if isinstance(exc, QuotaTooSmall):
        return ConfigError("config.storage_opt.size", str(exc),
                           "raise storage_opt size (or the plugin's default_limits disk)")
    if isinstance(exc, ImageError):
        return image_failure(cfg.image, exc)
    if isinstance(exc, JailError):
        return StartFailed(f"task {nomad.name!r} could not start: {exc}", recoverable=False)
    return exc


def net_request(cfg: TaskConfig, nomad: NomadTask) -> NetRequest | None:
    """The network the task asks the driver for (None: the host's or Nomad's group network)."""
    group = nomad.network is not None and nomad.network.mode == "group"
    return request_of(cfg, group, nomad.ports)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)
