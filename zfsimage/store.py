"""The image store: OCI images as ZFS layer chains, one clone per task.

Layout under the operator's dataset ``D`` (all parents ``mountpoint=none``)::

    D/layers/<chainid hex>   one dataset per layer chain, a clone of its parent chain's
                             ``@layer`` snapshot; user properties xc:chainid, xc:diffid,
                             xc:parent, xc:blob, xc:lastused (layers.py says why)
    D/layers/<hex>@layer     the commit marker, taken only after extraction and DiffID checks
    D/tasks/<task_key>       a task rootfs: clone of the image's top ``@layer`` snapshot
    D/tasks/spare.<...>      a spare task rootfs made ahead of a start (spares.py)
    D/meta                   image records (config, references), see records.py

``ImageStore`` is the composition of its parts, each owning one noun: ``LayerStore`` (layer
chains), ``TaskClones`` (task rootfs clones), ``Catalog`` (image records), ``Puller`` (registry
and layout sources), ``Collector`` (GC and removal), ``StoreLocks``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection
from pathlib import Path

from zfsimage import zfs
from zfsimage.auth import RegistryAuth
from zfsimage.catalog import Catalog
from zfsimage.clones import TaskClones
from zfsimage.config import StoreConfig
from zfsimage.errors import InvalidName, RegistryUnavailable, ZfsError
from zfsimage.gc import Collector
from zfsimage.images import GcReport, Image, PullProgress, config_json, image_from
from zfsimage.layers import LayerStore
from zfsimage.locks import StoreLocks, remove_leftover_spool
from zfsimage.platform import Platform
from zfsimage.probe import valid_dataset_name
from zfsimage.puller import Puller
from zfsimage.records import ImageRecord, RecordStore
from zfsimage.reference import parse_reference
from zfsimage.rootfs import raise_fd_limit
from zfsimage.spares import Spares

__all__ = ["GcReport", "Image", "ImageStore", "PullProgress", "StoreConfig", "config_json"]


class ImageStore:
    """Thread-safe; blocking. Several processes may share one store (flock-serialised)."""

    def __init__(self, config: StoreConfig) -> None:
        if not valid_dataset_name(config.dataset):
            raise InvalidName(f"dataset {config.dataset!r} is not a valid ZFS dataset name")
        self.cfg = config
        raise_fd_limit()
        self.ds = config.dataset
        self.mount_root = Path(config.mount_root)
        for sub in ("spool", "locks", "tasks", "layers", "spares"):
            (self.mount_root / sub).mkdir(parents=True, exist_ok=True)
        self.locks = StoreLocks(self.mount_root / "locks")
        self.layers = LayerStore(self.ds, self.mount_root, self.locks, config.limits,
                                 config.max_image_size)
        self.clones = TaskClones(self.ds, self.mount_root, self.layers, config.task_props)
        self.spares = Spares(self.clones, self.mount_root / "spares")
        self._setup_datasets()
        self.records = RecordStore(self.mount_root / "meta" / "images")
        self.catalog = Catalog(self.records, self.layers)
        self.puller = Puller(config, self.catalog, self.layers, self.locks)
        self.collector = Collector(self.catalog, self.layers, self.clones, self.spares,
                                   self.locks, config.gc_delay_s)
        self.recover()

    # -- setup and crash recovery -----------------------------------------------------------

    def _setup_datasets(self) -> None:
        if not zfs.exists(self.ds):
            zfs.create(self.ds, {"mountpoint": "none"}, parents=True)
        for sub in ("layers", "tasks"):
            if not zfs.exists(f"{self.ds}/{sub}"):
                with contextlib.suppress(ZfsError):
                    zfs.create(f"{self.ds}/{sub}", {"mountpoint": "none"})
        meta = f"{self.ds}/meta"
        mp = str(self.mount_root / "meta")
        if not zfs.exists(meta):
            try:
                zfs.create(meta, {"mountpoint": mp})
            except ZfsError:
                if not zfs.exists(meta):
                    raise
        props = zfs.get([meta], ["mountpoint", "mounted"]).get(meta, {})
        if props.get("mountpoint") != mp:
            zfs.set_props(meta, {"mountpoint": mp})
        if props.get("mounted") != "yes":
            zfs.mount(meta)

    def recover(self) -> list[str]:
        """Remove what a crash left half-done: layer datasets without their commit snapshot
        (unless another live pull holds their lock), spool files no live pull holds (its lock
        says so) and temp records."""
        removed = self.layers.recover()
        remove_leftover_spool(self.mount_root / "spool")
        self.records.clean_temp()
        return removed

    # -- names ------------------------------------------------------------------------------

    def layer_dataset(self, chain_id: str) -> str:
        return self.layers.dataset(chain_id)

    def task_dataset(self, task_key: str) -> str:
        return self.clones.dataset(task_key)

    # -- images -----------------------------------------------------------------------------

    def _platform(self, platform: Platform | str | None) -> Platform:
        if isinstance(platform, str):
            return Platform.parse(platform)
        return platform or self.cfg.platform or Platform.host()

    def ensure_image(self, reference: str, auth: RegistryAuth | None = None,
                     platform: Platform | str | None = None,
                     progress: Callable[[PullProgress], None] | None = None,
                     revalidate: bool | None = None) -> Image:
        """Make the image available locally (pulling what is missing) and return it.

        ``revalidate``: ask the registry whether a locally present tag moved (Nomad's
        ``force_pull``); ``None`` takes the store's ``revalidate_tags``.
        """
        recheck = self.cfg.revalidate_tags if revalidate is None else revalidate
        ref = parse_reference(reference)
        plat = self._platform(platform)
        with self.locks.thread_lock(f"image:{ref}:{plat}"):
            local = self.catalog.find_local(ref, plat)
            if local is not None and self.catalog.complete(local):
                if ref.digest or not recheck:
                    return image_from(self.catalog.touch(local, str(ref), None), str(ref))
                try:
                    head = self.puller.client(ref, auth).head_manifest(ref)
                except RegistryUnavailable:
                    head = None  # offline: the local copy of the tag is the best we have
                if head is None or head == local.source_digests.get(str(ref)) \
                        or head == local.manifest_digest:
                    return image_from(self.catalog.touch(local, str(ref), None), str(ref))
            return self.puller.pull(ref, plat, auth, progress)

    def import_layout(self, layout: Path, reference: str, platform: Platform | str | None = None,
                      name: str | None = None,
                      progress: Callable[[PullProgress], None] | None = None) -> Image:
        """Import an image from an OCI image layout directory or a tar archive of one."""
        return self.puller.import_layout(Path(layout), parse_reference(reference),
                                         self._platform(platform), name, progress)

    # -- task rootfs ------------------------------------------------------------------------

    def clone_rootfs(self, image: Image, task_key: str, refquota: int | None = None) -> Path:
        """Clone the image's top snapshot as ``D/tasks/<task_key>``, mounted, its disk limited
        to ``refquota`` bytes (None: no quota); idempotent (an existing clone gets this quota).
        ``QuotaTooSmall`` when the image alone takes more than ``refquota``."""
        return self.clones.clone(image, task_key, refquota)

    def destroy_rootfs(self, task_key: str) -> None:
        """Destroy the task clone; success if it is already gone."""
        self.clones.destroy(task_key)

    def taking_spare(self, image: Image, refquota: int | None = None
                     ) -> contextlib.AbstractContextManager[tuple[str, Path] | None]:
        """An idle spare clone of ``image`` with this quota for the caller, (task key, root),
        or None; record the key as the task's root inside the block (see ``sweep_spares``)."""
        return self.spares.taking(image, refquota)

    def refill_spares(self, image: Image, refquota: int | None, keep: int) -> list[str]:
        """Make spare clones of ``image`` until ``keep`` are idle; blocking (a clone each)."""
        return self.spares.refill(image, refquota, keep)

    def expire_spares(self, max_idle_s: float) -> list[str]:
        """Destroy the idle spare clones made more than ``max_idle_s`` ago."""
        return self.spares.expire(max_idle_s)

    def sweep_spares(self, owned: Callable[[], Collection[str]]) -> list[str]:
        """Destroy the taken spare clones no key in ``owned()`` names (crash debris)."""
        return self.spares.sweep(owned)

    def rootfs_path(self, task_key: str) -> Path | None:
        return self.clones.path(task_key)

    def task_rootfs(self) -> dict[str, str]:
        """{task_key: origin snapshot} of every task clone."""
        return self.clones.origins()

    # -- inventory and removal ------------------------------------------------------------------

    def list_images(self) -> list[Image]:
        return [image_from(r, r.references[0] if r.references else r.manifest_digest)
                for r in self.records.all()]

    def inspect(self, reference: str) -> tuple[Image, ImageRecord]:
        rec = self.catalog.lookup(reference)
        return image_from(rec, reference), rec

    def remove_image(self, reference: str, force_untag: bool = False) -> bool:
        """Untag ``reference``; drop the image (and layers nothing else needs) when it has no
        references left and no task uses it. Returns True when the image record was removed."""
        return self.collector.remove_image(reference, force_untag)

    def gc(self, delay_s: float | None = None, now: float | None = None) -> GcReport:
        """Remove untagged images unused for ``delay_s``, then layer chains nothing needs."""
        return self.collector.gc(delay_s, now)

