"""Secure, streaming application of one OCI layer onto a directory tree.

Headers come from ``tarstream`` (one member at a time, nothing kept), paths are resolved in-root
by ``rootfs`` (directory fds, symlinks evaluated as if the root were ``/``), and leaves are
created with ``O_EXCL|O_NOFOLLOW`` or the ``*at`` calls with ``follow_symlinks=False``: no entry
name, link target or link already in the tree can make us create, change or remove anything
outside the root.

Whiteouts follow the OCI image-spec (layer.md, "Whiteouts"): ``.wh.X`` removes X from lower
layers only, and ``.wh..wh..opq`` hides every lower entry of its directory wherever it sits in
the archive. "This layer's own entries" are tracked by resolved path, so an entry written through
an in-root symlink alias (``al/new`` with ``al -> a``) survives a whiteout of ``a/new``.
Directory modes and mtimes are applied after all entries, so a mode-0 directory can still be
filled. The DiffID is computed over the whole decompressed stream, trailing bytes included.
Every bound is a ``LayerLimits`` field; every failure is one line naming the layer, the entry and
the reason.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from zfsimage.decompress import Limited, decompressor, sniff_compression
from zfsimage.errors import CorruptLayer, DigestMismatch, ImageError, LimitExceeded, UnsafeLayer
from zfsimage.limits import LayerLimits
from zfsimage.names import quote
from zfsimage.pathtree import Node
from zfsimage.rootfs import DIR_FLAGS, RootFS, apply_dir_meta, raise_fd_limit, set_mtime
from zfsimage.tarstream import Member, TarReader

__all__ = ["CorruptLayer", "ExtractStats", "LayerLimits", "apply_layer", "sniff_compression",
           "split_path"]

WH_PREFIX = ".wh."
WH_OPAQUE = ".wh..wh..opq"
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_XATTR_ALLOWED = ("user.", "security.capability")
_MAX_NOTES = 100
# errnos of setxattr that mean "this attribute cannot be kept here", not a broken host
_XATTR_SKIP = {errno.ENOTSUP, errno.EPERM, errno.EOPNOTSUPP, errno.EINVAL, errno.E2BIG,
               errno.ERANGE, errno.ENOSPC}


@dataclass
class ExtractStats:
    entries: int = 0
    uncompressed_bytes: int = 0
    file_bytes: int = 0           # sizes of regular files, sparse holes included
    neutralised: list[str] = field(default_factory=list)   # the first _MAX_NOTES notes
    notes_dropped: int = 0

    def note(self, text: str) -> None:
        if len(self.neutralised) < _MAX_NOTES:
            self.neutralised.append(text)
        else:
            self.notes_dropped += 1


def split_path(name: str, limits: LayerLimits, what: str = "entry") -> tuple[str, ...]:
    """Normalise an archive path to in-root components; raise UnsafeLayer on bad names.

    A leading ``/`` is stripped (the path is then taken inside the root, as containerd does);
    ``..`` anywhere is refused; backslashes stay literal characters.
    """
    if "\x00" in name:
        raise UnsafeLayer(f"{what} name {quote(name)} contains a NUL byte")
    if len(name.encode("utf-8", "surrogateescape")) > limits.max_path_len:
        raise LimitExceeded(f"{what} name {quote(name)} is longer than {limits.max_path_len} "
                            "bytes (max_path_len)", "max_path_len")
    comps = tuple(c for c in name.split("/") if c not in ("", "."))
    for c in comps:
        if c == "..":
            raise UnsafeLayer(f"{what} {quote(name)} contains '..'; refusing path traversal")
        if len(c.encode("utf-8", "surrogateescape")) > limits.max_component_len:
            raise LimitExceeded(f"{what} {quote(name)} has a component longer than "
                                f"{limits.max_component_len} bytes (max_component_len)",
                                "max_component_len")
    if len(comps) > limits.max_depth:
        raise LimitExceeded(f"{what} {quote(name)} is nested deeper than {limits.max_depth} "
                            "directories (max_depth)", "max_depth")
    return comps


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


class _Applier:
    def __init__(self, root: Path, limits: LayerLimits, what: str, reader: TarReader,
                 deadline: Callable[[], None]) -> None:
        self.fs = RootFS(root, limits.max_depth, deadline)
        self.limits = limits
        self.what = what
        self.reader = reader
        self.here: Node = self.fs.tree       # where the current entry lands (resolved)
        self.stats = ExtractStats()
        st = os.statvfs(root)
        self.space = st.f_bavail * st.f_frsize   # what the dataset can still take

    def close(self) -> None:
        self.fs.close()

    def _count(self, m: Member, name: str) -> None:
        lim = self.limits
        self.stats.entries += 1
        if self.stats.entries > lim.max_entries:
            raise LimitExceeded(f"more than {lim.max_entries} entries (max_entries)",
                                "max_entries")
        if m.kind != "reg":
            return
        if m.size > lim.max_file_size:
            raise LimitExceeded(f"{m.size} bytes, over the {lim.max_file_size}-byte file limit "
                                "(max_file_size)", "max_file_size")
        self.stats.file_bytes += m.size
        if self.stats.file_bytes > lim.max_bytes:
            raise LimitExceeded(f"the layer's files add up to more than {lim.max_bytes} bytes, "
                                "sparse holes counted (max_bytes)", "max_bytes")
        if self.stats.file_bytes > self.space:
            raise UnsafeLayer(f"the layer's files need {self.stats.file_bytes} bytes (sparse "
                              f"holes counted) but its dataset has {self.space} free (the "
                              "refquota max_image_size, or the pool)")

    def entry(self, m: Member) -> None:
        self.fs.release()
        comps = split_path(m.name, self.limits)
        self._count(m, m.name)
        if comps and comps[-1].startswith(WH_PREFIX):
            self.whiteout(comps)
            return
        if not comps:
            if m.kind == "dir":
                return  # the root itself: keep ours
            raise UnsafeLayer("it would replace the root directory with a non-directory")
        d = self.fs.dir(comps[:-1], create=True)
        assert d is not None
        leaf = comps[-1]
        node = self.here = d.node.child(leaf)
        self.fs.check_depth(node, "it")
        if m.kind == "dir":
            self._dir(d.fd, leaf, m, node)
        elif m.kind == "reg":
            self._file(d.fd, leaf, m)
        elif m.kind == "sym":
            self._symlink(d.fd, leaf, m)
        elif m.kind == "lnk":
            self._hardlink(d.fd, leaf, m)
        elif m.kind in ("fifo", "chr", "blk"):
            if not self._special(d.fd, leaf, m):
                return
        else:
            self.stats.note(f"{quote(m.name)}: unsupported tar type {m.typeflag!r} skipped")
            return
        node.mark_written()

    def _dir(self, parent: int, leaf: str, m: Member, node: Node) -> None:
        # create first and look only on EEXIST: one FUSE round trip less per entry
        try:
            os.mkdir(leaf, 0o700, dir_fd=parent)
        except FileExistsError:
            existing = self.fs.lstat(parent, leaf)
            if existing is not None and not stat.S_ISDIR(existing.st_mode):
                self._replace(parent, leaf, existing)
                os.mkdir(leaf, 0o700, dir_fd=parent)
        if m.xattrs:
            fd = os.open(leaf, DIR_FLAGS, dir_fd=parent)
            try:
                os.fchown(fd, m.uid, m.gid)
                self._xattrs(m, fd)
            finally:
                os.close(fd)
        else:
            os.chown(leaf, m.uid, m.gid, dir_fd=parent, follow_symlinks=False)
        node.meta = (m.mode, m.mtime)  # the last entry for a directory decides

    def _file(self, parent: int, leaf: str, m: Member) -> None:
        try:
            fd = os.open(leaf, _FILE_FLAGS, 0o600, dir_fd=parent)
        except FileExistsError:
            self._replace(parent, leaf)
            fd = os.open(leaf, _FILE_FLAGS, 0o600, dir_fd=parent)
        try:
            for offset, data in self.reader.regions(m):
                _write_all(fd, data, offset)
            if m.sparse is not None:
                os.ftruncate(fd, m.size)   # trailing hole
            os.fchown(fd, m.uid, m.gid)
            os.fchmod(fd, m.mode)  # after chown: chown clears setuid
            self._xattrs(m, fd)
            set_mtime(fd, m.mtime)
        finally:
            os.close(fd)

    def _symlink(self, parent: int, leaf: str, m: Member) -> None:
        target = m.linkname
        if not target or "\x00" in target:
            raise UnsafeLayer("the symlink has an empty or NUL-bearing target")
        if len(target.encode("utf-8", "surrogateescape")) > self.limits.max_link_len:
            raise LimitExceeded(f"the symlink target is longer than {self.limits.max_link_len} "
                                "bytes (max_link_len)", "max_link_len")
        self.fs.invalidate()
        try:
            os.symlink(target, leaf, dir_fd=parent)
        except FileExistsError:
            self._replace(parent, leaf)
            os.symlink(target, leaf, dir_fd=parent)
        self._own(parent, leaf, m, chmod=False)

    def _hardlink(self, parent: int, leaf: str, m: Member) -> None:
        tcomps = split_path(m.linkname, self.limits, "hardlink target")
        if not tcomps:
            raise UnsafeLayer("the hardlink points at the root directory")
        td = self.fs.dir(tcomps[:-1], create=False)
        tst = self.fs.lstat(td.fd, tcomps[-1]) if td is not None else None
        if tst is None or td is None:
            raise UnsafeLayer(f"the hardlink target {quote(m.linkname)} is not in the image")
        if stat.S_ISDIR(tst.st_mode):
            raise UnsafeLayer(f"the hardlink target {quote(m.linkname)} is a directory")
        existing = self.fs.lstat(parent, leaf)
        if existing is not None:
            if (existing.st_dev, existing.st_ino) == (tst.st_dev, tst.st_ino):
                return  # already that very file
            self._replace(parent, leaf, existing)
        os.link(tcomps[-1], leaf, src_dir_fd=td.fd, dst_dir_fd=parent, follow_symlinks=False)

    def _special(self, parent: int, leaf: str, m: Member) -> bool:
        if m.kind != "fifo" and self.limits.device_nodes != "create":
            self.stats.note(f"{quote(m.name)}: device node skipped")
            return False
        self._replace(parent, leaf)
        if m.kind == "fifo":
            os.mkfifo(leaf, 0o600, dir_fd=parent)
        else:
            kind = stat.S_IFCHR if m.kind == "chr" else stat.S_IFBLK
            os.mknod(leaf, kind | 0o600, os.makedev(m.devmajor, m.devminor), dir_fd=parent)
        self._own(parent, leaf, m, chmod=True)
        return True

    @staticmethod
    def _own(parent: int, leaf: str, m: Member, chmod: bool) -> None:
        """Owner, then mode (chown clears setuid), then mtime of a leaf we just created."""
        os.chown(leaf, m.uid, m.gid, dir_fd=parent, follow_symlinks=False)
        if chmod:
            os.chmod(leaf, m.mode, dir_fd=parent)  # just created by us: not a symlink
        set_mtime(leaf, m.mtime, parent)

    def _xattrs(self, m: Member, fd: int) -> None:
        for attr, value in m.xattrs:
            if not attr.startswith(_XATTR_ALLOWED):
                self.stats.note(f"{quote(m.name)}: xattr {quote(attr)} ignored")
                continue
            try:
                os.setxattr(fd, attr, value)
            except OSError as exc:
                if exc.errno not in _XATTR_SKIP:
                    raise
                self.stats.note(f"{quote(m.name)}: xattr {quote(attr)} not kept "
                                f"({os.strerror(exc.errno or 0)})")

    def _replace(self, parent: int, leaf: str, st: os.stat_result | None = None) -> None:
        """Remove what is at the current entry's place so it can take it (tar semantics)."""
        if self.fs.remove(parent, leaf, st):
            self.here.forget_below()

    def whiteout(self, comps: tuple[str, ...]) -> None:
        base = comps[-1]
        if base == WH_OPAQUE:
            self.opaque(comps[:-1])
            return
        if base.startswith(WH_PREFIX + WH_PREFIX):
            self.stats.note(f"{quote('/'.join(comps))}: AUFS meta entry ignored")
            return
        target = base[len(WH_PREFIX):]
        if target in ("", ".", ".."):
            raise UnsafeLayer("the whiteout names no file")
        d = self.fs.dir(comps[:-1], create=False)
        hit = d.node.children.get(target) if d is not None else None
        if d is None or (hit is not None and hit.written):
            return  # whiteouts hide lower layers only
        self.fs.remove(d.fd, target)

    def opaque(self, dir_comps: tuple[str, ...]) -> None:
        """Remove every lower entry below the directory; descend only into directories this
        layer wrote (their lower contents are hidden too). Iterative."""
        top = self.fs.dir(dir_comps, create=False)
        if top is None:
            return
        todo = [top.node]
        while todo:
            self.fs.deadline()
            node = todo.pop()
            d = self.fs.dir(node.path(), create=False)
            if d is None or d.node is not node:
                continue
            # our own fd: removals below retire the cache's fds, which we then close at once
            fd = os.dup(d.fd)
            try:
                with os.scandir(fd) as it:
                    children = [e.name for e in it]
                for child in children:
                    st = self.fs.lstat(fd, child)
                    if st is None:
                        continue
                    mine = node.children.get(child)
                    if mine is None or not mine.written:
                        self.fs.remove(fd, child, st)
                        self.fs.release()
                    elif stat.S_ISDIR(st.st_mode):
                        todo.append(mine)
            finally:
                os.close(fd)

    def finish_dirs(self) -> None:
        """Modes and mtimes of this layer's directories, once every entry is in."""
        self.fs.invalidate()
        self.fs.release()
        apply_dir_meta(self.fs.root_fd, self.fs.tree, self.fs.deadline)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        if exc.errno == errno.EDQUOT:
            return "the layer dataset is over its refquota (max_image_size)"
        if exc.errno == errno.ENOSPC:
            return "the pool is out of space"
        return os.strerror(exc.errno) if exc.errno else str(exc)
    return str(exc) or type(exc).__name__


