"""``XcDriver``: the task lifecycle (start, wait, stop, destroy, inspect, signal, recover).

No protobuf here: ``driver.servicer`` converts at the edge. Nothing is built here either:
``driver.wiring`` gives the driver its runtime, image store and ``TaskStore``. Blocking library
calls (zfsimage, jails) run on the driver's own thread pool, sized for many concurrent stops
that each wait a kill_timeout. What waits on a task lives outside this process (the jails
supervisor writes the exit status), so a new plugin recovers every task from its
``driver_state`` alone; in memory there is only a cache (``TaskEntry``) and one waiter thread
per running task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal as signals
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import zfsimage
from driver.config import PluginConfig, TaskConfig
from driver.errors import BadRequest, TaskConflict, TaskGone
from driver.events import EventBus, TaskEvent
from driver.ports import Images
from driver.pull import pull_image
from driver.spareclones import SpareKeeper
from driver.starting import Starter, net_request
from driver.state import DriverState, StateError
from driver.tasknet import DriverNetwork, NetRequest, TaskNetworks, driver_network
from driver.taskspec import Node, NomadTask, abi_of
from driver.taskstore import Outcome, TaskEntry, TaskStore
from jails import ExitStatus, JailNotFound, Runtime, jail_name
from jails.errors import JailError, NotRunning

__all__ = ["Outcome", "TaskEntry", "XcDriver", "describe", "parse_signal"]

log = logging.getLogger("driver")

T = TypeVar("T")

# Waits before each retry of a failed destroy (about 40 minutes in all); a plugin that starts
# later tries once more.
DESTROY_RETRY_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 300.0, 300.0, 600.0, 600.0)


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


class NameLocks:
    """One lock per jail name, held by a start and a destroy of that name (a destroy retried in
    the background must not run beside the start of a newer incarnation). A name's lock exists
    only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._mu = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextlib.contextmanager
    def hold(self, name: str) -> Iterator[None]:
        with self._mu:
            lock, users = self._locks.get(name, (threading.Lock(), 0))
            self._locks[name] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._mu:
                lock, users = self._locks[name]
                if users == 1:
                    del self._locks[name]
                else:
                    self._locks[name] = (lock, users - 1)


