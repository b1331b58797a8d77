"""Spare clones on a real zfs-fuse pool: made, taken once, expired, swept, dropped by GC."""

from __future__ import annotations

import concurrent.futures
import json
import os
import time

import pytest

from tests.fixtures import images as im
from zfsimage import zfs
from zfsimage.errors import ImageInUse


def _tasks(store) -> set[str]:
    return set(store.task_rootfs())


def test_a_spare_is_a_ready_clone_that_one_taker_gets(make_store, registry) -> None:
    ref = im.busybox_image(registry, "spares/busybox", "v1")
    store = make_store(insecure=[registry.host])
    img = store.ensure_image(ref)
    (key,) = store.refill_spares(img, None, keep=1)
    assert key.startswith("spare.")
    assert store.refill_spares(img, None, keep=1) == []  # one is idle already
    props = zfs.get([store.task_dataset(key)], ["origin", "mounted", "xc:image"])
    assert props[store.task_dataset(key)]["origin"].endswith("@layer")
    assert props[store.task_dataset(key)]["xc:image"] == img.manifest_digest
    with store.taking_spare(img, 1 << 30) as other_quota:
        assert other_quota is None  # a spare is only for the quota it was made with

    def take() -> tuple[str, object] | None:
        with store.taking_spare(img) as got:
            return got

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = [r for r in pool.map(lambda _: take(), range(8)) if r is not None]
    assert len(results) == 1 and results[0][0] == key
    root = results[0][1]
    assert (root / "etc/hello").read_text() == im.HELLO + "\n"
    with store.taking_spare(img) as again:
        assert again is None
    store.destroy_rootfs(key)
    assert key not in _tasks(store)


def test_a_spare_with_a_quota_has_it(make_store, registry) -> None:
    ref = im.busybox_image(registry, "spares/quota", "v1")
    store = make_store(insecure=[registry.host])
    img = store.ensure_image(ref)
    (key,) = store.refill_spares(img, 64 << 20, keep=1)
    with store.taking_spare(img, 64 << 20) as got:
        assert got is not None and got[0] == key
    refquota = zfs.get([store.task_dataset(key)], ["refquota"])[store.task_dataset(key)]
    assert refquota["refquota"] == str(64 << 20)
    store.destroy_rootfs(key)


def test_idle_spares_expire_and_an_unmounted_one_is_not_handed_out(make_store,
                                                                   registry) -> None:
    ref = im.busybox_image(registry, "spares/expire", "v1")
    store = make_store(insecure=[registry.host])
    img = store.ensure_image(ref)
    made = store.refill_spares(img, None, keep=2)
    assert len(made) == 2
    assert store.expire_spares(3600) == []
    old, young = made
    marker = store.mount_root / "spares" / old
    marker.write_text(json.dumps({**json.loads(marker.read_text()),
                                  "made_at": time.time() - 7200}))  # made long ago
    assert store.expire_spares(3600) == [old]
    assert old not in _tasks(store) and young in _tasks(store)
    zfs.umount(store.task_dataset(young))
    with store.taking_spare(img) as got:
        assert got is None  # destroyed rather than handed out without its root
    assert young not in _tasks(store)


def test_sweep_removes_taken_spares_nobody_owns_and_nothing_else(make_store,
                                                                  registry) -> None:
    ref = im.busybox_image(registry, "spares/sweep", "v1")
    store = make_store(insecure=[registry.host])
    img = store.ensure_image(ref)
    store.clone_rootfs(img, "xctest-own")
    a, b, idle = store.refill_spares(img, None, keep=3)
    for key in (a, b):
        os.unlink(store.mount_root / "spares" / key)  # taken (a crash before the record)
    with store.taking_spare(img) as held:  # taken here, being recorded: left alone
        assert held is not None and held[0] == idle
        assert store.sweep_spares(lambda: {a}) == [b]
    left = _tasks(store)
    assert {"xctest-own", a, idle} <= left and b not in left
    for key in (a, idle, "xctest-own"):
        store.destroy_rootfs(key)


def test_image_removal_drops_idle_spares_and_keeps_taken_ones(make_store, registry) -> None:
    ref = im.busybox_image(registry, "spares/rm", "v1")
    store = make_store(insecure=[registry.host], gc_delay_s=3600)
    img = store.ensure_image(ref)
    store.refill_spares(img, None, keep=2)
    with store.taking_spare(img) as got:
        assert got is not None
        taken = got[0]
    # a taken spare is a task's root: the image is in use
    with pytest.raises(ImageInUse):
        store.remove_image(ref)
    store.destroy_rootfs(taken)
    t0 = time.monotonic()
    assert store.remove_image(ref) is True  # the idle spare does not hold the image
    assert not any(k.startswith("spare.") for k in _tasks(store))
    assert store.list_images() == [] and os.listdir(store.mount_root / "spares") == []
    layers = [n for n in zfs.get([f"{store.ds}/layers"], ["type"], recursive=True)
              if n != f"{store.ds}/layers"]
    assert layers == [], f"left after {time.monotonic() - t0:.1f} s: {layers}"


def test_a_busy_spare_is_left_for_the_sweep_instead_of_failing_its_removal(make_store,
                                                                            registry) -> None:
    ref = im.busybox_image(registry, "spares/busy", "v1")
    store = make_store(insecure=[registry.host])
    img = store.ensure_image(ref)
    (key,) = store.refill_spares(img, None, keep=1)
    fd = os.open(store.mount_root / "tasks" / key / "bin" / "busybox", os.O_RDONLY)
    try:
        assert store.expire_spares(-1) == []  # taken to go, but zfs cannot unmount it now
    finally:
        os.close(fd)
    assert key in _tasks(store) and not (store.mount_root / "spares" / key).exists()
    assert store.sweep_spares(lambda: set()) == [key]
    assert key not in _tasks(store)
