"""Spare task roots: clones of a recently started image, made before its next start needs one.

Making a clone is one ZFS transaction, the largest part of starting a task from a cached image.
A host program that starts tasks (the plugin) asks ``refill`` after a start to keep up to
``keep`` idle clones of that image and disk quota, off the start's critical path; the next start
``take``s one instead of cloning. A spare is a task clone like any other, ``D/tasks/<key>`` with
the properties ``TaskClones.clone`` gives (image, quota, the operator's extras); its key has a
``.``, which jail names never have, so it is never a task's own key.

Idle spares are marked by a file ``<mount_root>/spares/<key>`` written after the clone is made
(the commit marker). Taking a spare is unlinking its marker, so of two takers (two starts, or a
start and ``image rm``) exactly one wins, across processes. A spare dataset without a marker is
its taker's: the task record that names it as the task's root, or debris of a crash between
take and record, which ``sweep`` removes given the keys the caller's records hold.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from zfsimage.clones import TaskClones
from zfsimage.digest import hex_of
from zfsimage.errors import ZfsError
from zfsimage.images import Image

log = logging.getLogger("zfsimage.spares")

SPARE_MARK = "spare."  # jail names never have a "." (jail(8): the hierarchy separator)


def is_spare_key(task_key: str) -> bool:
    """True for the key of a spare clone (idle or taken)."""
    return task_key.startswith(SPARE_MARK)


@dataclass(frozen=True)
class Spare:
    """An idle spare: its task key, the image's chain (hex) and when it was made."""

    key: str
    chain: str
    made_at: float


class Spares:
    """The idle spare clones of one store; thread-safe, shared by processes through markers."""

    def __init__(self, clones: TaskClones, marker_dir: Path) -> None:
        self.clones = clones
        self.dir = marker_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self._mu = threading.Lock()
        self._making: set[str] = set()  # keys being made by this process
        self._held: set[str] = set()    # keys taken here whose taker has not recorded them yet

    @staticmethod
    def _prefix(image: Image, refquota: int | None) -> str:
        return f"{SPARE_MARK}{hex_of(image.manifest_digest)[:16]}.{refquota or 0}."

    @contextlib.contextmanager
    def taking(self, image: Image, refquota: int | None) -> Iterator[tuple[str, Path] | None]:
        """An idle spare of ``image`` with this quota, now the caller's: (key, mounted root);
        None when there is none. ``sweep`` leaves it alone while the block runs, where the
        caller records it as its own. A spare whose root is not mounted is destroyed."""
        prefix = self._prefix(image, refquota)
        for name in sorted(n for n in self._names() if n.startswith(prefix)):
            with self._mu:
                try:
                    os.unlink(self.dir / name)  # the one atomic step: whoever unlinks owns it
                except FileNotFoundError:
                    continue  # another taker won
                self._held.add(name)
            try:
                root = self.clones.mount_dir / name
                if os.path.ismount(root):
                    yield name, root
                    return
                log.warning("spare clone was not mounted; destroying it", extra={"key": name})
                self._destroy_or_leave(name)
            finally:
                with self._mu:
                    self._held.discard(name)
        yield None

    def refill(self, image: Image, refquota: int | None, keep: int) -> list[str]:
        """Make spares of ``image`` until ``keep`` are idle or being made; the keys made. A spare
        that fails is undone and the error raised (the next refill tries again)."""
        prefix = self._prefix(image, refquota)
        made: list[str] = []
        while True:
            with self._mu:
                have = sum(1 for n in self._names() if n.startswith(prefix))
                have += sum(1 for k in self._making if k.startswith(prefix))
                if have >= keep:
                    return made
                key = prefix + secrets.token_hex(4)
                self._making.add(key)
            try:
                self._make(image, refquota, key)
            finally:
                with self._mu:
                    self._making.discard(key)
            made.append(key)

    def _make(self, image: Image, refquota: int | None, key: str) -> None:
        try:
            self.clones.clone(image, key, refquota)
            marker = {"chain": hex_of(image.chain_id) if image.chain_id else "",
                      "image": image.manifest_digest, "made_at": time.time()}
            tmp = self.dir / f".{key}.tmp"
            tmp.write_text(json.dumps(marker))
            os.replace(tmp, self.dir / key)  # last: from here on it can be taken
        except BaseException:
            self._destroy(key)
            raise

    def idle(self) -> list[Spare]:
        """Every idle spare (marked), oldest first."""
        out: list[Spare] = []
        for name in self._names():
            try:
                raw = json.loads((self.dir / name).read_text())
                out.append(Spare(name, str(raw.get("chain", "")), float(raw["made_at"])))
            except FileNotFoundError:
                continue  # taken meanwhile
            except (OSError, ValueError, KeyError, TypeError):
                out.append(Spare(name, "", 0.0))  # unreadable: the oldest, dropped first
        return sorted(out, key=lambda s: s.made_at)

    def drop(self, spares: list[Spare]) -> list[str]:
        """Take and destroy these idle spares (those still idle); the keys destroyed."""
        dropped: list[str] = []
        for spare in spares:
            try:
                os.unlink(self.dir / spare.key)
            except FileNotFoundError:
                continue  # a start took it
            if self._destroy_or_leave(spare.key):
                dropped.append(spare.key)
        return dropped

    def expire(self, max_idle_s: float, now: float | None = None) -> list[str]:
        """Drop the idle spares made more than ``max_idle_s`` ago."""
        now = time.time() if now is None else now
        return self.drop([s for s in self.idle() if now - s.made_at > max_idle_s])

    def sweep(self, owned: Callable[[], Collection[str]]) -> list[str]:
        """Destroy spare datasets that are neither idle nor ``owned()`` (the keys the caller's
        task records name) nor being made or taken here: what a crash between take and record,
        or between clone and marker, left. Only one host program may start tasks from a store
        for this to be right (the plugin)."""
        gone: list[str] = []
        with self._mu:  # no make or take of this process starts or ends meanwhile
            busy = set(owned()) | self._making | self._held | set(self._names())
            for key in self.clones.origins():
                if is_spare_key(key) and key not in busy:
                    self._destroy(key)
                    gone.append(key)
        return gone

    def _names(self) -> list[str]:
        try:
            return [n for n in os.listdir(self.dir) if is_spare_key(n)]
        except FileNotFoundError:
            return []

    def _destroy_or_leave(self, key: str) -> bool:
        """Destroy a spare taken to be removed; one that cannot go now (busy) is left unmarked,
        for the next ``sweep``, rather than failing what removes it."""
        try:
            self._destroy(key)
        except ZfsError as exc:
            log.warning("could not destroy a spare clone; the next sweep removes it",
                        extra={"key": key, "error": str(exc)})
            return False
        return True

    def _destroy(self, key: str) -> None:
        self.clones.destroy(key)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.dir / f".{key}.tmp")
