"""Secure, streaming application of one OCI layer onto a directory tree.

Python's ``tarfile`` is used only to parse; every entry is applied here. All paths are resolved
inside the root with directory fds: each component is opened ``O_NOFOLLOW|O_DIRECTORY`` from its
parent's fd, and a symlink met on the way is evaluated as if the root were ``/`` (absolute targets
restart at the root, ``..`` clamps at it), so no entry name, link target or link already in the tree
can make us create, change or remove anything outside the root. Leaves are created with
``O_EXCL|O_NOFOLLOW`` or the ``*at`` calls with ``follow_symlinks=False``.

Whiteouts follow the OCI layer spec: ``.wh.X`` removes X from lower layers only (entries this layer
already unpacked are kept); ``.wh..wh..opq`` hides every lower entry of its directory wherever it
sits in the archive (containerd-style: remove what this layer has not unpacked). Directory modes and
mtimes are applied after all entries, so a mode-0 directory can still be filled. The DiffID is
computed over the whole decompressed stream, trailing bytes after the tar EOF included.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import sys
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

from zfsimage.errors import DigestMismatch, UnsafeLayer

WH_PREFIX = ".wh."
WH_OPAQUE = ".wh..wh..opq"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_HOPS = 40
_COPY_CHUNK = 1024 * 1024
# tarfile's stream buffer re-slices its whole buffer on every read: keep it small
_TAR_BUFSIZE = 32 * 1024
_XATTR_ALLOWED = ("user.", "security.capability")


class CorruptLayer(UnsafeLayer):
    """The layer is not a valid (compressed) tar stream."""


@dataclass(frozen=True)
class LayerLimits:
    max_bytes: int = 64 * 1024**3          # uncompressed bytes per layer
    max_entries: int = 1_000_000
    max_file_size: int = 32 * 1024**3
    max_path_len: int = 4096
    max_component_len: int = 255
    max_depth: int = 256
    max_link_len: int = 4096
    max_meta_size: int = 1024 * 1024      # PAX / GNU long-name records
    device_nodes: str = "skip"            # "skip" or "create"


@dataclass
class ExtractStats:
    entries: int = 0
    uncompressed_bytes: int = 0
    file_bytes: int = 0
    neutralised: list[str] = field(default_factory=list)


class _Limited:
    """Read-through wrapper that hashes every byte and enforces the uncompressed limit."""

    def __init__(self, raw: Any, limit: int, what: str) -> None:
        self.raw = raw
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
            raise UnsafeLayer(f"{self.what} expands to more than {self.limit} bytes; "
                              "refusing it (decompression bomb or limit too low)")
        self.h.update(data)
        return data

    def drain(self) -> None:
        while self.read(_COPY_CHUNK):
            pass


class _Gunzip:
    """Multi-member gzip reader on zlib with 1 MiB reads (GzipFile reads in small pieces)."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.d = zlib.decompressobj(wbits=31)
        self.buf = bytearray()
        self.pending = b""
        self.in_member = False
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
                if self.in_member:
                    raise EOFError("gzip stream ended before the end-of-stream marker")
                self.eof = True
                break
            if not self.in_member:
                if not data.strip(b"\0"):
                    continue  # zero padding after the last member, as gzip(1) tolerates
                if data[:1] != b"\x1f" and not self.pending:
                    raise EOFError("trailing garbage after the gzip stream")
            self.in_member = True
            self.buf += self.d.decompress(data, max(n, _COPY_CHUNK))
            if self.d.eof:
                self.pending = self.d.unused_data
                self.d = zlib.decompressobj(wbits=31)
                self.in_member = False
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


def _decompressor(f: BinaryIO, compression: str) -> Any:
    if compression == "gzip":
        return _Gunzip(f)
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


def _guarded_info(limit: int) -> type[tarfile.TarInfo]:
    class GuardedInfo(tarfile.TarInfo):
        """Refuse PAX/GNU long-name records over the limit before tarfile buffers them."""

        def _proc_pax(self, tf: tarfile.TarFile) -> tarfile.TarInfo:
            if self.size > limit:
                raise UnsafeLayer(f"layer has a {self.size}-byte PAX header; the limit is {limit}")
            return super()._proc_pax(tf)  # type: ignore[misc, no-any-return]

        def _proc_gnulong(self, tf: tarfile.TarFile) -> tarfile.TarInfo:
            if self.size > limit:
                raise UnsafeLayer(f"layer has a {self.size}-byte GNU long name; the limit is "
                                  f"{limit}")
            return super()._proc_gnulong(tf)  # type: ignore[misc, no-any-return]

    return GuardedInfo


