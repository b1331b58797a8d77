"""End to end: real registry, real zfs-fuse pool, images built by the tests."""

from __future__ import annotations

import os
import stat
import subprocess
import threading

import pytest

from tests.fixtures import images as im
from zfsimage import zfs
from zfsimage.errors import ImageGone


def test_pull_clone_destroy(make_store, registry) -> None:
    ref = im.busybox_image(registry, "e2e/busybox", "v1")
    store = make_store(insecure=[registry.host])
    events = []
    img = store.ensure_image(ref, progress=events.append)
    assert img.config.cmd == ("/bin/sh", "-c", "cat /etc/hello")
    assert "GREETING=hi" in img.config.env
    assert img.chain_id is not None and len(img.chain_ids) == 2
    assert any(e.phase == "download" for e in events)
    assert events[-1].phase == "done"

    root = store.clone_rootfs(img, "xctest-task1")
    assert (root / "etc/hello").read_text() == im.HELLO + "\n"
    # whiteout removed the lower file; opaque dir hid the lower entry, kept the new one
    assert not (root / "etc/group").exists()
    assert not (root / "opt/data/old").exists()
    assert (root / "opt/data/new").read_text() == "new"
    st = os.stat(root / "bin/suid")
    assert stat.S_IMODE(st.st_mode) == 0o4755
    assert os.stat(root / "etc/hello.link").st_ino == os.stat(root / "etc/hello").st_ino
    assert os.readlink(root / "usr-sh") == "/bin/sh"
    assert os.readlink(root / "bin/sh") == "busybox"
    assert stat.S_IMODE(os.stat(root / "tmp").st_mode) == 0o1777
    out = subprocess.run(["chroot", str(root), "/bin/sh", "-c", "cat /etc/hello"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == im.HELLO

    top = zfs.get([store.layer_dataset(img.chain_id)], ["xc:refs", "xc:chainid", "xc:diffid",
                                                       "xc:lastused", "xc:parent"])
    props = top[store.layer_dataset(img.chain_id)]
    assert props["xc:refs"] == ref
    assert props["xc:chainid"] == img.chain_id and props["xc:parent"] == img.chain_ids[0]
    assert int(props["xc:lastused"]) > 0 and props["xc:diffid"].startswith("sha256:")
    assert store.rootfs_path("xctest-task1") == root
    assert store.clone_rootfs(img, "xctest-task1") == root          # idempotent
    store.destroy_rootfs("xctest-task1")
    assert store.rootfs_path("xctest-task1") is None
    assert not zfs.exists(f"{store.ds}/tasks/xctest-task1")
    store.destroy_rootfs("xctest-task1")                            # idempotent


def test_second_pull_and_shared_base_download_nothing(make_store, registry) -> None:
    base = im.tar_bytes(im.opt_layer() + im.busybox_base())
    a = im.build_image([base, im.tar_bytes(im.app_layer())])
    b = im.build_image([base, im.tar_bytes([im.f("etc/other", "b")])])
    ra = im.push_image(registry, "e2e/share-a", "1", a)
    rb = im.push_image(registry, "e2e/share-b", "1", b)
    store = make_store(insecure=[registry.host])
    store.ensure_image(ra)
    ev = []
    img_b = store.ensure_image(rb, progress=ev.append)
    cached = [e for e in ev if e.phase == "cached"]
    assert [e.layer for e in cached] == [1]
    assert ev[-1].bytes_total == len(im.compress(im.tar_bytes([im.f("etc/other", "b")]), "gzip"))
    ev2 = []
    again = store.ensure_image(rb, progress=ev2.append)
    assert again.manifest_digest == img_b.manifest_digest
    assert not [e for e in ev2 if e.phase in ("download", "extract")]


def test_layers_removed_behind_the_store_are_pulled_again(make_store, registry) -> None:
    """A cached image start runs no `zfs` check before its clone: when another process removed
    the layers, the clone says so with a transient error and the next ensure pulls again."""
    ref = im.busybox_image(registry, "e2e/vanish", "v1")
    store = make_store(insecure=[registry.host])
    img = store.ensure_image(ref)
    assert store.ensure_image(ref, revalidate=False).manifest_digest == img.manifest_digest
    assert img.chain_id is not None
    zfs.destroy(store.layer_dataset(img.chain_id), recursive=True)   # another process's doing
    cached = store.ensure_image(ref, revalidate=False)                # believes its memory
    with pytest.raises(ImageGone) as ei:
        store.clone_rootfs(cached, "xctest-vanish1")
    assert ei.value.transient and "pull it again" in str(ei.value)
    assert not zfs.exists(f"{store.ds}/tasks/xctest-vanish1")
    ev: list = []
    again = store.ensure_image(ref, revalidate=False, progress=ev.append)
    assert any(e.phase == "extract" for e in ev)                      # the top layer came back
    root = store.clone_rootfs(again, "xctest-vanish1")
    assert (root / "etc/hello").read_text() == im.HELLO + "\n"
    store.destroy_rootfs("xctest-vanish1")


def test_concurrent_pulls_download_once(make_store, registry) -> None:
    ref = im.push_image(registry, "e2e/conc", "1", im.busybox_built("zstd"))
    store = make_store(insecure=[registry.host])
    downloads: list[int] = []
    results = []

    def pull() -> None:
        results.append(store.ensure_image(
            ref, progress=lambda p: downloads.append(p.layer) if p.phase == "extract" else None))

    ts = [threading.Thread(target=pull) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len(results) == 4 and len({r.manifest_digest for r in results}) == 1
    assert sorted(downloads) == [1, 2]


def test_tag_moves_and_offline_fallback(make_store, registry) -> None:
    from tests.zfsimage.faultproxy import FaultProxy

    proxy = FaultProxy(registry.base)
    try:
        a = im.build_image([im.tar_bytes([im.f("v", "1")])])
        b = im.build_image([im.tar_bytes([im.f("v", "2")])])
        im.push_image(registry, "e2e/moving", "t", a)
        ref = f"{proxy.host}/e2e/moving:t"
        store = make_store(insecure=[proxy.host])
        assert store.ensure_image(ref).manifest_digest == a.digest
        im.push_image(registry, "e2e/moving", "t", b)
        # Without revalidation (Nomad's force_pull = false) the local copy of the tag is used.
        assert store.ensure_image(ref, revalidate=False).manifest_digest == a.digest
        img_b = store.ensure_image(ref, revalidate=True)
        assert img_b.manifest_digest == b.digest
        refs = {i.manifest_digest: i.references for i in store.list_images()}
        assert refs[a.digest] == () and refs[b.digest] == (ref,)
        proxy.fail_5xx = 100                      # registry down: the local tag still works
        assert store.ensure_image(ref).manifest_digest == b.digest
    finally:
        proxy.stop()


def test_task_props_xattrs_devices_and_quota(make_store, registry) -> None:
    from zfsimage import LayerLimits
    from zfsimage.errors import UnsafeLayer

    layer = im.tar_bytes([
        im.d("dev"), im.E("dev/null", b"3", devmajor=1, devminor=3, mode=0o666),
        im.f("x", "x", pax={"SCHILY.xattr.user.test": "v"}),
    ])
    ref = im.push_image(registry, "e2e/special", "1", im.build_image([layer]))
    store = make_store(insecure=[registry.host], task_props={"setuid": "off"},
                       limits=LayerLimits(device_nodes="create"))
    img = store.ensure_image(ref)
    root = store.clone_rootfs(img, "xctest-props")
    assert zfs.get([f"{store.ds}/tasks/xctest-props"], ["setuid"])[
        f"{store.ds}/tasks/xctest-props"]["setuid"] == "off"
    assert stat.S_ISCHR(os.lstat(root / "dev/null").st_mode)
    assert os.getxattr(root / "x", "user.test") == b"v"
    store.destroy_rootfs("xctest-props")

    bomb = im.tar_bytes([im.f("zeros", b"\0" * (24 * 1024 * 1024))])
    bref = im.push_image(registry, "e2e/bomb", "1", im.build_image([bomb]))
    small = make_store(insecure=[registry.host], max_image_size="8M")
    with pytest.raises(UnsafeLayer, match="max_image_size"):
        small.ensure_image(bref)
    assert not [n for n in zfs.get([f"{small.ds}/layers"], ["type"], recursive=True)
                if n != f"{small.ds}/layers"]
