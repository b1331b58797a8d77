"""Layer chains on ZFS: one dataset per ChainID, committed by its ``@layer`` snapshot.

Why one dataset per ChainID rather than one dataset per linear chain with a snapshot per layer:
a chain's existence and completeness are then a single name check (``D/layers/<hex>@layer``
exists or not), two images sharing a base share the very same datasets without any
promote/branch bookkeeping, a half-done layer is a dataset without the marker that is simply
destroyed (no rollback of a dataset other images already use), and GC can destroy a leaf chain
the moment nothing needs it. The cost, one dataset per layer, is cheap on ZFS (clones share
blocks) and layer counts are small (and bounded by ``LayerLimits.max_layers``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path

from zfsimage import zfs
from zfsimage.digest import hex_of
from zfsimage.errors import ZfsError, ZfsHasDependents
from zfsimage.extract import apply_layer
from zfsimage.images import PullProgress
from zfsimage.limits import LayerLimits
from zfsimage.locks import StoreLocks, spool_file
from zfsimage.manifest import Descriptor

PROP = "xc"                       # user property namespace: xc:chainid, ...
SNAP = "layer"                    # the commit-marker snapshot name

Fetch = Callable[[Descriptor, Path, Callable[[int], None]], None]


class LayerStore:
    """``D/layers``: creating (verified, committed last), listing and destroying layer chains."""

    def __init__(self, dataset: str, mount_root: Path, locks: StoreLocks, limits: LayerLimits,
                 max_image_size: str | None) -> None:
        self.root = f"{dataset}/layers"
        self.mount_root = mount_root
        self.locks = locks
        self.limits = limits
        self.max_image_size = max_image_size
        # Top snapshots this store has seen committed. A start on a cached image then runs no
        # `zfs` command before its clone; if one vanished behind our back (another process's
        # `image rm`), the clone says so and the next ensure_image looks again.
        self._committed: set[str] = set()

    def dataset(self, chain_id: str) -> str:
        return f"{self.root}/{hex_of(chain_id)}"

    def snapshot(self, chain_id: str) -> str:
        return f"{self.dataset(chain_id)}@{SNAP}"

    def is_committed(self, chain_id: str, cached: bool = False) -> bool:
        snap = self.snapshot(chain_id)
        if cached and snap in self._committed:
            return True
        if zfs.exists(snap):
            self._committed.add(snap)
            return True
        return False

    def forget(self, chain_id: str) -> None:
        """Drop the cached commit of a chain someone else destroyed."""
        self._committed.discard(self.snapshot(chain_id))

    def datasets(self) -> dict[str, dict[str, str]]:
        """{dataset: {chainid, parent, origin, committed, lastused}} for every layer dataset."""
        raw = zfs.get([self.root], ["type", "origin", f"{PROP}:chainid", f"{PROP}:parent",
                                    f"{PROP}:lastused"], recursive=True)
        out: dict[str, dict[str, str]] = {}
        snaps = set()
        for name, props in raw.items():
            if name == self.root:
                continue
            if "@" in name:
                if name.endswith(f"@{SNAP}"):
                    snaps.add(name.split("@", 1)[0])
                continue
            out[name] = {"chainid": props.get(f"{PROP}:chainid", "-"),
                         "parent": props.get(f"{PROP}:parent", "-"),
                         "origin": props.get("origin", "-"),
                         "lastused": props.get(f"{PROP}:lastused", "-")}
        for name in out:
            if name in snaps:
                out[name]["committed"] = "yes"
        return out

    def recover(self) -> list[str]:
        """Destroy layer datasets without their commit snapshot (unless a live pull holds
        their lock): what a crash left half-done."""
        removed = []
        for name, props in self.datasets().items():
            if props.get("committed"):
                continue
            with self.locks.try_chain(name.rsplit("/", 1)[1]) as got:
                if not got or zfs.exists(f"{name}@{SNAP}"):
                    continue
                zfs.destroy(name, recursive=True)
                removed.append(name)
        return removed

    def destroy_leaf(self, name: str) -> bool:
        """Destroy a layer dataset nothing depends on; False when clones or a pull hold it."""
        with self.locks.try_chain(name.rsplit("/", 1)[1]) as got:
            if not got:
                return False
            try:
                zfs.destroy(name, recursive=True)
            except ZfsHasDependents:
                return False
        self._committed.discard(f"{name}@{SNAP}")
        return True

    def materialise(self, refname: str, layers: tuple[Descriptor, ...],
                    diff_ids: tuple[str, ...], cids: list[str], fetch: Fetch,
                    emit: Callable[[PullProgress], None]) -> PullProgress:
        """Create every missing layer chain, in order, each committed only when verified.
        Returns the final progress (phase "done")."""
        total = len(layers)   # within max_layers: the puller checked before any download
        missing = [i for i, c in enumerate(cids) if not self.is_committed(c)]
        bytes_total = sum(layers[i].size for i in missing)
        done = [0]
        cached = 0
        for i, desc in enumerate(layers):
            cid = cids[i]
            with self.locks.chain(hex_of(cid)):
                if self.is_committed(cid):
                    cached += 1
                    emit(PullProgress(refname, "cached", i + 1, total, cached, done[0],
                                      bytes_total))
                    continue

                def cb(n: int, i: int = i, cached: int = cached) -> None:
                    done[0] += n
                    emit(PullProgress(refname, "download", i + 1, total, cached, done[0],
                                      bytes_total))

                with spool_file(self.mount_root / "spool") as spool:
                    fetch(desc, spool, cb)
                    emit(PullProgress(refname, "extract", i + 1, total, cached, done[0],
                                      bytes_total))
                    self._build(cid, cids[i - 1] if i else None, diff_ids[i], desc, spool,
                                f"layer {i + 1}/{total} ({desc.digest})")
        return PullProgress(refname, "done", total, total, cached, done[0], bytes_total)

    def _build(self, cid: str, parent: str | None, diff_id: str, desc: Descriptor, blob: Path,
               what: str) -> None:
        """Create D/layers/<cid>, apply the verified blob, snapshot. Caller holds the lock."""
        ds = self.dataset(cid)
        if zfs.exists(ds):
            zfs.destroy(ds, recursive=True)   # a half-done leftover from a crash
        mp = self.mount_root / "layers" / hex_of(cid)
        props = {"mountpoint": str(mp)}
        if self.max_image_size:
            props["refquota"] = self.max_image_size  # backstop against tar bombs
        try:
            if parent is None:
                zfs.create(ds, props)
            else:
                zfs.clone(self.snapshot(parent), ds, props)
            apply_layer(blob, desc.compression, mp, diff_id, self.limits, what=what)
            zfs.set_props(ds, {f"{PROP}:chainid": cid, f"{PROP}:diffid": diff_id,
                               f"{PROP}:parent": parent or "-", f"{PROP}:blob": desc.digest,
                               f"{PROP}:lastused": str(int(time.time()))})
            zfs.snapshot(f"{ds}@{SNAP}")      # commit marker, last
        except BaseException:
            with contextlib.suppress(ZfsError):
                zfs.destroy(ds, recursive=True)
            with contextlib.suppress(OSError):
                mp.rmdir()
            raise
        # tidy after commit: layer datasets stay unmounted (fewer FUSE mounts)
        with contextlib.suppress(ZfsError):
            zfs.set_props(ds, {"mountpoint": "none"})
        with contextlib.suppress(OSError):
            mp.rmdir()

    def mirror_use(self, chain_id: str, refs: tuple[str, ...], now: float) -> None:
        """Mirror references and last use onto the top layer dataset, for `zfs get`."""
        with contextlib.suppress(ZfsError):
            zfs.set_props(self.dataset(chain_id), {f"{PROP}:refs": ",".join(refs)[:1000] or "-",
                                                   f"{PROP}:lastused": str(int(now))})
