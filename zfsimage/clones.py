"""Task root filesystems: ``D/tasks/<task_key>``, a clone of the image's top ``@layer``.

A task's disk quota is the clone's ``refquota``: it counts what the task's root refers to (the
image's blocks it shares with the snapshot included, so the quota is the size of the whole root,
like docker's ``storage_opt size``) and not the layer datasets, which no task write touches.
It is set in the same ``zfs clone`` that makes the dataset, so no task ever sees its root
without it, and it lives on the dataset, so whatever restarts or recovers the task keeps it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Collection
from pathlib import Path

from zfsimage import zfs
from zfsimage.errors import (
    ImageGone,
    ImageInUse,
    InvalidName,
    QuotaTooSmall,
    ZfsExists,
    ZfsNoSpace,
    ZfsNotFound,
)
from zfsimage.images import Image
from zfsimage.layers import PROP, LayerStore

_TASK_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


class TaskClones:
    def __init__(self, dataset: str, mount_root: Path, layers: LayerStore,
                 task_props: dict[str, str]) -> None:
        self.root = f"{dataset}/tasks"
        self.mount_dir = mount_root / "tasks"
        self.layers = layers
        self.task_props = task_props

    def dataset(self, task_key: str) -> str:
        if not isinstance(task_key, str) or not _TASK_KEY_RE.match(task_key):
            raise InvalidName(f"task key {task_key!r} must be 1-128 characters of letters, "
                              "digits, '_', '.', ':' or '-', starting with a letter or digit")
        return f"{self.root}/{task_key}"

    def _origin(self, image: Image) -> str | None:
        return self.layers.snapshot(image.chain_id) if image.chain_id else None

    def _props(self, image: Image, mountpoint: Path, refquota: int | None
               ) -> dict[str, str]:
        """Properties of a new clone: where it mounts, whose it is, its quota, the operator's
        extras."""
        quota = {"refquota": str(refquota)} if refquota else {}
        return {"mountpoint": str(mountpoint), f"{PROP}:image": image.manifest_digest,
                **quota, **self.task_props}

    def clone(self, image: Image, task_key: str, refquota: int | None = None) -> Path:
        """Clone the image's top snapshot as ``D/tasks/<task_key>``, mounted, with
        ``refquota`` bytes of disk (None: no quota); idempotent, and a clone that exists
        already gets the quota asked now."""
        ds = self.dataset(task_key)
        mp = self.mount_dir / task_key
        origin = self._origin(image)
        try:
            if origin is None:
                zfs.create(ds, self._props(image, mp, refquota))
            else:
                zfs.clone(origin, ds, self._props(image, mp, refquota))
        except ZfsNotFound as exc:
            if image.chain_id:
                self.layers.forget(image.chain_id)
            raise ImageGone(f"image {image.reference} is not in the store any more; "
                            "pull it again") from exc
        except ZfsExists as exc:
            return self._adopt(ds, mp, origin or "-", refquota, exc)
        except ZfsNoSpace as exc:
            if refquota and origin is not None:
                raise _too_small(origin, refquota, f"image {image.reference}") from exc
            raise
        return mp

    def _adopt(self, ds: str, mp: Path, origin: str, refquota: int | None,
               exc: ZfsExists) -> Path:
        """An existing clone is ours again when it has the same origin (a retried start)."""
        cur = zfs.get([ds], ["origin", "mounted", "mountpoint", "refquota"]).get(ds, {})
        if cur.get("origin") != origin:
            raise ImageInUse(f"task rootfs {ds} exists but was cloned from another image "
                             f"({cur.get('origin')}); destroy it first") from exc
        want = str(refquota) if refquota else "0"  # zfs get -p reads an unset quota as 0
        if cur.get("refquota", "0") != want:
            try:
                zfs.set_props(ds, {"refquota": want if refquota else "none"})
            except ZfsNoSpace as err:  # the task's root holds more than the new quota already
                raise _too_small(ds, refquota or 0, f"task rootfs {ds}") from err
        if cur.get("mounted") != "yes":
            zfs.mount(ds)
        return Path(cur.get("mountpoint") or mp)

    def destroy(self, task_key: str) -> None:
        """Destroy the task clone; success if it is already gone."""
        zfs.destroy(self.dataset(task_key), recursive=True)
        with contextlib.suppress(OSError):
            (self.mount_dir / task_key).rmdir()

    def path(self, task_key: str) -> Path | None:
        ds = self.dataset(task_key)
        try:
            props = zfs.get([ds], ["mountpoint", "mounted"]).get(ds, {})
        except ZfsNotFound:
            return None
        if props.get("mounted") != "yes" or props.get("mountpoint") in (None, "none", "-"):
            return None
        return Path(props["mountpoint"])

    def origins(self) -> dict[str, str]:
        """{task_key: origin snapshot} of every task clone."""
        raw = zfs.get([self.root], ["origin"], recursive=True)
        return {n.rsplit("/", 1)[1]: p.get("origin", "-") for n, p in raw.items()
                if n != self.root and "@" not in n}

    def chains_in_use(self, skip: Collection[str] = ()) -> set[str]:
        """Hex ids of the layer chains task clones (but those keyed in ``skip``) are cloned
        from."""
        return {o.split("@", 1)[0].rsplit("/", 1)[1] for k, o in self.origins().items()
                if "@" in o and k not in skip}


def _too_small(name: str, refquota: int, what: str) -> QuotaTooSmall:
    """The error for a quota below what dataset or snapshot ``name`` (``what``) refers to."""
    needed = int(zfs.get([name], ["referenced"]).get(name, {}).get("referenced", "0") or 0)
    return QuotaTooSmall(f"a disk quota of {refquota} bytes is smaller than {what} itself "
                         f"({needed} bytes); ask for more than {-(-needed // (1 << 20))}M",
                         refquota, needed)