def split_path(name: str, limits: LayerLimits, what: str = "entry") -> tuple[str, ...]:
    """Normalise an archive path to in-root components; raise UnsafeLayer on bad names.

    A leading ``/`` is stripped (the path is then taken inside the root, as containerd does);
    ``..`` anywhere is refused; backslashes stay literal characters.
    """
    if "\x00" in name:
        raise UnsafeLayer(f"layer {what} name {name[:80]!r} contains a NUL byte")
    if len(name.encode("utf-8", "surrogateescape")) > limits.max_path_len:
        raise UnsafeLayer(f"layer {what} name starting {name[:60]!r} is longer than "
                          f"{limits.max_path_len} bytes")
    comps = tuple(c for c in name.split("/") if c not in ("", "."))
    for c in comps:
        if c == "..":
            raise UnsafeLayer(f"layer {what} {name[:200]!r} contains '..'; refusing path "
                              "traversal")
        if len(c.encode("utf-8", "surrogateescape")) > limits.max_component_len:
            raise UnsafeLayer(f"layer {what} {name[:80]!r} has a component longer than "
                              f"{limits.max_component_len} bytes")
    if len(comps) > limits.max_depth:
        raise UnsafeLayer(f"layer {what} {name[:80]!r} is nested deeper than "
                          f"{limits.max_depth} directories")
    return comps


