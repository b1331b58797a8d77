"""``SpareKeeper``: the plugin's policy for spare clones (option ``spare_clones``).

After each start the keeper has the image store make up to ``count`` idle clones of that image
and disk quota in the background, once no start is under way (a burst of starts keeps the pool
to itself), so the image's next start takes one and clones nothing
(``zfsimage.spares`` owns the clones and who may take them). An idle spare not taken within
``idle`` is destroyed; so is a spare a crash left taken but unrecorded, when the plugin starts
(``housekeep``). Image removal drops idle spares itself.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Collection, Iterator

import zfsimage
from driver.pluginconfig import SpareClones
from driver.ports import Images

__all__ = ["SpareKeeper"]

log = logging.getLogger("driver")

MAX_EXPIRE_WAIT_S = 60.0  # how late an expired spare may go (one listdir per wait)
QUIET_POLL_S = 1.0        # how often a refill waiting for quiet looks at close


class SpareKeeper:
    def __init__(self, config: SpareClones, images: Callable[[], Images],
                 closed: threading.Event) -> None:
        self.config = config
        self._images = images
        self._closed = closed
        self._mu = threading.Lock()
        self._quiet = threading.Condition(self._mu)  # notified when no start is under way
        self._starting = 0
        self._refilling: set[tuple[str, int]] = set()  # (image, quota) with a refill under way
        self._housekeeping = False

    @property
    def enabled(self) -> bool:
        return self.config.count > 0

    @contextlib.contextmanager
    def starting(self) -> Iterator[None]:
        """Around a start: refills wait until no start is under way, so that a burst of starts
        does not share the pool with the clones made for after it."""
        with self._mu:
            self._starting += 1
        try:
            yield
        finally:
            with self._mu:
                self._starting -= 1
                if not self._starting:
                    self._quiet.notify_all()

    def after_start(self, image: zfsimage.Image, quota: int | None) -> None:
        """Have spares of ``image`` made in the background (one refill per image and quota at a
        time; the store counts what is idle)."""
        if not self.enabled or self._closed.is_set():
            return
        key = (image.manifest_digest, quota or 0)
        with self._mu:
            if key in self._refilling:
                return
            self._refilling.add(key)
        # not a daemon: a plugin that exits lets the clone under way finish and be marked
        threading.Thread(target=self._refill, args=(key, image, quota),
                         name="spare-refill").start()

    def _refill(self, key: tuple[str, int], image: zfsimage.Image, quota: int | None) -> None:
        try:
            with self._mu:
                while self._starting and not self._closed.is_set():
                    self._quiet.wait(QUIET_POLL_S)
            self._images().refill_spares(image, quota, self.config.count)
        except Exception as exc:  # the next start clones as it would without spares
            log.warning("making a spare clone failed",
                        extra={"image": image.manifest_digest, "error": str(exc)})
        finally:
            with self._mu:
                self._refilling.discard(key)

    def housekeep(self, owned: Callable[[], Collection[str]]) -> None:
        """In the background: remove spares a crash left taken but unrecorded (``owned``: the
        root keys the task records name), then expire idle spares until close."""
        with self._mu:
            if self._housekeeping:
                return
            self._housekeeping = True
        threading.Thread(target=self._housekeep, args=(owned,), name="spare-housekeeping",
                         daemon=True).start()

    def _housekeep(self, owned: Callable[[], Collection[str]]) -> None:
        idle_s = self.config.idle.total_seconds()  # 0: spares never expire
        wait_s = min(MAX_EXPIRE_WAIT_S, max(idle_s / 2, 1.0))
        try:
            images = self._images()
            swept = images.sweep_spares(owned)
            if swept:
                log.warning("removed spare clones a crash left", extra={"keys": swept})
            if self.enabled and idle_s == 0:
                return
            while True:
                try:
                    # count 0: the spares an earlier config kept go at once
                    expired = images.expire_spares(idle_s if self.enabled else -1.0)
                except Exception as exc:  # the next round tries again
                    log.warning("expiring spare clones failed", extra={"error": str(exc)})
                    expired = []
                if expired:
                    log.info("removed idle spare clones", extra={"keys": expired})
                if not self.enabled or self._closed.wait(wait_s):
                    return
        except Exception as exc:  # the store could not be opened: nothing to keep then
            log.warning("spare clone housekeeping stopped", extra={"error": str(exc)})
