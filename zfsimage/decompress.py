"""Decompression of layer blobs (gzip, zstd, none) and the hashing, size-capped read-through
every layer's bytes pass (the DiffID is the SHA-256 of the decompressed stream)."""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

from zfsimage.errors import CorruptLayer, LimitExceeded

_COPY_CHUNK = 1024 * 1024


class Limited:
    """Read-through wrapper that hashes every byte and enforces the uncompressed limit."""

    def __init__(self, raw: Any, limit: int, what: str, limit_name: str = "max_bytes") -> None:
        self.raw = raw
        self.limit_name = limit_name
        self.limit = limit
        self.what = what
        self.count = 0
        self.h = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = _COPY_CHUNK
        try:
            data: bytes = self.raw.read(n)
        except (OSError, EOFError, zlib.error, zstandard.ZstdError) as exc:
            raise CorruptLayer(f"{self.what} cannot be decompressed: {exc}") from exc
        self.count += len(data)
        if self.count > self.limit:
            raise LimitExceeded(f"{self.what} expands to more than {self.limit} bytes "
                                f"({self.limit_name}); a decompression bomb, or raise the "
                                "limit", self.limit_name)
        self.h.update(data)
        return data

    def drain(self) -> None:
        while self.read(_COPY_CHUNK):
            pass


class Gunzip:
    """Multi-member gzip reader on zlib with 1 MiB reads (GzipFile reads in small pieces)."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.d = zlib.decompressobj(wbits=31)
        self.buf = bytearray()
        self.pending = b""
        self.in_member = False
        self.seen = False
        self.eof = False

    def _input(self) -> bytes:
        if self.d.unconsumed_tail:
            return self.d.unconsumed_tail
        if self.pending:
            data, self.pending = self.pending, b""
            return data
        return self.f.read(_COPY_CHUNK)

    def read(self, n: int) -> bytes:
        while len(self.buf) < n and not self.eof:
            data = self._input()
            if not data:
                if self.in_member or not self.seen:
                    raise EOFError("gzip stream ended before the end-of-stream marker")
                self.eof = True
                break
            if not self.in_member:
                if not data.strip(b"\0"):
                    continue  # zero padding after the last member, as gzip(1) tolerates
                if data[:1] != b"\x1f" and not self.pending:
                    raise EOFError("trailing garbage after the gzip stream")
            self.in_member = True
            self.seen = True
            self.buf += self.d.decompress(data, max(n, _COPY_CHUNK))
            if self.d.eof:
                self.pending = self.d.unused_data
                self.d = zlib.decompressobj(wbits=31)
                self.in_member = False
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


def decompressor(f: BinaryIO, compression: str) -> Any:
    if compression == "gzip":
        return Gunzip(f)
    if compression == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True,
                                                          read_size=_COPY_CHUNK)
    if compression == "none":
        return f
    raise CorruptLayer(f"unsupported layer compression {compression!r}")


def sniff_compression(path: Path) -> str:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic[:2] == b"\x1f\x8b":
        return "gzip"
    if magic == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return "none"
