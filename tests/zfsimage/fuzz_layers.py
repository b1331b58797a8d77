"""The fuzzer's grammar of hostile layer entries (Hypothesis strategies), their rendering to
tar bytes, and the comparison of a real tree with the reference model (oci_model.py)."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from hypothesis import strategies as st

from tests.zfsimage import rawtar
from tests.zfsimage.oci_model import Entry, Node

# Half the stacks draw from the benign lists only (so layers get through and the semantics are
# exercised), half add the hostile ones (refusals, limits, escapes).
COMPS = ["a", "b", "c", "al", "dd", "é", "sp ace"]
HOSTILE_COMPS = [".", "..", "x" * 255, "y" * 256, "n\nl", "\x1b[1m"]
WH_COMPS = [".wh.a", ".wh.b", ".wh.al", ".wh.c", ".wh.dd", ".wh..wh..opq"]
HOSTILE_WH = [".wh.", ".wh..", ".wh..wh.aufs"]
TARGETS = ["a", "b", "a/b", "/a", "/", "..", "../..", "../../../outside", "/outside/canary",
           "al", "a/../b", "c/", "al/al", "/al/b", "dd"]
HOSTILE_TARGETS = ["x" * 4096, "", "a/" * 60 + "x"]
MODES = [0o755, 0o644, 0o700, 0o000, 0o4755, 0o1777, 0o2750, 0o777]
IDS = [0, 1000, 65534]


@dataclass(frozen=True)
class Spec:
    """An entry plus how it is rendered (the hostile extensions)."""

    entry: Entry
    fmt: str = "pax"                   # pax | gnu | ustar | sparse (old GNU, a hole inside)
    pax: dict[str, str] = field(default_factory=dict)
    raw_pax: tuple[tuple[str, str], ...] = ()   # records written before the header by hand


@st.composite
def names(draw: st.DrawFn, hostile: bool = False) -> str:
    pool = COMPS + HOSTILE_COMPS if hostile else COMPS
    comps = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3))
    if draw(st.integers(0, 3)) == 0:
        comps.append(draw(st.sampled_from(WH_COMPS + HOSTILE_WH if hostile else WH_COMPS)))
    prefix = draw(st.sampled_from(["", "", "", "/", "./", "//"]))
    suffix = draw(st.sampled_from(["", "", "", "/"]))
    return prefix + "/".join(comps) + suffix


@st.composite
def specs(draw: st.DrawFn, hostile: bool = False) -> Spec:
    kind = draw(st.sampled_from(["dir", "dir", "reg", "reg", "reg", "sym", "lnk", "fifo",
                                 "chr"]))
    name = draw(names(hostile))
    link = ""
    if kind == "sym":
        link = draw(st.one_of(st.sampled_from(TARGETS + HOSTILE_TARGETS if hostile
                                              else TARGETS), names(hostile)))
    elif kind == "lnk":
        link = draw(st.one_of(st.sampled_from(["a", "b", "al", "a/b", "/a"]), names(hostile)))
    e = Entry(name=name, kind=kind, mode=draw(st.sampled_from(MODES)),
              uid=draw(st.sampled_from(IDS)), gid=draw(st.sampled_from(IDS)),
              data=draw(st.binary(max_size=40)) if kind == "reg" else b"", link=link,
              mtime=draw(st.sampled_from([0, 1_700_000_000, 2**33])))
    fmt = draw(st.sampled_from(["pax", "pax", "gnu", "ustar", "sparse"]))
    if fmt == "sparse":
        if kind != "reg" or len(name.encode()) > 100 or not 0 <= e.mtime < 8**11:
            fmt = "pax"
        else:   # the file holds a hole of 100 bytes in the middle and 7 at the end
            h = len(e.data) // 2
            e = Entry(e.name, "reg", e.mode, e.uid, e.gid,
                      e.data[:h] + bytes(100) + e.data[h:] + bytes(7), mtime=e.mtime)
    pax: dict[str, str] = {}
    extra = draw(st.integers(0, 7))
    if extra == 0:
        pax["comment"] = "c" * draw(st.sampled_from([1, 5000, 70_000]))
    elif extra == 1:
        pax["SCHILY.xattr.user.k"] = draw(st.sampled_from(["v", "w" * 70_000]))
    elif extra == 2:
        pax["SCHILY.xattr.security.capability"] = "\x01bad"
    raw: tuple[tuple[str, str], ...] = ()
    bad = draw(st.integers(0, 30)) if hostile else -1
    if bad == 0:
        raw = (("uid", str(2**32)),)
    elif bad == 1:
        raw = (("mtime", "nan"),)
    elif bad == 2:
        raw = (("size", "-1"),)
    return Spec(e, fmt, pax, raw)


@st.composite
def layers(draw: st.DrawFn) -> tuple[list[list[Spec]], list[bool]]:
    hostile = draw(st.booleans())
    stack = draw(st.lists(st.lists(specs(hostile), min_size=1, max_size=12), min_size=1,
                          max_size=3))
    truncate = [hostile and draw(st.integers(0, 8)) == 0 for _ in stack]
    return stack, truncate


_TYPES = {"dir": tarfile.DIRTYPE, "reg": tarfile.REGTYPE, "sym": tarfile.SYMTYPE,
          "lnk": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE, "chr": tarfile.CHRTYPE}
_FORMATS = {"pax": tarfile.PAX_FORMAT, "gnu": tarfile.GNU_FORMAT, "ustar": tarfile.USTAR_FORMAT}


def _sparse(s: Spec) -> bytes:
    e = s.entry
    n = len(e.data) - 107
    h = n // 2
    stored = e.data[:h] + e.data[h + 100:h + 100 + n - h]
    return rawtar.old_gnu_sparse(e.name, [(0, h), (h + 100, n - h)], len(e.data), stored,
                                 mode=e.mode, uid=e.uid, gid=e.gid, mtime=e.mtime)


def render_one(s: Spec) -> bytes | None:
    """Tar bytes of one entry, or None when ``tarfile`` cannot write it in that format."""
    e = s.entry
    if s.fmt == "sparse":
        return (rawtar.pax(list(s.raw_pax)) if s.raw_pax else b"") + _sparse(s)
    ti = tarfile.TarInfo(e.name)
    ti.type = _TYPES[e.kind]
    ti.mode, ti.uid, ti.gid, ti.mtime = e.mode, e.uid, e.gid, e.mtime
    ti.linkname = e.link
    ti.size = len(e.data)
    ti.devmajor, ti.devminor = 1, 3
    # pax: the bad records go in tarfile's own extended header (which has priority over the
    # fields); other formats: in a header of their own before the member's
    ti.pax_headers = {**s.pax, **dict(s.raw_pax)} if s.fmt == "pax" else {}
    try:
        head = ti.tobuf(_FORMATS[s.fmt], "utf-8", "surrogateescape")
    except ValueError:
        return None
    pre = rawtar.pax(list(s.raw_pax)) if s.raw_pax and s.fmt != "pax" else b""
    return pre + head + rawtar.pad(e.data)


def render(layer: list[Spec], truncate: bool) -> tuple[bytes, list[Spec], bool]:
    """-> (archive, the specs actually written, whether it was cut inside a member)."""
    out = io.BytesIO()
    kept = []
    for s in layer:
        b = render_one(s)
        if b is None:
            continue
        out.write(b)
        kept.append(s)
    data = out.getvalue()
    last = kept[-1].entry if kept else None
    if truncate and last is not None and last.kind == "reg" and len(last.data) > 1:
        return data[:len(data) - rawtar.BLOCK * (-(-len(last.data) // rawtar.BLOCK))
                    + len(last.data) // 2], kept, True
    return data + rawtar.END, kept, False


def refused_by_header(s: Spec) -> bool:
    """Headers the reader must refuse before the model sees the entry."""
    return bool(s.raw_pax)


def real_tree(root: Path) -> dict[tuple[str, ...], Node]:
    out: dict[tuple[str, ...], Node] = {}
    todo: list[tuple[str, ...]] = [()]
    while todo:
        p = todo.pop()
        full = root.joinpath(*p) if p else root
        st_ = os.lstat(full)
        mode = stat.S_IMODE(st_.st_mode)
        if stat.S_ISDIR(st_.st_mode):
            out[p] = Node("dir", mode, st_.st_uid, st_.st_gid)
            todo += [(*p, n) for n in os.listdir(full)]
        elif stat.S_ISREG(st_.st_mode):
            out[p] = Node("reg", mode, st_.st_uid, st_.st_gid, full.read_bytes(),
                          mtime=int(st_.st_mtime))
        elif stat.S_ISLNK(st_.st_mode):
            out[p] = Node("sym", 0o777, st_.st_uid, st_.st_gid, target=os.readlink(full),
                          mtime=int(st_.st_mtime))
        elif stat.S_ISFIFO(st_.st_mode):
            out[p] = Node("fifo", mode, st_.st_uid, st_.st_gid)
        else:
            out[p] = Node("other", mode)
    out[()] = Node("dir")   # the root's own metadata is the caller's
    return out


_TIME_MAX = 2**31 - 1


def _bounded(n: Node) -> Node:
    """A file system that cannot store a time gets it clamped (zfsimage.rootfs.set_mtime)."""
    if n.mtime is not None and n.mtime > _TIME_MAX:
        return replace(n, mtime=_TIME_MAX)
    return n


def model_view(nodes: dict[tuple[str, ...], Node]) -> dict[tuple[str, ...], Node]:
    out = {p: _bounded(n) for p, n in nodes.items()}
    out[()] = Node("dir")
    return out


def real_view(root: Path) -> dict[tuple[str, ...], Node]:
    return {p: _bounded(n) for p, n in real_tree(root).items()}
