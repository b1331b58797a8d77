"""Operator CLI, OCI layout import, garbage collection and crash recovery on a real pool."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.fixtures import images as im
from zfsimage import zfs
from zfsimage.cli import main
from zfsimage.errors import ImageInUse
from zfsimage.locks import remove_leftover_spool, spool_file


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = main(list(argv), out, err)
    return rc, out.getvalue(), err.getvalue()


def test_cli_pull_list_inspect_rm_gc(make_store, registry, zpool) -> None:
    ref = im.busybox_image(registry, "cli/busybox", "1")
    store = make_store(insecure=[registry.host])      # creates the dataset; the CLI reuses it
    base = ["--dataset", store.ds, "--mount-root", str(store.mount_root),
            "--insecure-registry", registry.host]
    rc, out, err = _cli(*base, "pull", ref)
    assert rc == 0, err
    assert "downloading" in err and "done:" in err
    digest = out.split()[1]
    rc, out, _ = _cli(*base, "list", "--json")
    assert rc == 0 and json.loads(out)[0]["digest"] == digest
    rc, out, _ = _cli(*base, "inspect", ref)
    assert rc == 0 and json.loads(out)["cmd"] == ["/bin/sh", "-c", "cat /etc/hello"]
    rc, out, _ = _cli(*base, "rm", ref)
    assert rc == 0 and out.startswith("removed")
    assert zfs.get([f"{store.ds}/layers"], ["type"], recursive=True).keys() == \
        {f"{store.ds}/layers"}
    rc, _, err = _cli(*base, "inspect", ref)
    assert rc == 1 and err.startswith("error: ") and err.count("\n") == 1
    rc, _, err = _cli("list")
    assert rc == 1 and "--dataset" in err
    rc, _, err = _cli(*base, "pull", f"{registry.host}/cli/missing:1")
    assert rc == 1 and "not found" in err


def test_cli_config_file(make_store, tmp_path: Path) -> None:
    store = make_store()
    cfg = tmp_path / "plugin.hcl"
    cfg.write_text(f'dataset = "{store.ds}"\nmount_root = "{store.mount_root}"\n')
    rc, out, err = _cli("--config", str(cfg), "list")
    assert rc == 0, err and "REFERENCE" in out


def test_import_layout_dir_and_archive(make_store, tmp_path: Path) -> None:
    built = im.busybox_built("zstd")
    lay = im.write_layout(tmp_path / "layout", built, "v1")
    store = make_store()
    img = store.import_layout(lay, "local/busybox:v1", name="v1")
    assert img.manifest_digest == built.digest
    archive = tmp_path / "layout.tar"
    with tarfile.open(archive, "w") as tf:
        tf.add(lay, arcname=".")
    store2 = make_store()
    img2 = store2.import_layout(archive, "local/busybox:v1")
    root = store2.clone_rootfs(img2, "xctest-imp")
    out = subprocess.run(["chroot", str(root), "/bin/sh", "-c", "cat /etc/hello"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == im.HELLO
    store2.destroy_rootfs("xctest-imp")
    # a tampered blob is refused and leaves nothing committed
    layer0 = json.loads(built.manifest)["layers"][0]["digest"].split(":")[1]
    p = lay / "blobs" / "sha256" / layer0
    p.write_bytes(p.read_bytes()[:-1] + b"\0")
    store3 = make_store()
    with pytest.raises(Exception, match="does not match"):
        store3.import_layout(lay, "local/busybox:v1")
    assert store3.list_images() == []


def test_gc_keeps_used_and_tagged(make_store, registry) -> None:
    base = im.tar_bytes(im.busybox_base())
    a = im.build_image([base, im.tar_bytes([im.f("a", "a")])])
    b = im.build_image([base, im.tar_bytes([im.f("b", "b")])])
    ra = im.push_image(registry, "gc/a", "1", a)
    rb = im.push_image(registry, "gc/b", "1", b)
    store = make_store(insecure=[registry.host], gc_delay_s=3600)
    ia = store.ensure_image(ra)
    store.ensure_image(rb)
    store.clone_rootfs(ia, "xctest-gc")
    with pytest.raises(ImageInUse):
        store.remove_image(ra)
    assert store.remove_image(ra, force_untag=True) is False    # untagged, kept: in use
    assert store.remove_image(rb) is True                        # b's top layer goes now
    layers = {n for n in zfs.get([f"{store.ds}/layers"], ["type"], recursive=True)
              if "@" not in n and n != f"{store.ds}/layers"}
    assert len(layers) == 2                                      # base + a's top
    assert store.gc(delay_s=0).images_removed == ()              # a is in use by the task
    store.destroy_rootfs("xctest-gc")
    rep = store.gc(delay_s=3600)
    assert rep.images_removed == ()                              # not old enough yet
    rep = store.gc(delay_s=0)
    assert rep.images_removed == (a.digest,) and len(rep.layers_removed) == 2
    assert store.list_images() == []


def test_recover_removes_half_done_layer(make_store, registry) -> None:
    ref = im.busybox_image(registry, "rec/busybox", "1")
    store = make_store(insecure=[registry.host])
    half = f"{store.ds}/layers/{'ab' * 32}"
    zfs.create(half, {"mountpoint": "none"})          # a crash left a layer without @layer
    (store.mount_root / "spool" / "p999999-dead").write_bytes(b"partial")
    again = type(store)(store.cfg)
    assert not zfs.exists(half)
    assert list((store.mount_root / "spool").iterdir()) == []
    assert again.ensure_image(ref).chain_id



def test_recover_keeps_spool_files_a_live_pull_holds(make_store) -> None:
    """A spool file is a leftover when no pull holds its lock: one held by another process or
    by a pull of this very process survives recovery, an unlocked one goes."""
    import sys

    store = make_store()
    spool = store.mount_root / "spool"
    other = spool / "held-by-another-process"
    other.write_bytes(b"partial")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, sys\n"
         "f = open(sys.argv[1], 'rb')\n"
         "fcntl.flock(f, fcntl.LOCK_EX)\n"
         "print('locked', flush=True)\n"
         "sys.stdin.read()\n", str(other)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        dead = spool / "p999999-dead"          # a crashed pull's (any name: the lock decides)
        dead.write_bytes(b"partial")
        with spool_file(spool) as mine:
            mine.write_bytes(b"being written")
            removed = remove_leftover_spool(spool)
            assert removed == [dead]
            assert sorted(p.name for p in spool.iterdir()) == sorted([other.name, mine.name])
            type(store)(store.cfg)             # a new store's recovery keeps them too
            assert mine.read_bytes() == b"being written" and other.exists()
        assert not mine.exists()               # the pull removes its own file when done
    finally:
        holder.kill()
        holder.wait()
    type(store)(store.cfg)                     # the holder is gone: its file is a leftover now
    assert list(spool.iterdir()) == []


def test_two_processes_pull_once(make_store, registry) -> None:
    import sys

    from tests.zfsimage.faultproxy import FaultProxy

    built = im.busybox_built()
    im.push_image(registry, "cli/twoproc", "1", built)
    proxy = FaultProxy(registry.base)
    try:
        store = make_store(insecure=[proxy.host])
        argv = [sys.executable, "-c", "import sys; from zfsimage.cli import main; "
                "sys.exit(main(sys.argv[1:]))", "--dataset", store.ds, "--mount-root",
                str(store.mount_root), "--insecure-registry", proxy.host, "pull", "-q",
                f"{proxy.host}/cli/twoproc:1"]
        procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  cwd=str(Path(__file__).resolve().parents[2]))
                 for _ in range(2)]
        outs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
        layer_gets = [s for s in proxy.seen
                      if "/blobs/" in s["path"] and any(
                          ly["digest"] in s["path"]
                          for ly in json.loads(built.manifest)["layers"])]
        assert len(layer_gets) == 2          # each of the two layers fetched exactly once
    finally:
        proxy.stop()
