"""Issue 13's hostile-image classes as named cases, each built in code.

Every case ends either in the expected tree or in one ``ImageError`` whose message is one line,
names the layer (and the entry when there is one) and has its control characters escaped. The
store-level cases also check that nothing is left behind: no layer dataset without its commit
snapshot, no spool file, no temp dir, no mount.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import resource
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.images import E, compress, d, f, sym, tar_bytes
from tests.zfsimage import rawtar
from tests.zfsimage.hostile import deep_tree_layer
from zfsimage import LayerLimits, zfs
from zfsimage.errors import CorruptLayer, ImageError, LimitExceeded, UnsafeLayer
from zfsimage.extract import ExtractStats, _reason, apply_layer
from zfsimage.layout import OciLayout
from zfsimage.platform import Platform


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """A directory on tmpfs when there is one: the deep trees here need no disk I/O (which on
    this kind of host also slows every zfs-fuse pool's sync)."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    d = Path(tempfile.mkdtemp(prefix="xctest-hostile-", dir=shm))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _apply(tmp_path: Path, layers: list[bytes], limits: LayerLimits | None = None,
           root: Path | None = None) -> tuple[Path, ExtractStats]:
    root = root or tmp_path / "root"
    root.mkdir(exist_ok=True)
    stats = ExtractStats()
    for i, raw in enumerate(layers):
        blob = tmp_path / f"layer{i}.gz"
        blob.write_bytes(compress(raw, "gzip"))
        stats = apply_layer(blob, "gzip", root, None, limits, what=f"layer {i}")
    return root, stats


def _refused(tmp_path: Path, layers: list[bytes], kind: type[ImageError],
             limits: LayerLimits | None = None) -> ImageError:
    with pytest.raises(kind) as ei:
        _apply(tmp_path, layers, limits)
    msg = str(ei.value)
    assert "\n" not in msg and "\x1b" not in msg and msg.startswith("layer ")
    return ei.value


# -- 1. deep trees ---------------------------------------------------------------------------

def test_deep_tree_through_symlinks_refused_by_resolved_depth(scratch: Path) -> None:
    err = _refused(scratch, [deep_tree_layer(1000, group=200)], LimitExceeded)
    assert isinstance(err, LimitExceeded) and err.limit == "max_depth"
    assert "after resolving symlinks" in str(err)


def test_deep_tree_whiteout_is_iterative(scratch: Path) -> None:
    lim = LayerLimits(max_depth=20_000)
    root, _ = _apply(scratch, [deep_tree_layer(10_000)], lim)
    probe = root / "t"
    depth = 0
    while (probe / "d").is_dir() and depth < 200:
        probe, depth = probe / "d", depth + 1
    assert depth == 200
    _apply(scratch, [tar_bytes([f(".wh.t")] + [f(f".wh.s{k}") for k in range(1, 26)])],
           lim, root)
    assert os.listdir(root) == []


# -- 2. tracebacks become one line -----------------------------------------------------------

def test_symlink_target_of_4096_bytes(tmp_path: Path) -> None:
    err = _refused(tmp_path, [tar_bytes([sym("l", "a" * 4096)])], LimitExceeded)
    assert "'l'" in str(err) and "max_link_len" in str(err)


def test_xattrs_the_kernel_refuses_are_noted(tmp_path: Path) -> None:
    layer = tar_bytes([
        f("cap", "x", pax={"SCHILY.xattr.security.capability": "\x01garbage"}),
        f("big", "x", pax={"SCHILY.xattr.user.big": "v" * 70_000}),
    ])
    root, stats = _apply(tmp_path, [layer])
    assert (root / "cap").read_text() == "x" and (root / "big").read_text() == "x"
    assert any("security.capability" in n for n in stats.neutralised)


def test_pax_uid_of_2_32(tmp_path: Path) -> None:
    layer = rawtar.pax([("uid", str(2**32))]) + rawtar.member("u", b"x") + rawtar.END
    err = _refused(tmp_path, [layer], CorruptLayer)
    assert "'u'" in str(err) and "uid 4294967296" in str(err)


def test_pax_mtime_nan(tmp_path: Path) -> None:
    layer = rawtar.pax([("mtime", "nan")]) + rawtar.member("m", b"x") + rawtar.END
    _refused(tmp_path, [layer], CorruptLayer)


def test_truncated_gnu_sparse_header(tmp_path: Path) -> None:
    layer = rawtar.old_gnu_sparse("s", [(0, 10)], 100, b"x" * 10, extended=[[(50, 10)]],
                                  truncate_ext=True)
    _refused(tmp_path, [layer], CorruptLayer)


