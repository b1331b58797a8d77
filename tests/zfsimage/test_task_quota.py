"""Task clones with a disk quota (refquota) on real zfs-fuse, and the Linux-variant fallback of a
FreeBSD pull through a real registry."""

from __future__ import annotations

import errno
import os

import pytest

from tests.fixtures import images as im
from zfsimage import zfs
from zfsimage.errors import ImageNotFound, QuotaTooSmall

MIB = 1 << 20


def _props(ds: str, *names: str) -> dict[str, str]:
    return zfs.get([ds], names)[ds]


def _fill(path: str, mib: int) -> int:
    """Write up to ``mib`` MiB of incompressible data; the errno that stopped it (0: none)."""
    chunk = os.urandom(MIB)
    try:
        with open(path, "wb") as f:
            for _ in range(mib):
                f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
    except OSError as exc:
        return exc.errno or -1
    return 0


def test_clone_with_quota_is_limited_idempotent_and_leaves_the_image_alone(make_store,
                                                                          registry) -> None:
    ref = im.busybox_image(registry, "quota/busybox", "1")
    store = make_store(insecure=[registry.host])
    img = store.ensure_image(ref)
    assert img.chain_id is not None
    snap = store.layers.snapshot(img.chain_id)
    layer = snap.split("@", 1)[0]
    before = (_props(snap, "referenced"), _props(layer, "referenced"))
    ds = store.task_dataset("xctest-quota")

    root = store.clone_rootfs(img, "xctest-quota", refquota=8 * MIB)
    assert _props(ds, "refquota")["refquota"] == str(8 * MIB)
    # retried start with the same key: the same clone, the same quota
    assert store.clone_rootfs(img, "xctest-quota", refquota=8 * MIB) == root
    assert _props(ds, "refquota")["refquota"] == str(8 * MIB)

    assert _fill(str(root / "big"), 32) == errno.EDQUOT
    assert (root / "etc/hello").read_text() == im.HELLO + "\n"   # the rest of the root is intact
    assert (_props(snap, "referenced"), _props(layer, "referenced")) == before

    # a neighbour on the same image without a quota writes past it
    other = store.clone_rootfs(img, "xctest-noquota")
    assert _props(store.task_dataset("xctest-noquota"), "refquota")["refquota"] == "0"
    assert _fill(str(other / "big"), 12) == 0

    # a re-clone asking for another quota (or none) gets it
    (root / "big").unlink()
    store.clone_rootfs(img, "xctest-quota", refquota=16 * MIB)
    assert _props(ds, "refquota")["refquota"] == str(16 * MIB)
    store.clone_rootfs(img, "xctest-quota")
    assert _props(ds, "refquota")["refquota"] == "0"
    for key in ("xctest-quota", "xctest-noquota"):
        store.destroy_rootfs(key)


def test_a_quota_smaller_than_the_image_is_refused_with_both_sizes(make_store,
                                                                   registry) -> None:
    layer = im.tar_bytes([*im.busybox_base(), im.f("blob", os.urandom(3 * MIB))])
    ref = im.push_image(registry, "quota/fat", "1", im.build_image([layer]))
    store = make_store(insecure=[registry.host])
    img = store.ensure_image(ref)
    with pytest.raises(QuotaTooSmall) as ei:
        store.clone_rootfs(img, "xctest-tiny", refquota=MIB)
    assert ei.value.quota == MIB and ei.value.needed > 3 * MIB
    assert str(MIB) in str(ei.value) and "ask for more than" in str(ei.value)
    assert not zfs.exists(store.task_dataset("xctest-tiny"))     # nothing half-made


def test_freebsd_pull_takes_the_linux_variant_only_when_allowed(make_store, registry) -> None:
    linux = im.build_image([im.tar_bytes([im.f("os", "linux")])])
    ref = im.push_index(registry, "plat/linuxonly", "1", [(linux, "linux", "amd64")])
    strict = make_store(insecure=[registry.host])
    with pytest.raises(ImageNotFound, match="linux_images = true"):
        strict.ensure_image(ref, platform="freebsd/amd64")
    allowing = make_store(insecure=[registry.host], linux_images=True)
    img = allowing.ensure_image(ref, platform="freebsd/amd64")
    assert img.manifest_digest == linux.digest
    assert (img.os, img.built_for) == ("linux", "linux/amd64")
    assert img.platform == "freebsd/amd64"    # recorded under what was asked: found again so
    assert allowing.ensure_image(ref, platform="freebsd/amd64").manifest_digest == linux.digest
