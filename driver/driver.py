"""``XcDriver``: the task lifecycle (start, wait, stop, destroy, inspect, signal, recover).

No protobuf here: ``driver.servicer`` converts at the edge. Blocking library calls (zfsimage,
jails) run on the driver's own thread pool, sized for many concurrent stops that each wait a
kill_timeout. What waits on a task lives outside this process (the jails supervisor writes the
exit status), so a new plugin recovers every task from its ``driver_state`` alone; in memory
there is only a cache (``TaskEntry``) and one waiter thread per running task.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal as signals
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import jails
import zfsimage
from driver.config import ConfigError, PluginConfig, TaskConfig
from driver.errors import BadRequest, StartFailed, TaskConflict, TaskGone, TaskNotFound
from driver.events import EventBus, TaskEvent
from driver.hostpaths import resolve_mount_sources, resolve_nomad_paths
from driver.network import write_files as write_network_files
from driver.state import DriverState, Resources, StateError
from driver.tasknet import DriverNetwork, TaskNetworks, driver_network, request_of
from driver.taskspec import ImageDefaults, Node, NomadTask, compose, spec_field
from jails import ExitStatus, JailNotFound, Runtime, jail_name
from jails.errors import JailError, NotRunning, SpecError
from zfsimage.errors import AuthError, ImageError

log = logging.getLogger("driver")

T = TypeVar("T")

CGROUP_PARENT_ENV = "XC_CGROUP_PARENT"  # Linux backend: cgroup parent of the task containers
PROGRESS_EVERY_S = 2.0                   # at most one pull-progress event per task this often


@dataclass(frozen=True)
class Outcome:
    """How a task ended, as WaitTask reports it: an exit status, or why there is none."""

    status: ExitStatus | None
    error: str = ""


@dataclass(eq=False)
class TaskEntry:
    """A task this plugin knows, running or exited, until DestroyTask."""

    state: DriverState
    exit_status: ExitStatus | None = None
    error: str = ""
    _done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def task_id(self) -> str:
        return self.state.task_id

    @property
    def name(self) -> str:
        return self.state.name

    @property
    def alloc_id(self) -> str:
        return self.state.alloc_id

    @property
    def task_name(self) -> str:
        return self.state.task_name

    @property
    def resources(self) -> Resources:
        return self.state.resources

    @property
    def started_at(self) -> float:
        return self.state.started_at

    @property
    def exited(self) -> bool:
        return self._done.is_set()

    async def wait(self) -> Outcome:
        """Until the task has exited (returns at once when it has); cancellable."""
        await self._done.wait()
        return Outcome(self.exit_status, self.error)

    def _finish(self, status: ExitStatus | None, error: str) -> None:
        if self._done.is_set():
            return
        self.exit_status, self.error = status, error
        self._done.set()


def parse_signal(text: str, default: int = signals.SIGINT) -> int:
    """Nomad's kill_signal / SignalTask name ("SIGTERM", "TERM", "15") -> number."""
    s = text.strip().upper()
    if not s:
        return default
    if s.isdigit() and 0 < int(s) < signals.NSIG:
        return int(s)
    name = s if s.startswith("SIG") else "SIG" + s
    try:
        return int(signals.Signals[name])
    except KeyError:
        raise BadRequest(f"signal {text!r} is not a signal name on this host; use e.g. "
                         "SIGTERM, SIGINT, SIGHUP, SIGUSR1") from None