@pytest.mark.parametrize("records", [
    [("GNU.sparse.map", "0,5,x"), ("GNU.sparse.size", "10")],
    [("GNU.sparse.map", "0,5,3"), ("GNU.sparse.size", "10")],
    [("GNU.sparse.map", "8,5"), ("GNU.sparse.size", "10")],
    [("GNU.sparse.major", "1"), ("GNU.sparse.minor", "0"), ("GNU.sparse.realsize", "10")],
], ids=["not-a-number", "odd-count", "past-the-end", "1.0-map-garbage"])
def test_malformed_pax_sparse_maps(tmp_path: Path, records: list[tuple[str, str]]) -> None:
    layer = rawtar.pax(records) + rawtar.member("sp", b"garbage\n" * 100) + rawtar.END
    _refused(tmp_path, [layer], CorruptLayer)


def _layout(tmp_path: Path, index: object) -> Path:
    lay = tmp_path / "layout"
    lay.mkdir()
    (lay / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (lay / "index.json").write_text(json.dumps(index))
    return lay


@pytest.mark.parametrize("index", [[], {"manifests": None}, {"manifests": [5]}, "x"],
                         ids=["list", "manifests-null", "entry-not-object", "string"])
def test_index_json_of_the_wrong_shape(tmp_path: Path, index: object) -> None:
    with OciLayout.open(_layout(tmp_path, index)) as lay, pytest.raises(ImageError) as ei:
        lay.resolve(None, Platform.parse("linux/amd64"))
    assert "\n" not in str(ei.value)


def test_layout_archive_that_is_not_a_tar(tmp_path: Path) -> None:
    p = tmp_path / "l.tar"
    p.write_bytes(b"PK\x03\x04 this is a zip, not a tar" * 40)
    with pytest.raises(ImageError, match="layout archive"):
        OciLayout.open(p)


def test_layout_archive_with_a_path_under_a_file(tmp_path: Path) -> None:
    p = tmp_path / "l.tar"
    p.write_bytes(tar_bytes([f("oci-layout", "{}"), f("blobs", "file"), f("blobs/sha256/x")]))
    with pytest.raises(ImageError) as ei:
        OciLayout.open(p)
    assert "'blobs/sha256/x'" in str(ei.value)
    assert not [n for n in os.listdir(os.environ.get("TMPDIR", "/tmp"))
                if n.startswith("xc-import-") and str(os.getpid()) in n]


# -- 3. fds ----------------------------------------------------------------------------------

def test_3000_directories_under_a_hard_fd_limit_of_1024(scratch: Path) -> None:
    """Both the directory cache and an opaque whiteout over 3,000 lower entries stay within a
    hard fd limit of 1024."""
    lower = scratch / "lower.gz"
    lower.write_bytes(compress(tar_bytes([d(f"d{i}") for i in range(3000)] + [d("a")]
                                         + [d(f"a/s{i}") for i in range(3000)]), "gzip"))
    upper = scratch / "upper.gz"
    upper.write_bytes(compress(tar_bytes([f("a/.wh..wh..opq"), f("a/new", "n")]), "gzip"))
    (scratch / "root").mkdir()
    code = ("import sys; from pathlib import Path; from zfsimage.extract import apply_layer;"
            "[apply_layer(Path(p), 'gzip', Path(sys.argv[3]), None) for p in sys.argv[1:3]]")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    cp = subprocess.run([sys.executable, "-c", code, str(lower), str(upper),
                         str(scratch / "root")], preexec_fn=limit, capture_output=True,
                        text=True, timeout=120, cwd=Path(__file__).parents[2])
    assert cp.returncode == 0, cp.stderr[-2000:]
    assert len(os.listdir(scratch / "root")) == 3001
    assert os.listdir(scratch / "root" / "a") == ["new"]


# -- 4. bounded work -------------------------------------------------------------------------

def test_sparse_holes_count_against_max_bytes(tmp_path: Path) -> None:
    big = 512 * 1024**2
    layer = rawtar.old_gnu_sparse("holes", [(big - 4, 4)], big, b"tail") + rawtar.END
    assert len(layer) < 4096
    err = _refused(tmp_path, [layer], LimitExceeded, LayerLimits(max_bytes=64 * 1024**2))
    assert isinstance(err, LimitExceeded) and err.limit == "max_bytes"


def test_sparse_file_within_limits_keeps_its_holes(tmp_path: Path) -> None:
    size = 8 * 1024**2
    layer = rawtar.old_gnu_sparse("holes", [(0, 3), (size - 4, 4)], size, b"abctail") + \
        rawtar.END
    root, _ = _apply(tmp_path, [layer])
    data = (root / "holes").read_bytes()
    assert len(data) == size and data[:3] == b"abc" and data[-4:] == b"tail"
    assert data[3:-4] == bytes(size - 7)


def test_large_gnu_sparse_map(tmp_path: Path) -> None:
    regions = [(i * 2, 1) for i in range(70_000)]
    ext = [regions[i:i + 21] for i in range(4, len(regions), 21)]
    layer = rawtar.old_gnu_sparse("map", regions[:4], 200_000, b"x" * 70_000, ext) + rawtar.END
    err = _refused(tmp_path, [layer], LimitExceeded)
    assert isinstance(err, LimitExceeded) and err.limit == "max_sparse_regions"


def test_many_large_pax_comments(tmp_path: Path) -> None:
    one = rawtar.pax([("comment", "A" * 1_000_000)])
    layer = b"".join(one + rawtar.member(f"c{i}", b"x") for i in range(70)) + rawtar.END
    err = _refused(tmp_path, [layer], LimitExceeded)
    assert isinstance(err, LimitExceeded) and err.limit == "max_meta_total"


def test_huge_global_pax_header(tmp_path: Path) -> None:
    layer = rawtar.pax([("comment", "G" * 3_000_000)], flag=b"g") + rawtar.member("a") + \
        rawtar.END
    err = _refused(tmp_path, [layer], LimitExceeded)
    assert isinstance(err, LimitExceeded) and err.limit == "max_meta_size"


def test_layout_archive_sparse_bomb(tmp_path: Path) -> None:
    size = 2 * 1024**3
    inner = rawtar.member("oci-layout", b"{}") + \
        rawtar.old_gnu_sparse("blobs/sha256/" + "a" * 64, [(size - 1, 1)], size, b"z") + \
        rawtar.END
    p = tmp_path / "l.tar.gz"
    p.write_bytes(gzip.compress(inner))
    assert p.stat().st_size < 10_000
    with pytest.raises(LimitExceeded) as ei:
        OciLayout.open(p, LayerLimits(max_temp_bytes=1024**3))
    assert ei.value.limit == "max_temp_bytes"


def test_quota_and_pool_are_told_apart() -> None:
    assert "refquota" in _reason(OSError(errno.EDQUOT, "x"))
    assert "pool" in _reason(OSError(errno.ENOSPC, "x"))


# -- 5. results and messages -----------------------------------------------------------------

def test_alias_write_survives_the_same_layers_whiteout(tmp_path: Path) -> None:
    root, _ = _apply(tmp_path, [tar_bytes([d("a"), f("a/new", "lower")]),
                                tar_bytes([sym("al", "a"), f("al/new", "mine"),
                                           f("a/.wh.new")])])
    assert (root / "a/new").read_text() == "mine"


def test_alias_write_survives_the_same_layers_opaque(tmp_path: Path) -> None:
    root, _ = _apply(tmp_path, [tar_bytes([d("a"), f("a/old", "lower")]),
                                tar_bytes([sym("al", "a"), f("al/new", "mine"),
                                           f("a/.wh..wh..opq")])])
    assert sorted(os.listdir(root / "a")) == ["new"]


def test_directory_replaced_by_a_file_in_the_same_layer(tmp_path: Path) -> None:
    root, _ = _apply(tmp_path, [tar_bytes([d("x", 0o700), f("x/in", "i"), f("x", "file")])])
    assert stat.S_ISREG(os.lstat(root / "x").st_mode) and (root / "x").read_text() == "file"


def test_control_characters_are_escaped(tmp_path: Path) -> None:
    evil = "\x1b[31mred\nnext line\u202e/../x"
    err = _refused(tmp_path, [tar_bytes([f(evil, "x")])], UnsafeLayer)
    assert "\\x1b" in str(err) and "\\n" in str(err)


def test_unsupported_type_name_escaped_in_notes(tmp_path: Path) -> None:
    layer = tar_bytes([E("odd\x07", tarfile.CONTTYPE[:0] + b"Z")])
    _, stats = _apply(tmp_path, [layer])
    assert stats.neutralised and "\x07" not in stats.neutralised[0]


# -- store level: no debris after a refused layer --------------------------------------------

def _debris(store) -> list[str]:  # type: ignore[no-untyped-def]
    raw = zfs.get([f"{store.ds}/layers"], ["type"], recursive=True)
    names = {n for n in raw if n != f"{store.ds}/layers"}
    uncommitted = [n for n in names if "@" not in n and f"{n}@layer" not in names]
    spool = [str(p) for p in (store.mount_root / "spool").iterdir()]
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
              if line.split()[1].startswith(str(store.mount_root / "layers"))]
    return uncommitted + spool + mounts


