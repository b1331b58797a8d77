"""Garbage collection: untagged images past their delay, then layer chains nothing needs."""

from __future__ import annotations

import time
from dataclasses import replace

from zfsimage.catalog import Catalog
from zfsimage.clones import TaskClones
from zfsimage.digest import hex_of
from zfsimage.errors import ImageInUse
from zfsimage.images import GcReport
from zfsimage.layers import LayerStore
from zfsimage.locks import StoreLocks
from zfsimage.reference import parse_reference
from zfsimage.spares import Spares


class Collector:
    def __init__(self, catalog: Catalog, layers: LayerStore, clones: TaskClones,
                 spares: Spares, locks: StoreLocks, delay_s: float) -> None:
        self.catalog = catalog
        self.layers = layers
        self.clones = clones
        self.spares = spares
        self.locks = locks
        self.delay_s = delay_s

    def remove_image(self, reference: str, force_untag: bool = False) -> bool:
        """Untag ``reference``; drop the image (and layers nothing else needs) when it has no
        references left and no task uses it. Returns True when the image record was removed."""
        records = self.catalog.records
        with records.locked():
            rec = self.catalog.lookup(reference)
            by_digest = reference.startswith("sha")
            ref = reference if by_digest else str(parse_reference(reference))
            refs = () if by_digest else tuple(r for r in rec.references if r != ref)
            top = hex_of(rec.chain_ids[-1]) if rec.chain_ids else None
            # an idle spare clone is no use of the image: gc below drops it with the image
            idle = {s.key for s in self.spares.idle()}
            used = top is not None and top in self.clones.chains_in_use(skip=idle)
            if not refs and used and not force_untag:
                raise ImageInUse(f"image {reference} is used by a running task rootfs; "
                                 "stop the task first")
            if refs or used:
                records.put(replace(rec, references=refs, source_digests={
                    k: v for k, v in rec.source_digests.items() if k in refs}))
                return False
            records.delete(rec.manifest_digest)
        self.gc(delay_s=float("inf"))
        return True

    def gc(self, delay_s: float | None = None, now: float | None = None) -> GcReport:
        """Remove untagged images unused for ``delay_s`` (default the configured delay), then
        every layer chain no image record or task needs, and the idle spare clones of what goes.
        Never touches what a task uses."""
        delay = self.delay_s if delay_s is None else delay_s
        now = time.time() if now is None else now
        removed_images: list[str] = []
        with self.locks.gc(exclusive=True), self.catalog.records.locked():
            idle = self.spares.idle()
            in_use = self.clones.chains_in_use(skip={s.key for s in idle})
            needed: set[str] = set()
            for rec in self.catalog.records.all():
                top = hex_of(rec.chain_ids[-1]) if rec.chain_ids else None
                keep = bool(rec.references) or (top is not None and top in in_use) or \
                    (delay != float("inf") and now - rec.last_used < delay)
                if keep:
                    needed.update(hex_of(c) for c in rec.chain_ids)
                else:
                    self.catalog.records.delete(rec.manifest_digest)
                    removed_images.append(rec.manifest_digest)
            # a spare taken meanwhile is a task's now: drop skips it and its clone keeps its chain
            self.spares.drop([s for s in idle if s.chain not in needed | in_use])
            removed_layers = self._sweep_layers(needed | in_use)
        return GcReport(tuple(removed_images), tuple(removed_layers))

    def _sweep_layers(self, needed: set[str]) -> list[str]:
        """Destroy unneeded leaf chains until a pass destroys nothing (parents become leaves)."""
        removed: list[str] = []
        progress = True
        while progress:
            progress = False
            layers = self.layers.datasets()
            origins = {p["origin"].split("@", 1)[0] for p in layers.values()
                       if p["origin"] not in ("-", "")}
            origins |= {o.split("@", 1)[0] for o in self.clones.origins().values() if "@" in o}
            for name in layers:
                if name.rsplit("/", 1)[1] in needed or name in origins:
                    continue
                if self.layers.destroy_leaf(name):
                    removed.append(name)
                    progress = True
        return removed