def _in_context(exc: BaseException, where: str) -> ImageError:
    """The same error class, its message prefixed with the layer and entry (one line)."""
    msg = f"{where}: {_reason(exc)}".replace("\n", " ")
    if isinstance(exc, LimitExceeded):
        return LimitExceeded(msg, exc.limit)
    if isinstance(exc, ImageError):
        return type(exc)(msg)
    return UnsafeLayer(msg)


def apply_layer(blob: Path, compression: str, root: Path, diff_id: str | None,
                limits: LayerLimits | None = None, what: str = "layer",
                progress: Callable[[int], None] | None = None) -> ExtractStats:
    """Apply the (compressed) tar in ``blob`` onto ``root``; verify its DiffID.

    Raises UnsafeLayer (``CorruptLayer``, ``LimitExceeded``) naming the layer and the entry
    when an entry is refused, DigestMismatch when the uncompressed stream does not hash to
    ``diff_id``. The caller discards ``root`` on error.
    """
    lim = limits or LayerLimits()
    raise_fd_limit()
    stop_at = time.monotonic() + lim.max_apply_seconds

    def deadline() -> None:
        if time.monotonic() > stop_at:
            raise LimitExceeded(f"applying it took longer than {lim.max_apply_seconds:g} s "
                                "(max_apply_seconds)", "max_apply_seconds")

    with open(blob, "rb") as raw:
        stream = Limited(decompressor(raw, compression), lim.max_bytes, what)
        reader = TarReader(stream, lim)
        ap = _Applier(root, lim, what, reader, deadline)
        name: str | None = None     # the entry being applied
        last: str | None = None     # the last entry applied (a bad header comes after it)
        try:
            for m in reader.members():
                name = m.name
                deadline()
                ap.entry(m)
                name, last = None, m.name
                if progress is not None:
                    progress(stream.count)
            ap.finish_dirs()
            stream.drain()
        except DigestMismatch:
            raise
        except (ImageError, OSError, ValueError, OverflowError) as exc:
            if name is not None:
                where = f"{what}, entry {quote(name)}"
            elif last is not None:
                where = f"{what}, after entry {quote(last)}"
            else:
                where = what
            raise _in_context(exc, where) from exc
        finally:
            ap.close()
    ap.stats.uncompressed_bytes = stream.count
    actual = "sha256:" + stream.h.hexdigest()
    if diff_id is not None and actual != diff_id:
        raise DigestMismatch(f"{what} uncompressed to DiffID {actual}, but the image config "
                             f"says {diff_id}; the layer was discarded")
    return ap.stats