def test_refused_second_layer_leaves_nothing(make_store, tmp_path: Path) -> None:
    from tests.fixtures.images import build_image, write_layout

    bad = rawtar.pax([("uid", str(2**40))]) + rawtar.member("u", b"x") + rawtar.END
    built = build_image([tar_bytes([f("ok", "1")]), bad])
    lay = write_layout(tmp_path / "lay", built)
    store = make_store()
    with pytest.raises(CorruptLayer) as ei:
        store.import_layout(lay, "xctest/bad:1")
    assert "layer 2/2" in str(ei.value) and "'u'" in str(ei.value)
    assert _debris(store) == []
    assert store.list_images() == []


def test_manifest_of_1000_layers_builds_nothing(make_store, tmp_path: Path) -> None:
    from tests.fixtures.images import build_image, write_layout

    built = build_image([tar_bytes([f(f"l{i}", str(i))]) for i in range(3)])
    lay = write_layout(tmp_path / "lay", built)
    man = json.loads(built.manifest)
    man["layers"] = man["layers"] * 334
    _rewrite_manifest(lay, json.dumps(man).encode())
    store = make_store()
    with pytest.raises(LimitExceeded) as ei:
        store.import_layout(lay, "xctest/many:1")
    assert ei.value.limit == "max_layers" and "1002 layers" in str(ei.value)
    assert zfs.get([f"{store.ds}/layers"], ["type"], recursive=True).keys() == \
        {f"{store.ds}/layers"}


