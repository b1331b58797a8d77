"""End to end: real registry, real zfs-fuse pool, images built by the tests."""

from __future__ import annotations

import os
import stat
import subprocess
import threading

from tests.fixtures import images as im
from zfsimage import zfs


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
