from __future__ import annotations

from zfsimage import probe_dataset, zfs


def test_probe_rejects_bad_name() -> None:
    p = probe_dataset("not a dataset")
    assert not p.healthy
    assert "not a valid ZFS dataset name" in p.reason


def test_probe_missing_pool_is_unhealthy(zpool) -> None:
    p = probe_dataset("xctest-nosuchpool/xc")
    assert not p.healthy
    assert "xctest-nosuchpool" in p.reason


def test_probe_creatable_and_existing(zpool) -> None:
    ds = f"{zpool.name}/probe"
    p = probe_dataset(ds)
    assert p.healthy, p.reason
    assert p.attributes["driver.xc.zfs.exists"] == "false"
    assert int(p.attributes["driver.xc.zfs.available"]) > 0
    zfs.create(ds, {"mountpoint": "none"})
    try:
        p = probe_dataset(ds)
        assert p.healthy and p.attributes["driver.xc.zfs.exists"] == "true"
        assert p.attributes["driver.xc.zfs.dataset"] == ds
    finally:
        zfs.destroy(ds)
