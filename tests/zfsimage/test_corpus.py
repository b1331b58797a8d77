"""Malicious-layer corpus (OCI image-spec layer.md: changesets, whiteouts), built in code.

Each case applies one or more layers to ``root`` inside a sandbox and ends in a clear error or a
neutralised entry; in every case the test asserts that nothing outside the root changed: the
sandbox around the root, the temp dir, ``/`` and ``/etc`` are snapshotted before and compared after.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import zstandard

from tests.fixtures.images import E, compress, d, f, hard, sym, tar_bytes
from tests.zfsimage.hostile import sandbox_snapshot
from zfsimage.errors import DigestMismatch, UnsafeLayer
from zfsimage.extract import LayerLimits, apply_layer, split_path

PID = os.getpid()
PWN = f"xctest-{PID}-pwned"
OUT = "__OUT__"            # replaced by the absolute path of the sandbox's outside dir

Layer = list[E] | bytes   # entries, or a ready (compressed) blob


@dataclass(frozen=True)
class Case:
    id: str
    layers: tuple[Layer, ...]
    error: type[Exception] | None = None
    check: Callable[[Path, Path], None] | None = None   # (root, outside)
    limits: LayerLimits = field(default_factory=LayerLimits)
    compression: str = "gzip"
    diff_id: str | None = "auto"


def _fix(e: E, out: Path) -> E:
    return E(e.name.replace(OUT, str(out)), e.type, e.data, e.mode, e.uid, e.gid,
             e.linkname.replace(OUT, str(out)), e.mtime,
             {k: v.replace(OUT, str(out)) for k, v in e.pax.items()}, e.devmajor, e.devminor,
             e.uname)


def _host_state(extra: list[Path]) -> tuple[object, ...]:
    """Host paths a traversal would hit: no PWN-named entry anywhere, /etc/passwd unchanged."""
    hits = []
    for top in [Path("/"), Path("/tmp"), Path("/etc"), Path("/etc/cron.d"), *extra]:
        with contextlib.suppress(OSError):
            hits += [str(top / n) for n in os.listdir(top) if PWN in n]
    return (tuple(hits), hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest())


def exists(rel: str) -> Callable[[Path, Path], None]:
    def chk(root: Path, out: Path) -> None:
        assert os.path.lexists(root / rel.replace(OUT, str(out)).lstrip("/")), rel
    return chk


def gone(rel: str) -> Callable[[Path, Path], None]:
    def chk(root: Path, out: Path) -> None:
        assert not os.path.lexists(root / rel), rel
    return chk


def all_of(*cs: Callable[[Path, Path], None]) -> Callable[[Path, Path], None]:
    def chk(root: Path, out: Path) -> None:
        for c in cs:
            c(root, out)
    return chk


def _content(rel: str, data: bytes) -> Callable[[Path, Path], None]:
    def chk(root: Path, out: Path) -> None:
        assert (root / rel).read_bytes() == data
    return chk


def _gz_truncated() -> bytes:
    return gzip.compress(tar_bytes([f("a", b"x" * 100000)]))[:-300]


def _gz_bad_crc() -> bytes:
    b = bytearray(gzip.compress(tar_bytes([f("a", "hello")])))
    b[-8] ^= 0xFF
    return bytes(b)


def _gz_multi() -> bytes:
    raw = tar_bytes([f("m1", "one"), f("m2", "two")])
    return gzip.compress(raw[:1024]) + gzip.compress(raw[1024:])


def _zstd_skippable() -> bytes:
    raw = tar_bytes([f("z", "zed")])
    skip = b"\x50\x2a\x4d\x18" + (8).to_bytes(4, "little") + b"SKIPSKIP"
    c = zstandard.ZstdCompressor()
    return skip + c.compress(raw[:512]) + c.compress(raw[512:])


def _huge_size_header() -> bytes:
    ti = tarfile.TarInfo("big")
    ti.size = 2**40
    hdr = ti.tobuf(tarfile.GNU_FORMAT)   # base-256 size field
    return gzip.compress(hdr + b"\0" * 4096)


SMALL = LayerLimits(max_bytes=8 * 1024 * 1024, max_entries=200, max_depth=64,
                    max_meta_size=64 * 1024, max_link_len=1024)

CASES = [
    # path traversal
    Case("dotdot-deep", ([f("../../../../outside/" + PWN, "x")],), UnsafeLayer),
    Case("dot-dotdot", ([f("./../" + PWN, "x")],), UnsafeLayer),
    Case("a-dotdot-dotdot", ([f("a/../../" + PWN, "x")],), UnsafeLayer),
    Case("ab-dotdot3", ([f("a/b/../../../" + PWN, "x")],), UnsafeLayer),
    Case("absolute-name", ([f(OUT + "/" + PWN, "x")],), check=exists(OUT + "/" + PWN)),
    Case("double-slash", ([f("//outside/" + PWN, "x")],), check=exists("outside/" + PWN)),
    Case("pax-path-smuggle", ([E("harmless", data=b"x", pax={"path": "../../" + PWN})],),
         UnsafeLayer),
    Case("long-component", ([f("a" * 300, "x")],), UnsafeLayer),
    Case("long-path", ([f("/".join(["abcdefghij"] * 500), "x")],), UnsafeLayer),
    Case("backslashes-literal", ([f("..\\..\\" + PWN, "x")],), check=exists("..\\..\\" + PWN)),
    Case("symlink-named-dot", ([sym(".", "/")],), UnsafeLayer),
    Case("symlink-named-slash", ([sym("/", OUT)],), UnsafeLayer),
    Case("file-named-dot", ([f(".", "x")],), UnsafeLayer),
    Case("dir-named-dot-ok", ([d("./"), f("ok", "1")],), check=exists("ok")),
    # symlink escapes
    Case("symlink-abs-same-layer", ([sym("link", OUT), f("link/" + PWN, "x")],),
         check=exists(OUT + "/" + PWN)),
    Case("symlink-two-layers-cve-2025-45582",
         ([sym("x", "../../../../../../..")], [f("x/etc/cron.d/" + PWN, "x")]),
         check=exists("etc/cron.d/" + PWN)),
    Case("relative-chain", ([sym("a", "b"), sym("b", "c"), sym("c", "../../.."),
                             f("a/" + PWN, "x")],), check=exists(PWN)),
    Case("symlink-loop", ([sym("a", "a"), f("a/" + PWN, "x")],), UnsafeLayer),
    Case("symlink-loop-pair", ([sym("a", "b"), sym("b", "a"), f("a/x", "x")],), UnsafeLayer),
    Case("abs-in-root-link-kept", ([d("bin"), f("bin/sh", "sh"), d("usr"), d("usr/bin"),
                                    sym("usr/bin/sh", "/bin/sh")],),
         check=lambda r, o: os.readlink(r / "usr/bin/sh") == "/bin/sh" or pytest.fail("link")),
    Case("write-through-in-root-link", ([d("usr"), d("usr/bin"), sym("bin", "usr/bin"),
                                         f("bin/ls", "ls")],), check=exists("usr/bin/ls")),
    Case("dir-replaced-by-root-link", ([d("dir"), f("dir/a", "a")],
                                       [sym("dir", "/"), f("dir/" + PWN, "x")]),
         check=exists(PWN)),
    Case("empty-symlink-target", ([sym("e", ""), f("e/x", "x")],), UnsafeLayer),
    Case("file-over-outside-symlink", ([sym("s", OUT + "/sentinel")], [f("s", "new")]),
         check=_content("s", b"new")),
    Case("dir-over-outside-symlink-chmod", ([sym("d", OUT)], [d("d", 0o777)]),
         check=lambda r, o: stat.S_ISDIR(os.lstat(r / "d").st_mode) or pytest.fail("dir")),
    # whiteouts
    Case("bare-whiteout", ([f(".wh.")],), UnsafeLayer),
    Case("whiteout-dotdot", ([d("a"), f("a/.wh...")],), UnsafeLayer),
    Case("whiteout-parent-escape", ([f("../.wh.x")],), UnsafeLayer),
    Case("whiteout-absolute-in-root", ([d("etc"), f("etc/passwd", "p")], [f("/.wh.etc")]),
         check=gone("etc")),
    Case("whiteout-through-abs-link", ([sym("x", OUT)], [f("x/.wh.sentinel")]),
         check=exists("x")),
    Case("whiteout-through-rel-link", ([sym("x", "../../../../../../../" + str(Path("/tmp")))],
                                       [f("x/.wh.sentinel")]), check=exists("x")),
    Case("opaque-through-root-link", ([f("keep", "k"), sym("x", "/")], [f("x/.wh..wh..opq")]),
         check=gone("keep")),
    Case("opaque-after-new-sibling", ([d("a"), f("a/old", "o")],
                                      [d("a"), f("a/new", "n"), f("a/.wh..wh..opq")]),
         check=all_of(exists("a/new"), gone("a/old"))),
    Case("opaque-hides-lower-subdirs", ([d("a"), d("a/s"), f("a/s/old", "o")],
                                        [f("a/.wh..wh..opq"), d("a/s"), f("a/s/new", "n")]),
         check=all_of(exists("a/s/new"), gone("a/s/old"))),
    Case("whiteout-same-layer-kept", ([f("a", "lower")], [f("b", "b"), f(".wh.b"),
                                                          f(".wh.missing")]),
         check=all_of(exists("b"), exists("a"))),
    Case("whiteout-with-data", ([f("a", "x")], [f(".wh.a", "data!")]), check=gone("a")),
    # hardlinks
    Case("hardlink-dotdot", ([hard("h", "../../etc/passwd")],), UnsafeLayer),
    Case("hardlink-absolute-missing", ([hard("h", "/etc/master.passwd")],), UnsafeLayer),
    Case("hardlink-to-outside-symlink", ([sym("s", OUT + "/sentinel")], [hard("h", "s")]),
         check=lambda r, o: os.path.islink(r / "h") or pytest.fail("not a link to the link")),
    Case("hardlink-to-dir", ([d("dd"), hard("h", "dd")],), UnsafeLayer),
    Case("hardlink-forward", ([hard("h", "later"), f("later", "x")],), UnsafeLayer),
    Case("hardlink-with-data", ([f("t", "t"), E("h", tarfile.LNKTYPE, linkname="t")],),
         check=lambda r, o: os.stat(r / "h").st_ino == os.stat(r / "t").st_ino
         or pytest.fail("ino")),
    Case("hardlink-then-modify", ([f("t1", "orig"), hard("t2", "t1")], [f("t1", "changed")]),
         check=all_of(_content("t2", b"orig"), _content("t1", b"changed"))),
    # metadata and special files
    Case("setuid-kept", ([f("su", "x", 0o4755), f("sg", "x", 0o2755), d("st", 0o1777)],),
         check=lambda r, o: (stat.S_IMODE(os.stat(r / "su").st_mode),
                             stat.S_IMODE(os.stat(r / "sg").st_mode),
                             stat.S_IMODE(os.stat(r / "st").st_mode))
         == (0o4755, 0o2755, 0o1777) or pytest.fail("modes")),
    Case("device-nodes-skipped", ([d("dev"), E("dev/mem", tarfile.CHRTYPE, devmajor=1,
                                                devminor=1),
                                   E("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0),
                                   E("fifo", tarfile.FIFOTYPE, mode=0o600)],),
         check=all_of(gone("dev/mem"), gone("dev/sda"),
                      lambda r, o: stat.S_ISFIFO(os.lstat(r / "fifo").st_mode)
                      or pytest.fail("fifo"))),
    Case("mode-000-dir", ([d("z", 0o000), f("z/inside", "x")],),
         check=lambda r, o: stat.S_IMODE(os.stat(r / "z").st_mode) == 0
         or pytest.fail("mode")),
    Case("numeric-owner-wins", ([f("u", "x", uid=1000, gid=1001, uname="root")],),
         check=lambda r, o: (os.stat(r / "u").st_uid, os.stat(r / "u").st_gid) == (1000, 1001)
         or pytest.fail("owner")),
    Case("xattr-allowlist", ([f("x", "x", pax={"SCHILY.xattr.security.selinux": "evil",
                                               "SCHILY.xattr.user.ok": "1"})],),
         check=lambda r, o: "security.selinux" not in os.listxattr(r / "x")
         or pytest.fail("selinux xattr applied")),
    # bombs and corrupt streams
    Case("gzip-bomb", (gzip.compress(tar_bytes([f("zeros", b"\0" * (32 * 1024 * 1024))]),
                                     compresslevel=1),), UnsafeLayer, limits=SMALL,
         diff_id=None),
    Case("declared-2-40-size", (_huge_size_header(),), UnsafeLayer, limits=SMALL, diff_id=None),
    Case("many-entries", ([f(f"e{i}") for i in range(300)],), UnsafeLayer, limits=SMALL),
    Case("deep-dirs", ([f("/".join(["d"] * 100) + "/x")],), UnsafeLayer, limits=SMALL),
    Case("huge-pax-record", ([f("p", "x", pax={"comment": "A" * (200 * 1024)})],),
         UnsafeLayer, limits=SMALL),
    Case("huge-linkname", ([sym("l", "a" * 2000)],), UnsafeLayer, limits=SMALL),
    Case("truncated-gzip", (_gz_truncated(),), UnsafeLayer, diff_id=None),
    Case("bad-gzip-crc", (_gz_bad_crc(),), UnsafeLayer, diff_id=None),
    Case("multi-member-gzip-valid", (_gz_multi(),), check=all_of(exists("m1"), exists("m2")),
         diff_id=None),
    Case("zstd-skippable-valid", (_zstd_skippable(),), check=exists("z"), compression="zstd",
         diff_id=None),
    Case("wrong-diffid", ([f("a", "x")],), DigestMismatch, diff_id="sha256:" + "0" * 64),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_corpus(case: Case, tmp_path: Path) -> None:
    sandbox = tmp_path / "sandbox"
    blobs = tmp_path / "blobs"
    root = sandbox / "root"
    out = sandbox / "outside"
    for p in (root, out, blobs):
        p.mkdir(parents=True)
    (out / "sentinel").write_text("sentinel")
    (out / "sub").mkdir()
    parents = [tmp_path, tmp_path.parent, tmp_path.parent.parent]
    before, host_before = sandbox_snapshot(sandbox), _host_state(parents)
    err: Exception | None = None
    try:
        for i, layer in enumerate(case.layers):
            comp = case.compression
            if isinstance(layer, bytes):
                blob, raw = layer, None
            else:
                raw = tar_bytes([_fix(e, out) for e in layer])
                blob = compress(raw, comp)
            p = blobs / f"layer{i}"
            p.write_bytes(blob)
            did = case.diff_id
            if did == "auto":
                did = "sha256:" + hashlib.sha256(raw).hexdigest() if raw is not None else None
            apply_layer(p, comp, root, did, case.limits, what=f"layer {i}")
    except (UnsafeLayer, DigestMismatch) as exc:
        err = exc
    assert sandbox_snapshot(sandbox) == before, "something outside the root changed"
    assert _host_state(parents) == host_before, "the host was touched"
    if case.error is not None:
        assert isinstance(err, case.error), f"expected {case.error.__name__}, got {err!r}"
        assert str(err) and "\n" not in str(err)
    else:
        assert err is None, f"unexpected error: {err}"
        if case.check is not None:
            case.check(root, out)


def test_trailing_data_counts_in_diffid(tmp_path: Path) -> None:
    raw = tar_bytes([f("a", "x")], trailing=b"TRAILING GARBAGE" * 10)
    (tmp_path / "root").mkdir()
    p = tmp_path / "l"
    p.write_bytes(compress(raw, "gzip"))
    good = "sha256:" + hashlib.sha256(raw).hexdigest()
    apply_layer(p, "gzip", tmp_path / "root", good)
    without = "sha256:" + hashlib.sha256(raw[:-160]).hexdigest()
    (tmp_path / "root2").mkdir()
    with pytest.raises(DigestMismatch):
        apply_layer(p, "gzip", tmp_path / "root2", without)


@pytest.mark.parametrize("name", ["a\x00b", "", "../x", "a/../../b"])
def test_split_path_refuses(name: str) -> None:
    if name == "":
        assert split_path(name, LayerLimits()) == ()
        return
    with pytest.raises(UnsafeLayer):
        split_path(name, LayerLimits())


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30
