"""Health probe of the image dataset, for the plugin's Fingerprint. Never raises."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from zfsimage import zfs
from zfsimage.errors import ZfsError

_DATASET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*(/[A-Za-z0-9][A-Za-z0-9_.:-]*)*$")


@dataclass(frozen=True)
class DatasetProbe:
    healthy: bool
    reason: str
    attributes: dict[str, str] = field(default_factory=dict)


def valid_dataset_name(name: str) -> bool:
    return bool(_DATASET_RE.match(name)) and len(name) < 200


def probe_dataset(dataset: str) -> DatasetProbe:
    """Is the zfs tool present and the dataset present (or creatable under an existing pool)?"""
    attrs = {"driver.xc.zfs.dataset": dataset}
    try:
        if not valid_dataset_name(dataset):
            return DatasetProbe(False, f"dataset name {dataset!r} is not a valid ZFS dataset name; "
                                       "set `dataset` in the plugin config to e.g. zroot/xc", attrs)
        if zfs.available() is None:
            return DatasetProbe(False, "the `zfs` command is not installed; install ZFS "
                                       "(zfs-fuse on Linux) on this client", attrs)
        pool = zfs.pool_of(dataset)
        try:
            props = zfs.get([pool], ["available", "used"])
        except ZfsError as exc:
            why = "; ".join(exc.stderr.splitlines()) or str(exc)
            return DatasetProbe(False, f"ZFS pool {pool!r} is not available ({why}); "
                                       "import or create the pool, or start the ZFS daemon", attrs)
        pool_props = props.get(pool, {})
        if zfs.exists(dataset):
            ds = zfs.get([dataset], ["available", "used"]).get(dataset, {})
            attrs["driver.xc.zfs.available"] = ds.get("available", "")
            attrs["driver.xc.zfs.used"] = ds.get("used", "")
            attrs["driver.xc.zfs.exists"] = "true"
            return DatasetProbe(True, "", attrs)
        attrs["driver.xc.zfs.available"] = pool_props.get("available", "")
        attrs["driver.xc.zfs.exists"] = "false"
        return DatasetProbe(True, "", attrs)
    except Exception as exc:  # the fingerprint must never fail because of the probe
        return DatasetProbe(False, f"probing dataset {dataset!r} failed: {exc}", attrs)
