"""A streaming tar reader for layers: one header at a time, nothing kept between members.

Python's ``tarfile`` keeps every member it has read, lets GNU sparse maps, PAX comments and
global headers grow without bound, and ends some malformed headers in exceptions that are not
``TarError``. Layers need less than it offers, so this module reads exactly what the OCI
image-spec's layer format needs (``application/vnd.oci.image.layer.v1.tar``: POSIX ustar and
pax interchange format, plus the GNU long-name and sparse extensions common in images) and
parses each header into a frozen ``Member`` whose fields are already checked: every bound is a
``LayerLimits`` field and every malformed header is one ``CorruptLayer`` line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from zfsimage.errors import CorruptLayer, LimitExceeded
from zfsimage.limits import LayerLimits
from zfsimage.names import quote

BLOCK = 512
_CHUNK = 1024 * 1024
_MAX_ID = 2**32 - 2          # (uid_t)-1 means "unchanged" to chown(2)
_MAX_MTIME = 2**63 // 10**9 - 1   # utime in nanoseconds must fit 64 bits
_TYPES = {b"0": "reg", b"\0": "reg", b"7": "reg", b"1": "lnk", b"2": "sym", b"3": "chr",
          b"4": "blk", b"5": "dir", b"6": "fifo"}
_PAX_RECORD = re.compile(rb"(\d+) ")


class Stream(Protocol):
    def read(self, n: int) -> bytes: ...


@dataclass(frozen=True)
class Member:
    name: str                   # as in the archive (surrogate-escaped), not yet normalised
    kind: str                   # reg | dir | sym | lnk | chr | blk | fifo | other
    typeflag: bytes
    mode: int
    uid: int
    gid: int
    size: int                   # the file's size (sparse: with its holes)
    mtime: int
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    xattrs: tuple[tuple[str, bytes], ...] = ()
    sparse: tuple[tuple[int, int], ...] | None = None   # (offset, length) data regions
    data_size: int = 0          # bytes stored after the header (sparse map included)


def _num(field: bytes, what: str) -> int:
    """A numeric header field: octal (NUL/space padded) or GNU base-256."""
    if field[:1] in (b"\x80", b"\xff"):
        n = int.from_bytes(field[1:], "big")
        return n - (1 << (8 * (len(field) - 1))) if field[:1] == b"\xff" else n
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise CorruptLayer(f"header field {what} is not an octal number: "
                           f"{quote(text.decode('latin-1'))}") from None


def _str(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


_HIGH = bytes(range(128, 256))


def _checksum_ok(block: bytes) -> bool:
    """POSIX sums the header bytes as unsigned, with the checksum field as spaces; some old
    tars summed signed bytes, which tar readers accept too."""
    try:
        stored = _num(block[148:156], "chksum")
    except CorruptLayer:
        return False
    blanked = block[:148] + b" " * 8 + block[156:]
    unsigned = sum(blanked)
    if stored == unsigned:
        return True
    high = len(blanked) - len(blanked.translate(None, _HIGH))
    return stored == unsigned - 256 * high


class TarReader:
    """Iterate members; between two ``next_member`` calls the caller may read the current
    member's data with ``regions``. Unread data is skipped (and still hashed by ``stream``)."""

    def __init__(self, stream: Stream, limits: LayerLimits) -> None:
        self.f = stream
        self.lim = limits
        self.pending = 0               # unread data bytes of the current member, padding incl.
        self.globals: dict[str, str] = {}
        self.meta_total = 0
        self.index = 0                 # 1-based number of the current header
        self._map_used = 0             # data bytes of the current member its sparse map took

    def _read(self, n: int, what: str) -> bytes:
        out = bytearray()
        while len(out) < n:
            data = self.f.read(min(n - len(out), _CHUNK))
            if not data:
                raise CorruptLayer(f"the archive ends inside {what}")
            out += data
        return bytes(out)

    def _skip(self, n: int) -> None:
        while n > 0:
            data = self.f.read(min(n, _CHUNK))
            if not data:
                raise CorruptLayer("the archive ends inside an entry's data")
            n -= len(data)

    @staticmethod
    def _padded(n: int) -> int:
        return -(-n // BLOCK) * BLOCK

    def _meta(self, size: int, what: str) -> bytes:
        """Read a metadata record (PAX header, GNU long name) within both meta limits."""
        if size > self.lim.max_meta_size:
            raise LimitExceeded(f"{what} of {size} bytes is over the limit of "
                                f"{self.lim.max_meta_size} (max_meta_size)", "max_meta_size")
        self.meta_total += size
        if self.meta_total > self.lim.max_meta_total:
            raise LimitExceeded(f"metadata records add up to more than "
                                f"{self.lim.max_meta_total} bytes (max_meta_total)",
                                "max_meta_total")
        data = self._read(self._padded(size), what)
        return data[:size]

    def members(self) -> Iterator[Member]:
        while True:
            m = self.next_member()
            if m is None:
                return
            yield m

    def next_member(self) -> Member | None:
        self._skip(self.pending)
        self.pending = 0
        pax: dict[str, str] = {}
        sparse00: list[tuple[str, str]] = []
        longname: str | None = None
        longlink: str | None = None
        while True:
            block = self.f.read(BLOCK)
            if len(block) < BLOCK:
                block += self._read(BLOCK - len(block), "a header") if block else b""
            if not block and self.index == 0:
                raise CorruptLayer("the archive is empty (not even an end-of-archive block)")
            if not block or block == bytes(BLOCK):
                if pax or longname is not None or longlink is not None:
                    raise CorruptLayer("the archive ends after an extended header")
                return None
            self.index += 1
            if not _checksum_ok(block):
                raise CorruptLayer(f"header {self.index} has a bad checksum (not a tar "
                                   "archive, or corrupt)")
            flag = block[156:157]
            size = _num(block[124:136], "size")
            if size < 0:
                raise CorruptLayer(f"header {self.index} has a negative size")
            if flag in (b"x", b"g", b"X"):
                rec = self._meta(size, "a PAX header")
                parsed = _pax_records(rec)
                if flag == b"g":
                    self.globals.update(_safe_globals(parsed))
                else:
                    for k, v in parsed:
                        if k in ("GNU.sparse.offset", "GNU.sparse.numbytes"):
                            sparse00.append((k, v))
                        else:
                            pax[k] = v
                continue
            if flag in (b"L", b"K"):
                text = self._meta(size, "a GNU long name").split(b"\0", 1)[0]
                val = text.decode("utf-8", "surrogateescape")
                if flag == b"L":
                    longname = val
                else:
                    longlink = val
                continue
            return self._member(block, flag, size, {**self.globals, **pax}, sparse00,
                                longname, longlink)

    def _member(self, block: bytes, flag: bytes, size: int, pax: dict[str, str],
                sparse00: list[tuple[str, str]], longname: str | None,
                longlink: str | None) -> Member:
        name = _str(block[0:100])
        if block[257:265] == b"ustar\x0000" and block[345:500].strip(b"\0"):
            name = _str(block[345:500]) + "/" + name
        name = pax.get("path", longname if longname is not None else name)
        link = pax.get("linkpath", longlink if longlink is not None else _str(block[157:257]))
        kind = _TYPES.get(flag, "other")
        if flag == b"\0" and name.endswith("/"):   # V7 convention for directories
            kind = "dir"
        where = f"entry {quote(name)}"
        uid = _id(pax.get("uid"), block[108:116], "uid", where)
        gid = _id(pax.get("gid"), block[116:124], "gid", where)
        mtime = _mtime(pax.get("mtime"), block[136:148], where)
        if "size" in pax:
            size = _pax_int(pax["size"], "size", where)
        data_size = size if kind in ("reg", "other") or flag == b"S" else 0
        real = size
        regions: tuple[tuple[int, int], ...] | None = None
        if flag == b"S":
            kind = "reg"
            regions, real = self._old_gnu_sparse(block, where)
        elif "GNU.sparse.major" in pax or "GNU.sparse.map" in pax or sparse00:
            regions, real, name = self._pax_sparse(pax, sparse00, size, name, where)
            where = f"entry {quote(name)}"
        self.pending = self._padded(data_size)
        if regions is not None:
            self.pending -= self._map_used
        return Member(name=name, kind=kind, typeflag=flag,
                      mode=_num(block[100:108], "mode") & 0o7777, uid=uid, gid=gid, size=real,
                      mtime=mtime, linkname=link, devmajor=_num(block[329:337], "devmajor"),
                      devminor=_num(block[337:345], "devminor"),
                      xattrs=tuple((k[len("SCHILY.xattr."):], v.encode("utf-8", "surrogateescape"))
                                   for k, v in pax.items() if k.startswith("SCHILY.xattr.")),
                      sparse=regions, data_size=data_size)

    def _check_regions(self, regions: list[tuple[int, int]], real: int, where: str
                       ) -> tuple[tuple[int, int], ...]:
        if len(regions) > self.lim.max_sparse_regions:
            raise LimitExceeded(f"{where} has a sparse map of more than "
                                f"{self.lim.max_sparse_regions} regions (max_sparse_regions)",
                                "max_sparse_regions")
        if real < 0:
            raise CorruptLayer(f"{where} has a negative sparse file size")
        end = 0
        for off, n in regions:
            if off < end or n < 0 or off + n > real:
                raise CorruptLayer(f"{where} has a malformed sparse map")
            end = off + n
        return tuple(regions)

    def _old_gnu_sparse(self, block: bytes, where: str) -> tuple[tuple[tuple[int, int], ...],
                                                                 int]:
        self._map_used = 0
        regions: list[tuple[int, int]] = []

        def take(buf: bytes, count: int) -> None:
            for i in range(count):
                off = _num(buf[i * 24:i * 24 + 12], "sparse offset")
                n = _num(buf[i * 24 + 12:i * 24 + 24], "sparse length")
                if off or n:
                    regions.append((off, n))
                if len(regions) > self.lim.max_sparse_regions:
                    self._check_regions(regions, 2**63, where)

        take(block[386:482], 4)
        extended = block[482] != 0
        real = _num(block[483:495], "sparse real size")
        while extended:
            ext = self._read(BLOCK, f"the sparse map of {where}")
            take(ext[:504], 21)
            extended = ext[504] != 0
        return self._check_regions(regions, real, where), real

    def _pax_sparse(self, pax: dict[str, str], sparse00: list[tuple[str, str]], size: int,
                    name: str, where: str
                    ) -> tuple[tuple[tuple[int, int], ...], int, str]:
        self._map_used = 0
        name = pax.get("GNU.sparse.name", name)
        real = _pax_int(pax.get("GNU.sparse.realsize", pax.get("GNU.sparse.size", str(size))),
                        "GNU.sparse.realsize", where)
        nums: list[int] = []
        if pax.get("GNU.sparse.major") == "1":
            nums = self._sparse_10(size, where)
        elif "GNU.sparse.map" in pax:
            raw = pax["GNU.sparse.map"]
            nums = [_pax_int(x, "GNU.sparse.map", where) for x in raw.split(",")] if raw else []
        else:
            nums = [_pax_int(v, k, where) for k, v in sparse00]
        if len(nums) % 2:
            raise CorruptLayer(f"{where} has a malformed sparse map (odd number of values)")
        pairs = list(zip(nums[::2], nums[1::2], strict=True))
        return self._check_regions(pairs, real, where), real, name

    def _sparse_10(self, size: int, where: str) -> list[int]:
        """GNU sparse 1.0: decimal lines at the start of the data, padded to a block."""
        buf = b""
        used = 0
        nums: list[int] = []
        count = -1
        while count < 0 or len(nums) < 2 * count:
            if b"\n" not in buf:
                if used + BLOCK > size or len(buf) > 64:
                    raise CorruptLayer(f"{where} has a truncated or malformed sparse map")
                buf += self._read(BLOCK, f"the sparse map of {where}")
                used += BLOCK
                continue
            line, buf = buf.split(b"\n", 1)
            val = _pax_int(line.decode("latin-1"), "sparse map", where)
            if count < 0:
                count = val
                if count > self.lim.max_sparse_regions:
                    self._check_regions([(0, 0)] * (count), 2**63, where)
            else:
                nums.append(val)
        self._map_used = used
        return nums

    def regions(self, m: Member) -> Iterator[tuple[int, bytes]]:
        """The member's data as (file offset, bytes) pieces, in order; holes are not yielded."""
        spans = m.sparse if m.sparse is not None else ((0, m.size),)
        stored = m.data_size - self._map_used if m.sparse is not None else m.data_size
        budget = stored
        for off, n in spans:
            if n > budget:
                raise CorruptLayer(f"entry {quote(m.name)}: its sparse map names more data "
                                   "than the entry holds")
            pos = off
            left = n
            while left > 0:
                data = self.f.read(min(left, _CHUNK))
                if not data:
                    raise CorruptLayer(f"the archive ends inside entry {quote(m.name)}")
                yield pos, data
                pos += len(data)
                left -= len(data)
                self.pending -= len(data)
            budget -= n


def _pax_records(buf: bytes) -> list[tuple[str, str]]:
    out = []
    pos = 0
    while pos < len(buf):
        if buf[pos:].strip(b"\0") == b"":
            break
        m = _PAX_RECORD.match(buf, pos)
        if not m:
            raise CorruptLayer("a PAX header record has no length")
        length = int(m.group(1))
        rec = buf[pos:pos + length]
        if length <= len(m.group(0)) or len(rec) < length or not rec.endswith(b"\n") \
                or b"=" not in rec:
            raise CorruptLayer("a PAX header record is malformed")
        key, _, value = rec[len(m.group(0)):-1].partition(b"=")
        out.append((key.decode("utf-8", "surrogateescape"),
                    value.decode("utf-8", "surrogateescape")))
        pos += length
    return out


def _safe_globals(records: list[tuple[str, str]]) -> dict[str, str]:
    """Global PAX records that mean the same for every member (never path, size, link)."""
    return {k: v for k, v in records
            if k in ("uid", "gid", "mtime", "uname", "gname") or k.startswith("SCHILY.xattr.")}


def _pax_int(text: str, what: str, where: str) -> int:
    if not re.fullmatch(r"\d{1,19}", text.strip()):
        raise CorruptLayer(f"{where}: {what} {quote(text[:40])} is not a number in range")
    return int(text)


def _id(pax: str | None, field: bytes, what: str, where: str) -> int:
    val = _pax_int(pax, what, where) if pax is not None else _num(field, what)
    if not 0 <= val <= _MAX_ID:
        raise CorruptLayer(f"{where}: {what} {val} is out of range (0 to {_MAX_ID})")
    return val


def _mtime(pax: str | None, field: bytes, where: str) -> int:
    if pax is None:
        val: float = _num(field, "mtime")
    else:
        try:
            val = float(pax)
        except ValueError:
            val = math.nan
        if not math.isfinite(val) or not re.fullmatch(r"-?\d+(\.\d*)?", pax.strip()):
            raise CorruptLayer(f"{where}: mtime {quote(pax[:40])} is not a number")
    if abs(val) > _MAX_MTIME:
        raise CorruptLayer(f"{where}: mtime {val:.0f} is out of range")
    return math.floor(val)
