"""``TaskStore``: the tasks this plugin knows, and the driver's record of each on the host.

In memory (like the ``taskStore`` of Nomad's drivers, e.g. drivers/rawexec/state.go): one
``TaskEntry`` per task id until DestroyTask, and which task id holds each jail name. On disk:
``<state_dir>/driver/<jail>.json``, a copy of each task's ``driver_state`` written before any
clone or jail of that name exists, so that a plugin which never saw the handle (Nomad lost it, the
plugin restarted without RecoverTask) can still tell whose a jail is and clean it up.

Ownership of a jail name is decided here and only here: ``claim``/``release`` in memory,
``owns``/``record_of`` on disk. Record files are the ``DriverState`` encoding, so records written
by earlier plugin versions load as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from driver.errors import StartFailed, TaskNotFound
from driver.state import DriverState, Resources, StateError
from jails import ExitStatus, jail_name


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

    def finish(self, status: ExitStatus | None, error: str) -> bool:
        """Record how the task ended; the first call wins (False for the later ones)."""
        if self._done.is_set():
            return False
        self.exit_status, self.error = status, error
        self._done.set()
        return True


def name_from_task_id(task_id: str) -> str | None:
    """The jail name a Nomad task id ("<alloc_id>/<task>/<random>") implies, or None."""
    parts = task_id.split("/")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        return None
    try:
        return jail_name(parts[0], parts[1])
    except ValueError:
        return None


class TaskStore:
    """Known tasks by id, jail names by holder, and the on-disk records under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._entries: dict[str, TaskEntry] = {}
        self._holders: dict[str, str] = {}  # jail name -> task id, for start conflicts

    # ---- in memory ----

    def get(self, task_id: str) -> TaskEntry | None:
        return self._entries.get(task_id)

    def entry(self, task_id: str) -> TaskEntry:
        """The known task ``task_id``; TaskNotFound otherwise."""
        entry = self._entries.get(task_id)
        if entry is None:
            raise TaskNotFound(task_id)
        return entry

    def entries(self) -> list[TaskEntry]:
        return list(self._entries.values())

    def add(self, entry: TaskEntry) -> TaskEntry:
        """Know ``entry`` (the one already known under its id wins) and let it hold its name
        unless a task known earlier holds it."""
        known = self._entries.setdefault(entry.task_id, entry)
        self._holders.setdefault(known.name, known.task_id)
        return known

    def remove(self, entry: TaskEntry) -> None:
        self._entries.pop(entry.task_id, None)
        self.release(entry.name, entry.task_id)

    def claim(self, name: str, task_id: str) -> None:
        """Let ``task_id`` start as jail ``name``; StartFailed while another known task is
        running under that name (two incarnations of one alloc's task must not overlap)."""
        holder = self._holders.get(name)
        if holder is not None and holder != task_id:
            other = self._entries.get(holder)
            if other is not None and not other.exited:
                raise StartFailed(f"task {other.task_name!r} of allocation {other.alloc_id} is "
                                  f"already running as {holder}; stop it first",
                                  recoverable=False)
        self._holders[name] = task_id

    def release(self, name: str, task_id: str) -> None:
        """Give up ``name`` if ``task_id`` holds it (a later claim may already have taken it)."""
        if self._holders.get(name) == task_id:
            del self._holders[name]

    # ---- on disk ----

    def path(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def save(self, state: DriverState) -> None:
        path = self.path(state.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(state.encode())
        os.replace(tmp, path)

    def load(self, name: str) -> DriverState | None:
        """The record of jail ``name``; None when there is none or it cannot be read."""
        try:
            return DriverState.decode(self.path(name).read_bytes())
        except (OSError, StateError):
            return None

    def recorded(self, name: str) -> bool:
        return self.path(name).exists()

    def forget(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(name).unlink()
        with contextlib.suppress(FileNotFoundError):  # after the record: see being_destroyed
            self._destroying(name).unlink()

    def _destroying(self, name: str) -> Path:
        return self.root / f"{name}.destroying"

    def mark_destroying(self, state: DriverState) -> None:
        """Note that Nomad destroyed this incarnation: whatever is left of it is garbage, and a
        destroy that fails (Nomad ignores DestroyTask's errors and never asks again) is finished
        later from this mark, by this plugin or the next one."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._destroying(state.name).write_text(state.task_id)

    def being_destroyed(self) -> list[DriverState]:
        """The records marked by ``mark_destroying``. A mark left without its record (a destroy
        that ended between the two unlinks of ``forget``), or naming an earlier incarnation, is
        removed here."""
        out = []
        for mark in sorted(self.root.glob("*.destroying")) if self.root.is_dir() else []:
            record = self.load(mark.stem)
            try:
                marked = mark.read_text().strip()
            except OSError:
                continue
            if record is not None and record.task_id == marked:
                out.append(record)
            else:
                mark.unlink(missing_ok=True)
        return out

    def records(self) -> list[DriverState]:
        """Every readable record on disk (tasks outlive the plugin: these are all of them)."""
        names = sorted(p.stem for p in self.root.glob("*.json")) if self.root.is_dir() else []
        return [r for r in (self.load(n) for n in names) if r is not None]

    def owns(self, state: DriverState) -> bool:
        """False when the record of ``state.name`` says a newer incarnation holds the jail."""
        record = self.load(state.name)
        return record is None or record.task_id == state.task_id

    def record_of(self, task_id: str) -> DriverState | None:
        """The record of ``task_id`` found by the jail name its id implies (for a task this
        process never saw); None unless that record is this very task's."""
        name = name_from_task_id(task_id)
        if name is None:
            return None
        record = self.load(name)
        return record if record is not None and record.task_id == task_id else None