class XcDriver:
    """The task lifecycle behind Nomad's Driver RPCs, with no protobuf and no wiring.

    Contract (what the servicer and Nomad rely on):

    - Every method is idempotent in Nomad's sense: StartTask again for a known id returns the
      first start's state; DestroyTask of an unknown or already destroyed task succeeds.
    - A start that fails leaves nothing behind (no record, clone or jail): each effect registers
      its undo before it is made, and the undos run in reverse on any failure.
    - One jail name per alloc's task (``jails.jail_name``): a start is refused while another
      known incarnation of that task runs, and an orphan of an earlier one is removed first.
      ``TaskStore`` decides who owns a name; a record of a newer incarnation is never removed.
    - Tasks outlive the plugin: ``recover_task`` rebuilds a task from its ``driver_state`` and
      the runtime's state dir, and ``destroy_task`` of an id this process never saw finds the
      task by its record.
    - Errors are ``driver.errors`` (or ``ConfigError`` for bad task config); the servicer maps
      each to one gRPC code.

    ``runtime`` and ``images`` are called on first use (opening them runs commands); ``node``
    gives the client's compute figures when a task starts.
    """

    def __init__(
        self,
        config: PluginConfig,
        *,
        runtime: Callable[[], Runtime],
        images: Callable[[], Images],
        tasks: TaskStore,
        networks: TaskNetworks | None = None,
        events: EventBus | None = None,
        node: Callable[[], Node] | None = None,
    ) -> None:
        self.config = config
        self.events = events or EventBus()
        self.tasks = tasks
        # None: the config's own (opened only when a task asks for a network of its own)
        self.networks = networks or TaskNetworks(config, Path(config.state_dir))
        self._runtime = runtime
        self._images = images
        self._node = node or Node
        self._pool = ThreadPoolExecutor(max_workers=128, thread_name_prefix="xc-task")
        self._closed = threading.Event()
        self._names = NameLocks()
        self._retry_mu = threading.Lock()
        self._retrying: set[str] = set()  # jail names whose destroy is being retried
        self.spares = SpareKeeper(config.spare_clones, images, self._closed)

    @property
    def runtime(self) -> Runtime:
        """The jails runtime (opened on first use)."""
        return self._runtime()

    @property
    def images(self) -> Images:
        """The image store (opened on first use)."""
        return self._images()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        """Stop taking blocking work; running tasks are not touched (they outlive the plugin)."""
        self._closed.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def task(self, task_id: str) -> TaskEntry:
        """The known task ``task_id``; TaskNotFound otherwise."""
        return self.tasks.entry(task_id)

    def _event(self, state: DriverState | NomadTask, message: str,
               annotations: dict[str, str] | None = None) -> None:
        if isinstance(state, NomadTask):
            ids = (state.id, state.alloc_id, state.name)
        else:
            ids = (state.task_id, state.alloc_id, state.task_name)
        self.events.publish(TaskEvent(*ids, message=message, annotations=annotations or {}))

    # ---- StartTask ---

    async def start_task(self, nomad: NomadTask, cfg: TaskConfig) -> DriverState:
        """Pull the image, clone it, start the jail; the ``driver_state`` for the handle.
        Raises ConfigError (bad task config) or StartFailed; leaves nothing behind then."""
        known = self.tasks.get(nomad.id)
        if known is not None:  # StartTask again for the same id (Nomad retries after a crash)
            return known.state
        net_req = net_request(cfg, nomad)  # a bad network request fails before any pull
        name = jail_name(nomad.alloc_id, nomad.name)
        self.tasks.claim(name, nomad.id)
        t0 = time.monotonic()
        try:
            image = await pull_image(
                self._images, cfg, self.config.platform,
                lambda msg, ann: self._event(nomad, msg, ann), self._run)
            t_image = time.monotonic()
            abi = abi_of(image.os, self.config.resolved_backend(), self.config)
            if abi == "linux":
                self._event(nomad, f"Image {image.built_for} runs under FreeBSD's Linux ABI "
                            "(linux64)", {"image": cfg.image, "abi": "linux64"})
            steps: dict[str, float] = {}  # the blocking part's own split, for the log line
            started = asyncio.ensure_future(self._run(self._start_blocking, nomad, cfg, name,
                                                      image, abi, net_req, steps))
            try:
                state = await asyncio.shield(started)
            except asyncio.CancelledError:
                # The caller went away mid-start: the task must not run without a handle.
                started.add_done_callback(self._discard_started)
                raise
        except BaseException:
            self.tasks.release(name, nomad.id)
            raise
        entry = self.tasks.add(TaskEntry(state))
        self._watch(entry)
        log.info("task started", extra={"task_id": state.task_id, "jail": name,
                                        "image": state.image_digest,
                                        "image_ms": round((t_image - t0) * 1000, 1),
                                        "start_ms": round((time.monotonic() - t_image) * 1000, 1),
                                        **steps})
        return state

    def _start_blocking(self, nomad: NomadTask, cfg: TaskConfig, name: str,
                        image: zfsimage.Image, abi: str,
                        net_req: NetRequest | None,
                        steps: dict[str, float] | None = None) -> DriverState:
        starter = Starter(self.config, self.runtime, self.images, self.tasks, self.networks,
                          self._node)
        # never beside a retried destroy of an earlier incarnation; no spare made meanwhile
        with self._names.hold(name), self.spares.starting():
            state = starter.start(nomad, cfg, name, image, abi, net_req, steps)
        self.spares.after_start(image, state.disk_bytes or None)  # for the image's next start
        return state

    def _discard_started(self, fut: asyncio.Future[DriverState]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return
        state = fut.result()
        log.warning("start was cancelled after the task started; removing it",
                    extra={"task_id": state.task_id, "jail": state.name})
        self._pool.submit(self._destroy_or_retry, state)

    def _destroy_or_retry(self, state: DriverState) -> None:
        try:
            self._destroy_blocking(state)
        except Exception as exc:
            self._destroy_failed(state, exc)

    def _destroy_failed(self, state: DriverState, exc: Exception) -> None:
        log.warning("destroying the task failed; retrying in the background",
                    extra={"task_id": state.task_id, "jail": state.name, "error": str(exc)})
        self._retry_destroy(state)

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
        if not entry.finish(status, error) or status is None:
            return
        detail = f"exit code {status.exit_code}"
        if status.signal:
            detail += f", signal {status.signal}"
        if status.oom_killed:
            detail += ", OOM killed"
        log.info("task exited", extra={"task_id": entry.task_id, "result": detail})

    async def wait_task(self, task_id: str) -> Outcome:
        """Until the task has exited; TaskNotFound for an unknown id."""
        return await self.task(task_id).wait()

    # ---- StopTask, SignalTask ---

    async def stop_task(self, task_id: str, signal: str, timeout_s: float) -> None:
        """Send ``signal``, wait up to ``timeout_s``, then kill everything in the jail; an
        exited task is left as it is."""
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
        """Deliver ``signal`` to the task; TaskConflict when it is not running."""
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
        """Remove the jail, its clone and the record; a running task only with ``force``
        (TaskConflict otherwise). Unknown or already destroyed: success."""
        entry = self.tasks.get(task_id)
        if entry is None:
            # Not in memory (a new plugin that was not asked to recover it): find the jail by
            # the name the id implies and remove it only if our record says it is this task.
            state = await self._run(self.tasks.record_of, task_id)
            if state is None:
                return
            if not force and await self._run(self.runtime.status, state.name) == "running":
                raise TaskConflict(f"task {task_id!r} is running; stop it first or destroy "
                                   "with force")
            await self._destroy(state)
            return
        if not entry.exited and not force:
            raise TaskConflict(f"task {task_id!r} is running; stop it first or destroy with "
                               "force")
        try:
            await self._destroy(entry.state)
        finally:
            # Nomad forgets the task either way; what is left is the retries' (see _destroy)
            entry.finish(entry.exit_status, entry.error or "the task was destroyed")
            self.tasks.remove(entry)

    async def _destroy(self, state: DriverState) -> None:
        """Remove what is left of the task. Nomad ignores DestroyTask's errors and never asks
        again, so a failure (a clone kept busy by a process holding a file in it) is also
        retried in the background until it succeeds; the error still goes to Nomad."""
        try:
            await self._run(self._destroy_blocking, state)
        except Exception as exc:
            self._destroy_failed(state, exc)
            raise

    def housekeep_spares(self) -> None:
        """Remove the spare clones a crash left taken but unrecorded, then expire idle ones
        (in the background, until close)."""
        self.spares.housekeep(lambda: {s.rootfs_key for s in self.tasks.records()})

    def resume_destroys(self) -> None:
        """Finish the destroys an earlier plugin left unfinished (their records are marked);
        in the background, so the plugin's start does not wait for them."""
        for state in self.tasks.being_destroyed():
            self._retry_destroy(state, first_delay_s=0.0)

    def _retry_destroy(self, state: DriverState, first_delay_s: float | None = None) -> None:
        with self._retry_mu:
            if state.name in self._retrying:
                return
            self._retrying.add(state.name)
        delays = DESTROY_RETRY_S if first_delay_s is None else (first_delay_s, *DESTROY_RETRY_S)
        threading.Thread(target=self._destroy_retrying, args=(state, delays),
                         name=f"destroy-{state.name}", daemon=True).start()

    def _destroy_retrying(self, state: DriverState, delays: tuple[float, ...]) -> None:
        try:
            for attempt, delay in enumerate(delays, 1):
                if self._closed.wait(delay):
                    return  # the next plugin resumes it from the record's mark
                try:
                    self._destroy_blocking(state)
                except Exception as exc:
                    log.warning("destroying the task failed again",
                                extra={"jail": state.name, "attempt": attempt,
                                       "error": str(exc)})
                    continue
                log.info("destroyed the task on a retry",
                         extra={"task_id": state.task_id, "jail": state.name,
                                "attempt": attempt})
                return
            log.error("gave up destroying the task; the plugin tries again when it next starts",
                      extra={"task_id": state.task_id, "jail": state.name})
        finally:
            with self._retry_mu:
                self._retrying.discard(state.name)

    def _destroy_blocking(self, state: DriverState) -> None:
        with self._names.hold(state.name):
            if not self.tasks.owns(state):
                return  # a newer incarnation of this alloc's task owns the jail now
            self.tasks.mark_destroying(state)  # first: a failure below is finished later
            self.runtime.destroy(state.name)
            self.images.destroy_rootfs(state.rootfs_key)
            if state.network_mode:  # the alloc's network goes with its last task
                self.networks.release(state.alloc_id, state.task_name)
            self.tasks.forget(state.name)

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
        live = {s.alloc_id for s in self.tasks.records() if s.network_mode}
        if not live and not self.networks.has_leases():
            return []  # leases are written before any object: without one there is none
        removed = self.networks.sweep(live)
        if removed:
            log.warning("removed leftover task networks", extra={"allocs": removed})
        return removed

    # ---- InspectTask ---

    def inspect_task(self, task_id: str) -> TaskEntry:
        """The known task; TaskNotFound otherwise."""
        return self.task(task_id)

    # ---- RecoverTask ---

    async def recover_task(self, task_id: str, driver_state: bytes) -> TaskEntry:
        """Know again a task started by an earlier plugin, from its handle's ``driver_state``;
        TaskGone when it cannot be (Nomad then starts it again)."""
        known = self.tasks.get(task_id) if task_id else None
        if known is not None:
            return known
        try:
            state = DriverState.decode(driver_state)
        except StateError as exc:
            raise TaskGone(f"task {task_id!r} cannot be recovered: {exc}") from exc
        if task_id and state.task_id != task_id:
            raise TaskGone(f"the handle's driver_state belongs to task {state.task_id!r}, "
                           f"not {task_id!r}")
        known = self.tasks.get(state.task_id)
        if known is not None:
            return known
        rt = await self._run(self._runtime)  # the first use opens it: runs commands

        def look() -> tuple[str, ExitStatus | None, DriverState | None]:
            status = rt.status(state.name)
            exit_status = rt.exit_status(state.name) if status == "exited" else None
            return status, exit_status, self.tasks.load(state.name)

        status, exit_status, record = await self._run(look)
        if record is not None and record.task_id != state.task_id:
            raise TaskGone(f"task {state.task_id!r} is gone: jail {state.name} now runs "
                           f"{record.task_id}")
        if status == "unknown":
            raise TaskGone(f"task {state.task_id!r} is gone (jail {state.name} has no running "
                           "process and no recorded exit); Nomad will start it again")
        entry = self.tasks.add(TaskEntry(state))
        if record is None:
            await self._run(self.tasks.save, state)
        if status == "exited":
            entry.finish(exit_status, "")
        else:
            self._watch(entry)
        log.info("task recovered", extra={"task_id": state.task_id, "jail": state.name,
                                          "status": status})
        return entry


def describe(entry: TaskEntry) -> dict[str, str]:
    """InspectTask's driver attributes."""
    attrs = {"jail": entry.name, "image": entry.state.image,
             "image_digest": entry.state.image_digest}
    if entry.state.disk_bytes:
        attrs["disk_quota_bytes"] = str(entry.state.disk_bytes)
    return attrs
