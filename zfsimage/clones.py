"""Task root filesystems: ``D/tasks/<task_key>``, a clone of the image's top ``@layer``."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

from zfsimage import zfs
from zfsimage.errors import ImageGone, ImageInUse, InvalidName, ZfsExists, ZfsNotFound
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

    def _props(self, image: Image, mountpoint: Path) -> dict[str, str]:
        """Properties of a new clone: where it mounts, whose it is, the operator's extras."""
        return {"mountpoint": str(mountpoint), f"{PROP}:image": image.manifest_digest,
                **self.task_props}

    def clone(self, image: Image, task_key: str) -> Path:
        """Clone the image's top snapshot as ``D/tasks/<task_key>``, mounted; idempotent."""
        ds = self.dataset(task_key)
        mp = self.mount_dir / task_key
        origin = self._origin(image)
        try:
            if origin is None:
                zfs.create(ds, self._props(image, mp))
            else:
                zfs.clone(origin, ds, self._props(image, mp))
        except ZfsNotFound as exc:
            if image.chain_id:
                self.layers.forget(image.chain_id)
            raise ImageGone(f"image {image.reference} is not in the store any more; "
                            "pull it again") from exc
        except ZfsExists as exc:
            return self._adopt(ds, mp, origin or "-", exc)
        return mp

    @staticmethod
    def _adopt(ds: str, mp: Path, origin: str, exc: ZfsExists) -> Path:
        """An existing clone is ours again when it has the same origin (a retried start)."""
        cur = zfs.get([ds], ["origin", "mounted", "mountpoint"]).get(ds, {})
        if cur.get("origin") != origin:
            raise ImageInUse(f"task rootfs {ds} exists but was cloned from another image "
                             f"({cur.get('origin')}); destroy it first") from exc
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

    def chains_in_use(self) -> set[str]:
        """Hex ids of the layer chains task clones are cloned from."""
        return {o.split("@", 1)[0].rsplit("/", 1)[1] for o in self.origins().values()
                if "@" in o}