def _rewrite_manifest(lay: Path, body: bytes) -> None:
    import hashlib

    digest = hashlib.sha256(body).hexdigest()
    (lay / "blobs/sha256" / digest).write_bytes(body)
    index = json.loads((lay / "index.json").read_text())
    index["manifests"][0].update(digest=f"sha256:{digest}", size=len(body))
    (lay / "index.json").write_text(json.dumps(index))


def test_bad_header_is_placed_after_the_last_good_entry(tmp_path: Path) -> None:
    layer = rawtar.member("good", b"x") + b"\x01" * 512 + rawtar.END
    err = _refused(tmp_path, [layer], CorruptLayer)
    assert "after entry 'good'" in str(err) and "checksum" in str(err)


def test_platform_names_from_an_index_are_escaped() -> None:
    from zfsimage.errors import ImageNotFound
    from zfsimage.manifest import Descriptor, select_platform

    d = Descriptor("application/vnd.oci.image.manifest.v1+json", "sha256:" + "a" * 64, 1,
                   ("linux\x1b[2J", "evil\nline", None))
    with pytest.raises(ImageNotFound) as ei:
        select_platform([d], Platform.parse("linux/amd64"))
    assert "\n" not in str(ei.value) and "\x1b" not in str(ei.value)


# -- the CLI: limits from options, one line for bugs too -------------------------------------

def _cli(store, *argv: str) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    import io

    from zfsimage.cli import main

    out, err = io.StringIO(), io.StringIO()
    rc = main(["--dataset", store.ds, "--mount-root", str(store.mount_root), *argv], out, err)
    return rc, err.getvalue()


def test_cli_limit_options_reach_the_store(make_store, tmp_path: Path) -> None:
    from tests.fixtures.images import build_image, write_layout

    built = build_image([tar_bytes([f(f"l{i}", str(i))]) for i in range(3)])
    lay = write_layout(tmp_path / "lay", built)
    store = make_store()
    rc, err = _cli(store, "import", "-q", "--max-layers", "2", str(lay), "xctest/three:1")
    assert rc == 1 and err.count("\n") == 1 and "max_layers" in err and "3 layers" in err
    rc, err = _cli(store, "import", "-q", "--max-bytes", "12X", str(lay), "xctest/three:1")
    assert rc == 2   # a size that is not one is a usage error
    rc, err = _cli(store, "import", "-q", "--max-bytes", "1M", str(lay), "xctest/three:1")
    assert rc == 0, err


def test_cli_unexpected_error_is_one_line(make_store, monkeypatch: pytest.MonkeyPatch) -> None:
    store = make_store()

    def boom(*a: object, **k: object) -> None:
        raise RuntimeError("a bug\nwith a second line")

    monkeypatch.setattr("zfsimage.store.ImageStore.list_images", boom)
    rc, err = _cli(store, "list")
    assert rc == 70 and err.count("\n") == 1 and "RuntimeError" in err and "Traceback" not in err