class XcDriver:
    def __init__(
        self,
        config: PluginConfig,
        events: EventBus | None = None,
        node: Callable[[], Node] | None = None,
    ) -> None:
        self.config = config
        self.events = events or EventBus()
        self._node = node or Node
        self._tasks: dict[str, TaskEntry] = {}
        self._pool = ThreadPoolExecutor(max_workers=128, thread_name_prefix="xc-task")
        self._open_lock = threading.Lock()
        self._runtime: Runtime | None = None
        self._store: zfsimage.ImageStore | None = None
        self._names: dict[str, str] = {}  # jail name -> task id, for start conflicts
        self.networks = TaskNetworks(config, self.state_dir)

    # ---- components (opened on first use: both run commands) ---

    @property
    def state_dir(self) -> Path:
        return Path(self.config.state_dir)

    @property
    def runtime(self) -> Runtime:
        with self._open_lock:
            if self._runtime is None:
                backend = self.config.resolved_backend()
                options: dict[str, Any] = {}
                if backend == "linux":
                    options["cgroup_parent"] = os.environ.get(CGROUP_PARENT_ENV, "xc")
                self._runtime = jails.open_runtime(backend, self.state_dir / "jails", **options)
            return self._runtime

    @property
    def store(self) -> zfsimage.ImageStore:
        with self._open_lock:
            if self._store is None:
                cfg = self.config
                self._store = zfsimage.ImageStore(zfsimage.StoreConfig(
                    dataset=cfg.dataset,
                    mount_root=self.state_dir / "images",
                    platform=zfsimage.Platform.parse(cfg.platform) if cfg.platform else None,
                    docker_config=Path(cfg.auth.config) if cfg.auth.config else None,
                    credential_helper=cfg.auth.helper,
                    registry=zfsimage.RegistryOptions(
                        insecure_registries=cfg.allow_insecure_registries,
                        # a read that sees no byte for this long is a stalled pull
                        timeout_s=cfg.pull_activity_timeout.total_seconds()),
                    gc_delay_s=cfg.gc.image_delay.total_seconds(),
                    # Like Nomad's docker driver: a tag present locally is used as it is unless
                    # the task sets force_pull (no registry round trip per start).
                    revalidate_tags=False,
                ))
            return self._store

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ---- lookup ---

    def task(self, task_id: str) -> TaskEntry:
        entry = self._tasks.get(task_id)
        if entry is None:
            raise TaskNotFound(task_id)
        return entry

    def tasks(self) -> list[TaskEntry]:
        return list(self._tasks.values())

    # ---- events ---

    def _event(self, state: DriverState | NomadTask, message: str,
               annotations: dict[str, str] | None = None) -> None:
        if isinstance(state, NomadTask):
            ids = (state.id, state.alloc_id, state.name)
        else:
            ids = (state.task_id, state.alloc_id, state.task_name)
        self.events.publish(TaskEvent(*ids, message=message, annotations=annotations or {}))

    # ---- StartTask ---

    async def start_task(self, nomad: NomadTask, cfg: TaskConfig) -> DriverState:
        known = self._tasks.get(nomad.id)
        if known is not None:  # StartTask again for the same id (Nomad retries after a crash)
            return known.state
        name = jail_name(nomad.alloc_id, nomad.name)
        other = self._names.get(name)
        if other is not None and other in self._tasks and not self._tasks[other].exited:
            raise StartFailed(f"task {nomad.name!r} of allocation {nomad.alloc_id} is already "
                              f"running as {other}; stop it first", recoverable=False)
        self._names[name] = nomad.id
        t0 = time.monotonic()
        try:
            image = await self._ensure_image(nomad, cfg)
            t_image = time.monotonic()
            started = asyncio.ensure_future(self._run(self._start_blocking, nomad, cfg, name,
                                                      image))
            try:
                state = await asyncio.shield(started)
            except asyncio.CancelledError:
                # The caller went away mid-start: the task must not run without a handle.
                started.add_done_callback(lambda f: self._discard_started(f))
                raise
        except BaseException:
            if self._names.get(name) == nomad.id:
                del self._names[name]
            raise
        entry = TaskEntry(state)
        self._tasks[state.task_id] = entry
        self._watch(entry)
        t_end = time.monotonic()
        log.info("task started", extra={"task_id": state.task_id, "jail": name,
                                        "image": state.image_digest,
                                        "image_ms": round((t_image - t0) * 1000, 1),
                                        "start_ms": round((t_end - t_image) * 1000, 1)})
        return state

    async def _ensure_image(self, nomad: NomadTask, cfg: TaskConfig) -> zfsimage.Image:
        loop = asyncio.get_running_loop()
        reported = {"started": False, "last": 0.0}

        def progress(p: zfsimage.PullProgress) -> None:  # on a pool thread
            now = time.monotonic()
            if not reported["started"]:
                reported["started"] = True
                reported["last"] = now
                loop.call_soon_threadsafe(self._event, nomad, "Downloading image",
                                          {"image": cfg.image})
                return
            if p.phase == "done":
                msg = f"Downloaded image {cfg.image}"
            elif now - reported["last"] >= PROGRESS_EVERY_S and p.phase in ("download",
                                                                             "extract"):
                msg = (f"Image {cfg.image} pull progress: {_mib(p.bytes_done)} of "
                       f"{_mib(p.bytes_total)}, layer {p.layer}/{p.layers_total}")
            else:
                return
            reported["last"] = now
            loop.call_soon_threadsafe(self._event, nomad, msg, {
                "image": cfg.image, "phase": p.phase, "bytes_done": str(p.bytes_done),
                "bytes_total": str(p.bytes_total), "layer": str(p.layer),
                "layers_total": str(p.layers_total)})

        def pull() -> zfsimage.Image:
            auth = (zfsimage.RegistryAuth(cfg.auth.username, cfg.auth.password)
                    if cfg.auth is not None else None)
            platform = cfg.platform or self.config.platform or None
            try:
                return self.store.ensure_image(cfg.image, auth=auth, platform=platform,
                                               progress=progress, revalidate=cfg.force_pull)
            except AuthError:
                if not (cfg.auth_soft_fail and auth is not None):
                    raise
                return self.store.ensure_image(cfg.image, auth=None, platform=platform,
                                               progress=progress, revalidate=cfg.force_pull)

        timeout = cfg.image_pull_timeout.total_seconds()
        try:
            # The pull keeps going after a timeout (threads cannot be cancelled); the store
            # dedups, so the restart that follows joins it.
            return await asyncio.wait_for(asyncio.shield(self._run(pull)), timeout)
        except TimeoutError:
            raise StartFailed(f"pulling image {cfg.image} took longer than image_pull_timeout "
                              f"({timeout:g}s); raise image_pull_timeout in the task config",
                              recoverable=True) from None
        except ImageError as exc:
            raise StartFailed(f"image {cfg.image}: {exc}", recoverable=exc.transient) from exc

    def _start_blocking(self, nomad: NomadTask, cfg: TaskConfig, name: str,
                        image: zfsimage.Image) -> DriverState:
        rt, store = self.runtime, self.store
        undo: list[Callable[[], None]] = []
        group = nomad.network is not None and nomad.network.mode == "group"
        try:
            net_req = request_of(cfg, group, nomad.ports)
            self._clear_previous(name)
            ic = image.config
            defaults = ImageDefaults(tuple(ic.entrypoint), tuple(ic.cmd), tuple(ic.env),
                                     ic.working_dir, ic.user)
            predicted = store.mount_root / "tasks" / name
            placed = resolve_nomad_paths(nomad)  # its task_dir is resolved
            cfg = resolve_mount_sources(cfg, placed.task_dir,
                                        self.config.volumes.allowed_host_paths)
            spec = compose(name=name, rootfs=predicted, image=defaults, task=cfg,
                           nomad=placed, plugin=self.config, node=self._node())
            state = DriverState(
                task_id=nomad.id, alloc_id=nomad.alloc_id, task_name=nomad.name, name=name,
                rootfs_key=name, image=cfg.image, image_digest=image.manifest_digest,
                started_at=time.time(), resources=nomad.resources, alloc_dir=nomad.alloc_dir,
                stdout_path=nomad.stdout_path, stderr_path=nomad.stderr_path,
                network_mode=net_req.mode if net_req else "")
            # The record goes first: whenever a clone or jail of this name may exist, a record
            # says whose it is (what _clear_previous and destroy of a lost handle rely on).
            undo.append(lambda: self._forget_state(name))
            self._save_state(state)
            undo.append(lambda: store.destroy_rootfs(name))
            rootfs = store.clone_rootfs(image, name)
            if rootfs != spec.rootfs:
                spec = dataclasses.replace(spec, rootfs=rootfs)
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
            handle = rt.start(spec)
            return dataclasses.replace(state, started_at=handle.started_at)
        except BaseException as exc:
            for fn in reversed(undo):
                try:
                    fn()
                except Exception:  # keep undoing; the original error is what matters
                    log.exception("undo after a failed start failed", extra={"jail": name})
            if isinstance(exc, ConfigError | StartFailed):
                raise
            if isinstance(exc, SpecError):
                raise ConfigError(spec_field(exc.field), exc.message,
                                  "fix the task config") from exc
            if isinstance(exc, ImageError):
                raise StartFailed(f"image {cfg.image}: {exc}", exc.transient) from exc
            if isinstance(exc, JailError):
                raise StartFailed(f"task {nomad.name!r} could not start: {exc}",
                                  recoverable=False) from exc
            raise

    def _clear_previous(self, name: str) -> None:
        """Remove what an earlier incarnation of this alloc's task left behind. Nomad starts a
        task only when it holds no live handle for it, and start_task has already refused a
        live one this plugin knows, so a jail still running here is an orphan (a start whose
        caller went away, a handle Nomad dropped): it goes too."""
        rt = self.runtime
        recorded = self._state_path(name).exists()
        if rt.exists(name):
            log.warning("removing a previous incarnation of the task",
                        extra={"jail": name, "status": rt.status(name)})
            rt.destroy(name)
        elif not recorded:
            return  # no record, no jail: no clone either (the record is written first)
        self.store.destroy_rootfs(name)
        self._forget_state(name)

    def _discard_started(self, fut: asyncio.Future[DriverState]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return
        state = fut.result()
        log.warning("start was cancelled after the task started; removing it",
                    extra={"task_id": state.task_id, "jail": state.name})
        self._pool.submit(self._destroy_blocking, state)

    # ---- the driver's own alloc networks ---

    async def driver_network(self, state: DriverState) -> DriverNetwork | None:
        """StartTask's network_override: the task's own address and port map, if it has one."""
        if not state.network_mode:
            return None
        alloc = await self._run(self.networks.get, state.alloc_id)
        return driver_network(alloc) if alloc is not None else None

    def sweep_networks(self) -> list[str]:
        """Remove alloc networks no task record holds (left by a crash between the last
        destroy's steps, or by tasks destroyed while no plugin ran). Records outlive the plugin,
        so this is safe before RecoverTask; it runs before any StartTask of this process."""
        records = self.state_dir / "driver"
        live = set()
        for path in records.glob("*.json") if records.is_dir() else ():
            with contextlib.suppress(OSError, StateError):
                state = DriverState.decode(path.read_bytes())
                if state.network_mode:
                    live.add(state.alloc_id)
        leases = self.state_dir / "net" / "leases"
        if not live and not (leases.is_dir() and any(leases.iterdir())):
            return []  # leases are written before any object: without one there is none
        removed = self.networks.sweep(live)
        if removed:
            log.warning("removed leftover task networks", extra={"allocs": removed})
        return removed

    # ---- the driver's own record of each task (for destroy after a lost handle) ---

    def _state_path(self, name: str) -> Path:
        return self.state_dir / "driver" / f"{name}.json"

    def _save_state(self, state: DriverState) -> None:
        path = self._state_path(state.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(state.encode())
        os.replace(tmp, path)

    def _load_state(self, name: str) -> DriverState | None:
        try:
            return DriverState.decode(self._state_path(name).read_bytes())
        except (OSError, StateError):
            return None

    def _forget_state(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._state_path(name).unlink()

    # ---- waiting ---

    def _watch(self, entry: TaskEntry) -> None:
        """One thread blocks in the runtime's wait (pidfd on the supervisor) per running task."""
        loop = asyncio.get_running_loop()
        rt = self.runtime

        def wait() -> None:
            status: ExitStatus | None = None
            error = ""
            try:
                status = rt.wait(entry.name)
            except JailNotFound:
                error = "the task's jail was removed before it exited"
            except JailError as exc:
                error = str(exc)
            except Exception as exc:  # never leave a waiter hanging
                error = f"waiting for the task failed: {exc}"
            with contextlib.suppress(RuntimeError):  # loop closed: the plugin is exiting
                loop.call_soon_threadsafe(self._exited, entry, status, error)

        threading.Thread(target=wait, name=f"wait-{entry.name}", daemon=True).start()

    def _exited(self, entry: TaskEntry, status: ExitStatus | None, error: str) -> None:
        if entry.exited:
            return
        entry._finish(status, error)
        if status is not None:
            detail = f"exit code {status.exit_code}"
            if status.signal:
                detail += f", signal {status.signal}"
            if status.oom_killed:
                detail += ", OOM killed"
            log.info("task exited", extra={"task_id": entry.task_id, "result": detail})

    async def wait_task(self, task_id: str) -> Outcome:
        return await self.task(task_id).wait()

    # ---- StopTask, SignalTask ---

    async def stop_task(self, task_id: str, signal: str, timeout_s: float) -> None:
        entry = self.task(task_id)
        signum = parse_signal(signal)
        if entry.exited:
            return
        rt = self.runtime

        def stop() -> None:
            with contextlib.suppress(JailNotFound):
                rt.stop(entry.name, signum, max(timeout_s, 0.0))

        await self._run(stop)
        # The waiter records the result; give it the moment it needs so WaitTask agrees.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(entry.wait(), 5.0)

    async def signal_task(self, task_id: str, signal: str) -> None:
        entry = self.task(task_id)
        signum = parse_signal(signal, default=0)
        if signum == 0:
            raise BadRequest("SignalTask needs a signal name, e.g. SIGHUP")
        if entry.exited:
            raise TaskConflict(f"task {task_id!r} has exited; there is nothing to signal")
        try:
            await self._run(self.runtime.signal, entry.name, signum)
        except (NotRunning, JailNotFound) as exc:
            raise TaskConflict(f"task {task_id!r} is not running: {exc}") from exc

    # ---- DestroyTask ---

    async def destroy_task(self, task_id: str, force: bool) -> None:
        entry = self._tasks.get(task_id)
        if entry is None:
            # Not in memory (a new plugin that was not asked to recover it): find the jail by
            # the name the id implies and remove it only if our record says it is this task.
            name = _name_from_task_id(task_id)
            if name is None:
                return
            state = await self._run(self._load_state, name)
            if state is None or state.task_id != task_id:
                return
            if not force and await self._run(self.runtime.status, name) == "running":
                raise TaskConflict(f"task {task_id!r} is running; stop it first or destroy "
                                   "with force")
            await self._run(self._destroy_blocking, state)
            return
        if not entry.exited and not force:
            raise TaskConflict(f"task {task_id!r} is running; stop it first or destroy with "
                               "force")
        await self._run(self._destroy_blocking, entry.state)
        entry._finish(entry.exit_status, entry.error or "the task was destroyed")
        self._tasks.pop(task_id, None)
        if self._names.get(entry.name) == task_id:
            del self._names[entry.name]

    def _destroy_blocking(self, state: DriverState) -> None:
        record = self._load_state(state.name)
        if record is not None and record.task_id != state.task_id:
            return  # a newer incarnation of this alloc's task owns the jail now
        self._destroy_jail(state.name)
        self.store.destroy_rootfs(state.rootfs_key)
        if state.network_mode:  # the alloc's network goes with its last task
            self.networks.release(state.alloc_id, state.task_name)
        self._forget_state(state.name)

    def _destroy_jail(self, name: str) -> None:
        self.runtime.destroy(name)

    # ---- InspectTask ---

    def inspect_task(self, task_id: str) -> TaskEntry:
        return self.task(task_id)

    # ---- RecoverTask ---

    async def recover_task(self, task_id: str, driver_state: bytes) -> TaskEntry:
        if task_id and task_id in self._tasks:
            return self._tasks[task_id]
        try:
            state = DriverState.decode(driver_state)
        except StateError as exc:
            raise TaskGone(f"task {task_id!r} cannot be recovered: {exc}") from exc
        if task_id and state.task_id != task_id:
            raise TaskGone(f"the handle's driver_state belongs to task {state.task_id!r}, "
                           f"not {task_id!r}")
        if state.task_id in self._tasks:
            return self._tasks[state.task_id]
        rt = await self._run(lambda: self.runtime)  # the first use opens it: runs commands

        def look() -> tuple[str, ExitStatus | None]:
            status = rt.status(state.name)
            if status == "exited":
                return status, rt.exit_status(state.name)
            return status, None

        status, exit_status = await self._run(look)
        record = await self._run(self._load_state, state.name)
        if record is not None and record.task_id != state.task_id:
            raise TaskGone(f"task {state.task_id!r} is gone: jail {state.name} now runs "
                           f"{record.task_id}")
        if status == "unknown":
            raise TaskGone(f"task {state.task_id!r} is gone (jail {state.name} has no running "
                           "process and no recorded exit); Nomad will start it again")
        entry = TaskEntry(state)
        self._tasks[state.task_id] = entry
        self._names.setdefault(state.name, state.task_id)
        if record is None:
            await self._run(self._save_state, state)
        if status == "exited":
            entry._finish(exit_status, "")
        else:
            self._watch(entry)
        log.info("task recovered", extra={"task_id": state.task_id, "jail": state.name,
                                          "status": status})
        return entry


def _name_from_task_id(task_id: str) -> str | None:
    parts = task_id.split("/")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        return None
    try:
        return jail_name(parts[0], parts[1])
    except ValueError:
        return None


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


def describe(entry: TaskEntry) -> dict[str, str]:
    """InspectTask's driver attributes."""
    return {"jail": entry.name, "image": entry.state.image,
            "image_digest": entry.state.image_digest}