class RootFS:
    """Directory-fd based, in-root path resolution and mutation below one root directory."""

    def __init__(self, root: Path) -> None:
        self.root_fd = os.open(root, _DIR_FLAGS)
        self._cache: dict[tuple[str, ...], int] = {}
        self._retired: list[int] = []

    def close(self) -> None:
        self.invalidate()
        self.release()
        os.close(self.root_fd)

    def invalidate(self) -> None:
        """Forget resolved directories; called whenever a directory or symlink is removed or a
        symlink is created, since either can change where a path resolves. The fds stay open
        until ``release`` (callers may still hold one for the current entry)."""
        self._retired.extend(self._cache.values())
        self._cache.clear()

    def release(self) -> None:
        for fd in self._retired:
            os.close(fd)
        self._retired.clear()

    def _walk(self, comps: tuple[str, ...], create: bool) -> int | None:
        """Full in-root walk following symlinks as if root were '/'. Returns a new fd."""
        stack: list[int] = [self.root_fd]
        todo = list(reversed(comps))
        hops = 0
        try:
            while todo:
                c = todo.pop()
                if c in ("", "."):
                    continue
                if c == "..":
                    if len(stack) > 1:
                        os.close(stack.pop())
                    continue
                cur = stack[-1]
                try:
                    fd = os.open(c, _DIR_FLAGS, dir_fd=cur)
                except FileNotFoundError:
                    if not create:
                        return None
                    os.mkdir(c, 0o755, dir_fd=cur)
                    fd = os.open(c, _DIR_FLAGS, dir_fd=cur)
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                        raise
                    st = os.stat(c, dir_fd=cur, follow_symlinks=False)
                    if not stat.S_ISLNK(st.st_mode):
                        raise UnsafeLayer(f"path {'/'.join(comps)!r} goes through {c!r}, "
                                          "which is not a directory") from None
                    hops += 1
                    if hops > _MAX_HOPS:
                        raise UnsafeLayer(f"path {'/'.join(comps)!r} meets more than "
                                          f"{_MAX_HOPS} symlinks (a loop?)") from None
                    target = os.readlink(c, dir_fd=cur)
                    if target.startswith("/"):
                        while len(stack) > 1:
                            os.close(stack.pop())
                    todo.extend(reversed(target.split("/")))
                    continue
                stack.append(fd)
            if len(stack) == 1:
                return os.dup(self.root_fd)
            return stack.pop()
        finally:
            for fd in stack[1:]:
                os.close(fd)

    def dir_fd(self, comps: tuple[str, ...], create: bool = True) -> int | None:
        """fd of the directory ``comps`` resolved in-root (cached; do not close it)."""
        if not comps:
            return self.root_fd
        fd = self._cache.get(comps)
        if fd is not None:
            return fd
        parent = self.dir_fd(comps[:-1], create)
        if parent is None:
            return None
        c = comps[-1]
        try:
            fd = os.open(c, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                return None
            os.mkdir(c, 0o755, dir_fd=parent)
            fd = os.open(c, _DIR_FLAGS, dir_fd=parent)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                raise
            fd = self._walk(comps, create)
            if fd is None:
                return None
        if len(self._cache) > 8192:
            self.invalidate()
        self._cache[comps] = fd
        return fd

    @staticmethod
    def lstat(parent: int, leaf: str) -> os.stat_result | None:
        try:
            return os.stat(leaf, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def remove(self, parent: int, leaf: str, st: os.stat_result | None = None) -> bool:
        """Remove ``leaf`` in ``parent`` without following symlinks; True if something went."""
        st = st if st is not None else self.lstat(parent, leaf)
        if st is None:
            return False
        if stat.S_ISDIR(st.st_mode):
            self.invalidate()
            _rmtree_at(parent, leaf)
        else:
            if stat.S_ISLNK(st.st_mode):
                self.invalidate()
            os.unlink(leaf, dir_fd=parent)
        return True


def _rmtree_at(parent: int, leaf: str) -> None:
    """Remove a directory tree via fds; never follows symlinks; makes unreadable dirs writable."""
    try:
        shutil.rmtree(leaf, dir_fd=parent)
        return
    except PermissionError:
        pass
    # a mode-0 directory from an image: give it back permissions, then retry
    def fix(fd: int) -> None:
        for name in os.listdir(fd):
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                os.chmod(name, 0o700, dir_fd=fd)
                sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
                try:
                    fix(sub)
                finally:
                    os.close(sub)
    os.chmod(leaf, 0o700, dir_fd=parent)
    fd = os.open(leaf, _DIR_FLAGS, dir_fd=parent)
    try:
        fix(fd)
    finally:
        os.close(fd)
    shutil.rmtree(leaf, dir_fd=parent)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class _Applier:
    def __init__(self, root: Path, limits: LayerLimits, what: str) -> None:
        self.fs = RootFS(root)
        self.limits = limits
        self.what = what
        self.unpacked: set[str] = set()
        self.dirs: list[tuple[tuple[str, ...], int, int]] = []   # comps, mode, mtime
        self.stats = ExtractStats()

    def close(self) -> None:
        self.fs.close()

    def _mark(self, comps: tuple[str, ...]) -> None:
        for i in range(1, len(comps) + 1):
            self.unpacked.add("/".join(comps[:i]))

    def _parent(self, comps: tuple[str, ...]) -> int:
        fd = self.fs.dir_fd(comps[:-1], create=True)
        assert fd is not None
        return fd

    def _xattrs(self, m: tarfile.TarInfo, fd: int, name: str) -> None:
        for k, v in m.pax_headers.items():
            if not k.startswith("SCHILY.xattr."):
                continue
            attr = k[len("SCHILY.xattr."):]
            if not attr.startswith(_XATTR_ALLOWED):
                self.stats.neutralised.append(f"{name}: xattr {attr} ignored")
                continue
            if not sys.platform.startswith("linux"):  # FreeBSD has extattr(2), no os.setxattr
                self.stats.neutralised.append(f"{name}: xattr {attr} not supported here")
                continue
            try:
                os.setxattr(fd, attr, v.encode("utf-8", "surrogateescape"))
            except OSError as exc:
                if exc.errno not in (errno.ENOTSUP, errno.EPERM, errno.EOPNOTSUPP):
                    raise
                self.stats.neutralised.append(f"{name}: xattr {attr} not supported here")

    def whiteout(self, comps: tuple[str, ...], name: str) -> None:
        base = comps[-1]
        parent_comps = comps[:-1]
        if base == WH_OPAQUE:
            self.opaque(parent_comps)
            return
        if base.startswith(WH_PREFIX + WH_PREFIX):
            self.stats.neutralised.append(f"{name}: AUFS meta entry ignored")
            return
        target = base[len(WH_PREFIX):]
        if target in ("", ".", ".."):
            raise UnsafeLayer(f"{self.what}: whiteout {name!r} names no file; the layer is "
                              "invalid")
        full = (*parent_comps, target)
        if "/".join(full) in self.unpacked:
            return  # whiteouts hide lower layers only
        parent = self.fs.dir_fd(parent_comps, create=False)
        if parent is None:
            return
        self.fs.remove(parent, target)

    def opaque(self, dir_comps: tuple[str, ...]) -> None:
        fd = self.fs.dir_fd(dir_comps, create=False)
        if fd is None:
            return
        self._opaque_at(fd, dir_comps)

    def _opaque_at(self, fd: int, comps: tuple[str, ...]) -> None:
        for child in os.listdir(fd):
            cc = (*comps, child)
            st = self.fs.lstat(fd, child)
            if st is None:
                continue
            if "/".join(cc) not in self.unpacked:
                self.fs.remove(fd, child, st)
            elif stat.S_ISDIR(st.st_mode):
                sub = os.open(child, _DIR_FLAGS, dir_fd=fd)
                try:
                    self._opaque_at(sub, cc)
                finally:
                    os.close(sub)

    def entry(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        lim = self.limits
        self.fs.release()
        self.stats.entries += 1
        if self.stats.entries > lim.max_entries:
            raise UnsafeLayer(f"{self.what} has more than {lim.max_entries} entries; refusing it")
        comps = split_path(m.name, lim)
        name = "/".join(comps)
        if comps and comps[-1].startswith(WH_PREFIX):
            self.whiteout(comps, m.name)
            return
        if not comps:
            if m.isdir():
                return  # the root itself: keep ours
            raise UnsafeLayer(f"{self.what}: entry {m.name!r} would replace the root directory "
                              "with a non-directory")
        if m.size > lim.max_file_size:
            raise UnsafeLayer(f"{self.what}: {name} declares {m.size} bytes, over the "
                              f"{lim.max_file_size}-byte file limit")
        parent = self._parent(comps)
        leaf = comps[-1]
        uid, gid = m.uid, m.gid
        mode = m.mode & 0o7777
        # create first and look only on EEXIST: one FUSE round trip less per entry
        if m.isdir():
            try:
                os.mkdir(leaf, 0o700, dir_fd=parent)
            except FileExistsError:
                existing = self.fs.lstat(parent, leaf)
                if existing is not None and not stat.S_ISDIR(existing.st_mode):
                    self.fs.remove(parent, leaf, existing)
                    os.mkdir(leaf, 0o700, dir_fd=parent)
            if any(k.startswith("SCHILY.xattr.") for k in m.pax_headers):
                fd = os.open(leaf, _DIR_FLAGS, dir_fd=parent)
                try:
                    os.fchown(fd, uid, gid)
                    self._xattrs(m, fd, name)
                finally:
                    os.close(fd)
            else:
                os.chown(leaf, uid, gid, dir_fd=parent, follow_symlinks=False)
            self.dirs.append((comps, mode, int(m.mtime)))
            self._mark(comps)
            return
        if not (m.isreg() or m.issym()):
            self.fs.remove(parent, leaf)
        if m.isreg():
            try:
                fd = os.open(leaf, _FILE_FLAGS, 0o600, dir_fd=parent)
            except FileExistsError:
                self.fs.remove(parent, leaf)
                fd = os.open(leaf, _FILE_FLAGS, 0o600, dir_fd=parent)
            try:
                src = tf.extractfile(m)
                if src is not None:
                    remaining = m.size
                    while remaining > 0:
                        buf = src.read(min(_COPY_CHUNK, remaining))
                        if not buf:
                            raise CorruptLayer(f"{self.what} ends inside {name}")
                        _write_all(fd, buf)
                        remaining -= len(buf)
                self.stats.file_bytes += m.size
                os.fchown(fd, uid, gid)
                os.fchmod(fd, mode)  # after chown: chown clears setuid
                self._xattrs(m, fd, name)
                os.utime(fd, ns=(int(m.mtime) * 10**9, int(m.mtime) * 10**9))
            finally:
                os.close(fd)
        elif m.issym():
            target = m.linkname
            if not target or "\x00" in target or len(target) > lim.max_link_len:
                raise UnsafeLayer(f"{self.what}: symlink {name} has an empty, NUL-bearing or "
                                  "over-long target")
            self.fs.invalidate()
            try:
                os.symlink(target, leaf, dir_fd=parent)
            except FileExistsError:
                self.fs.remove(parent, leaf)
                os.symlink(target, leaf, dir_fd=parent)
            os.chown(leaf, uid, gid, dir_fd=parent, follow_symlinks=False)
            os.utime(leaf, ns=(int(m.mtime) * 10**9,) * 2, dir_fd=parent, follow_symlinks=False)
        elif m.islnk():
            tcomps = split_path(m.linkname, lim, "hardlink target")
            if not tcomps:
                raise UnsafeLayer(f"{self.what}: hardlink {name} points at the root directory")
            tparent = self.fs.dir_fd(tcomps[:-1], create=False)
            tst = self.fs.lstat(tparent, tcomps[-1]) if tparent is not None else None
            if tst is None or tparent is None:
                raise UnsafeLayer(f"{self.what}: hardlink {name} -> {m.linkname} points at a "
                                  "file that is not in the image")
            if stat.S_ISDIR(tst.st_mode):
                raise UnsafeLayer(f"{self.what}: hardlink {name} -> {m.linkname} points at a "
                                  "directory")
            os.link(tcomps[-1], leaf, src_dir_fd=tparent, dst_dir_fd=parent,
                    follow_symlinks=False)
        elif m.isfifo():
            os.mkfifo(leaf, 0o600, dir_fd=parent)
            os.chown(leaf, uid, gid, dir_fd=parent, follow_symlinks=False)
            os.chmod(leaf, mode, dir_fd=parent)  # just created by us: not a symlink
            os.utime(leaf, ns=(int(m.mtime) * 10**9,) * 2, dir_fd=parent, follow_symlinks=False)
        elif m.ischr() or m.isblk():
            if lim.device_nodes != "create":
                self.stats.neutralised.append(f"{name}: device node skipped")
                return
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
            os.mknod(leaf, kind | 0o600, os.makedev(m.devmajor, m.devminor), dir_fd=parent)
            os.chown(leaf, uid, gid, dir_fd=parent, follow_symlinks=False)
            os.chmod(leaf, mode, dir_fd=parent)
            os.utime(leaf, ns=(int(m.mtime) * 10**9,) * 2, dir_fd=parent, follow_symlinks=False)
        else:
            self.stats.neutralised.append(f"{name}: unsupported tar type {m.type!r} skipped")
            return
        self._mark(comps)

    def finish_dirs(self) -> None:
        for comps, mode, mtime in reversed(self.dirs):
            fd = self.fs.dir_fd(comps, create=False)
            if fd is None:
                continue
            os.fchmod(fd, mode)
            os.utime(fd, ns=(mtime * 10**9, mtime * 10**9))


def apply_layer(blob: Path, compression: str, root: Path, diff_id: str | None,
                limits: LayerLimits | None = None, what: str = "layer",
                progress: Callable[[int], None] | None = None) -> ExtractStats:
    """Apply the (compressed) tar in ``blob`` onto ``root``; verify its DiffID.

    Raises UnsafeLayer (or CorruptLayer) when an entry is refused, DigestMismatch when the
    uncompressed stream does not hash to ``diff_id``. The caller discards ``root`` on error.
    """
    lim = limits or LayerLimits()
    ap = _Applier(root, lim, what)
    try:
        with open(blob, "rb") as raw:
            reader = _Limited(_decompressor(raw, compression), lim.max_bytes, what)
            try:
                with tarfile.open(fileobj=reader, mode="r|",  # type: ignore[call-overload]
                                  bufsize=_TAR_BUFSIZE,
                                  tarinfo=_guarded_info(lim.max_meta_size)) as tf:
                    for m in tf:
                        ap.entry(tf, m)
                        if progress is not None:
                            progress(reader.count)
            except tarfile.TarError as exc:
                raise CorruptLayer(f"{what} is not a valid tar archive: {exc}") from exc
            except OSError as exc:
                if exc.errno in (errno.EDQUOT, errno.ENOSPC):
                    raise UnsafeLayer(f"{what} does not fit: the dataset ran out of space "
                                      "(quota); refusing it") from exc
                raise
            ap.finish_dirs()
            reader.drain()
        ap.stats.uncompressed_bytes = reader.count
        actual = "sha256:" + reader.h.hexdigest()
        if diff_id is not None and actual != diff_id:
            raise DigestMismatch(f"{what} uncompressed to DiffID {actual}, but the image config "
                                 f"says {diff_id}; the layer was discarded")
        return ap.stats
    finally:
        ap.close()
