"""Tar archives byte by byte, for headers that ``tarfile`` will not write: out-of-range PAX
numbers, truncated or malformed sparse maps, many and huge extended headers."""

from __future__ import annotations

BLOCK = 512
END = bytes(2 * BLOCK)


def _octal(n: int, width: int) -> bytes:
    return f"{n:0{width - 1}o}".encode() + b"\0"


def header(name: str | bytes, flag: bytes = b"0", size: int = 0, mode: int = 0o644,
           uid: int = 0, gid: int = 0, mtime: int = 1_700_000_000, linkname: str = "",
           gnu: bool = False, patch: dict[int, bytes] | None = None) -> bytes:
    raw = name.encode() if isinstance(name, str) else name
    b = bytearray(BLOCK)
    b[0:len(raw[:100])] = raw[:100]
    b[100:108] = _octal(mode, 8)
    b[108:116] = _octal(uid, 8)
    b[116:124] = _octal(gid, 8)
    b[124:136] = _octal(size, 12)
    b[136:148] = _octal(mtime, 12)
    b[156:157] = flag
    ln = linkname.encode()[:100]
    b[157:157 + len(ln)] = ln
    b[257:265] = b"ustar  \0" if gnu else b"ustar\x0000"
    for off, val in (patch or {}).items():
        b[off:off + len(val)] = val
    b[148:156] = b" " * 8
    b[148:156] = f"{sum(b):06o}".encode() + b"\0 "
    return bytes(b)


def pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


def record(key: str, value: str | bytes) -> bytes:
    v = value.encode() if isinstance(value, str) else value
    body = b" " + key.encode() + b"=" + v + b"\n"
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n = len(str(n)) + len(body)
    return str(n).encode() + body


def pax(records: list[tuple[str, str | bytes]], flag: bytes = b"x",
        name: str = "PaxHeader") -> bytes:
    data = b"".join(record(k, v) for k, v in records)
    return header(name, flag, len(data)) + pad(data)


def member(name: str, data: bytes = b"", **kw: object) -> bytes:
    return header(name, size=len(data), **kw) + pad(data)  # type: ignore[arg-type]


def old_gnu_sparse(name: str, regions: list[tuple[int, int]], realsize: int,
                   stored: bytes, extended: list[list[tuple[int, int]]] | None = None,
                   truncate_ext: bool = False, **kw: int) -> bytes:
    """A GNU 'S' member: four regions in the header, more in extension blocks."""
    patch: dict[int, bytes] = {}
    for i, (off, n) in enumerate(regions[:4]):
        patch[386 + i * 24] = _octal(off, 12)
        patch[386 + i * 24 + 12] = _octal(n, 12)
    patch[482] = b"\x01" if extended else b"\0"
    patch[483] = _octal(realsize, 12)
    out = header(name, b"S", len(stored), gnu=True, patch=patch, **kw)  # type: ignore[arg-type]
    for j, ext in enumerate(extended or []):
        blk = bytearray(BLOCK)
        for i, (off, n) in enumerate(ext[:21]):
            blk[i * 24:i * 24 + 12] = _octal(off, 12)
            blk[i * 24 + 12:i * 24 + 24] = _octal(n, 12)
        blk[504] = 1 if j + 1 < len(extended or []) or truncate_ext else 0
        out += bytes(blk)
    if truncate_ext:
        return out
    return out + pad(stored)
