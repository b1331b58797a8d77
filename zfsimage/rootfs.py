"""In-root, directory-fd based path resolution and removal below one root directory.

Every component is opened ``O_NOFOLLOW|O_DIRECTORY`` from its parent's fd; a symlink met on the
way is evaluated as if the root were ``/`` (absolute targets restart at the root, ``..`` clamps at
it), so no name, link target or link already in the tree can make a caller touch anything outside
the root. Walks and removals are iterative and hold a bounded number of fds: going up uses the
current directory's own ``..`` (we came down through real directories, so it is the parent we
came from), never a re-resolution from the root.
"""

from __future__ import annotations

import errno
import os
import resource
import stat
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from zfsimage.errors import LimitExceeded, UnsafeLayer
from zfsimage.names import quote
from zfsimage.pathtree import Node

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_HOPS = 40                    # symlinks per resolution, as Linux's MAXSYMLINKS
_FD_RESERVE = 64                 # fds left for everything else in the process


def raise_fd_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard one (as container runtimes do at start);
    return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def fd_cache_size() -> int:
    """How many directory fds a cache may hold: a quarter of what the soft limit leaves, so
    several applies in one process (and the gRPC server) still have room."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 16
    return max(8, min(8192, (soft - _FD_RESERVE) // 4))


_TIME_MAX = 2**31 - 1             # what every file system can store


def set_mtime(target: int | str, mtime: int, dir_fd: int | None = None) -> None:
    """Set atime and mtime (an fd, or a name in ``dir_fd`` not followed). A time the file
    system cannot store is clamped to its 32-bit range, as containerd bounds archive times."""
    for t in (mtime, min(max(mtime, 0), _TIME_MAX)):
        try:
            if dir_fd is None:
                os.utime(target, ns=(t * 10**9, t * 10**9))
            else:
                os.utime(target, ns=(t * 10**9, t * 10**9), dir_fd=dir_fd,
                         follow_symlinks=False)
            return
        except OSError as exc:
            if exc.errno not in (errno.EOVERFLOW, errno.EINVAL) or t == _TIME_MAX:
                raise


@dataclass(frozen=True)
class Dir:
    fd: int                          # owned by the RootFS cache: do not close
    node: Node                       # the real in-root path after following symlinks


Deadline = Callable[[], None]


def _no_deadline() -> None:
    pass


class RootFS:
    def __init__(self, root: Path, max_depth: int, deadline: Deadline = _no_deadline) -> None:
        self.root_fd = os.open(root, DIR_FLAGS)
        self.tree = Node("", None)
        self.max_depth = max_depth
        self.deadline = deadline
        self.cache_size = fd_cache_size()
        self._cache: OrderedDict[tuple[str, ...], Dir] = OrderedDict()
        self._retired: list[int] = []

    def close(self) -> None:
        self.invalidate()
        self.release()
        os.close(self.root_fd)

    def invalidate(self) -> None:
        """Forget resolved directories; called whenever a directory or symlink is removed or a
        symlink is created, since either can change where a path resolves. The fds stay open
        until ``release`` (callers may still hold one for the current entry)."""
        self._retired.extend(d.fd for d in self._cache.values())
        self._cache.clear()

    def release(self) -> None:
        for fd in self._retired:
            os.close(fd)
        self._retired.clear()

    def _remember(self, comps: tuple[str, ...], d: Dir) -> None:
        self._cache[comps] = d
        while len(self._cache) > self.cache_size:
            self._retired.append(self._cache.popitem(last=False)[1].fd)

    def check_depth(self, node: Node, what: str) -> None:
        if node.depth > self.max_depth:
            raise LimitExceeded(f"{what} would sit {node.depth} directories deep after "
                                f"resolving symlinks, over the limit of {self.max_depth} "
                                "(max_depth)", "max_depth")

    def dir(self, comps: tuple[str, ...], create: bool) -> Dir | None:
        """The directory ``comps`` resolved in-root (cached; do not close its fd). With
        ``create``, missing directories are made (mode 0755, fixed up by the layer later);
        without, None when it does not exist or is not a directory."""
        if not comps:
            return Dir(self.root_fd, self.tree)
        hit = self._cache.get(comps)
        if hit is not None:
            self._cache.move_to_end(comps)
            return hit
        i = len(comps) - 1
        while i > 0 and comps[:i] not in self._cache:
            i -= 1
        cur = self._cache[comps[:i]] if i else Dir(self.root_fd, self.tree)
        for j in range(i, len(comps)):
            nxt = self._step(cur, comps[j], comps[:j + 1], create)
            if nxt is None:
                return None
            self._remember(comps[:j + 1], nxt)
            cur = nxt
        return cur

    def _step(self, cur: Dir, c: str, comps: tuple[str, ...], create: bool) -> Dir | None:
        try:
            return Dir(os.open(c, DIR_FLAGS, dir_fd=cur.fd), cur.node.child(c))
        except FileNotFoundError:
            if not create:
                return None
            node = cur.node.child(c)
            self.check_depth(node, f"directory {quote('/'.join(comps))}")
            os.mkdir(c, 0o755, dir_fd=cur.fd)
            return Dir(os.open(c, DIR_FLAGS, dir_fd=cur.fd), node)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                raise
        st = os.stat(c, dir_fd=cur.fd, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode):
            if not create:
                return None
            raise UnsafeLayer(f"path {quote('/'.join(comps))} goes through {quote(c)}, which "
                              "is not a directory")
        return self._walk(cur, os.readlink(c, dir_fd=cur.fd), comps, create)

    def _walk(self, base: Dir, target: str, comps: tuple[str, ...],
              create: bool) -> Dir | None:
        """Follow a symlink ``target`` met in directory ``base``: one fd held at a time, ``..``
        by the directory's own parent link, at most MAX_HOPS symlinks."""
        absolute = target.startswith("/")
        node = self.tree if absolute else base.node
        fd = os.dup(self.root_fd if absolute else base.fd)
        todo = list(reversed(target.split("/")))
        hops = 1
        try:
            while todo:
                c = todo.pop()
                if c in ("", "."):
                    continue
                if c == "..":
                    if node.parent is not None:
                        up = os.open("..", DIR_FLAGS, dir_fd=fd)
                        os.close(fd)
                        fd = up
                        node = node.parent
                    continue
                try:
                    nfd = os.open(c, DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        return None
                    self.check_depth(node.child(c), f"directory {quote('/'.join(comps))}")
                    os.mkdir(c, 0o755, dir_fd=fd)
                    nfd = os.open(c, DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                        raise
                    st = os.stat(c, dir_fd=fd, follow_symlinks=False)
                    if not stat.S_ISLNK(st.st_mode):
                        if not create:
                            return None
                        raise UnsafeLayer(f"path {quote('/'.join(comps))} goes through "
                                          f"{quote(c)}, which is not a directory") from None
                    hops += 1
                    if hops > MAX_HOPS:
                        raise UnsafeLayer(f"path {quote('/'.join(comps))} meets more than "
                                          f"{MAX_HOPS} symlinks (a loop?)") from None
                    link = os.readlink(c, dir_fd=fd)
                    if link.startswith("/"):
                        os.close(fd)
                        fd = os.dup(self.root_fd)
                        node = self.tree
                    todo.extend(reversed(link.split("/")))
                    continue
                os.close(fd)
                fd = nfd
                node = node.child(c)
            out, fd = fd, -1
            return Dir(out, node)
        finally:
            if fd >= 0:
                os.close(fd)

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
            remove_tree(parent, leaf, self.deadline)
        else:
            if stat.S_ISLNK(st.st_mode):
                self.invalidate()
            os.unlink(leaf, dir_fd=parent)
        return True


def _open_dir(parent: int, name: str) -> int:
    try:
        return os.open(name, DIR_FLAGS, dir_fd=parent)
    except PermissionError:
        # a mode-0 directory from an image (without CAP_DAC_OVERRIDE): make it ours to empty
        os.chmod(name, 0o700, dir_fd=parent, follow_symlinks=False)
        return os.open(name, DIR_FLAGS, dir_fd=parent)


def _list(fd: int) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(fd) as it:
            return list(it)
    except PermissionError:
        os.fchmod(fd, 0o700)
        with os.scandir(fd) as it:
            return list(it)


def remove_tree(parent: int, name: str, deadline: Deadline = _no_deadline) -> None:
    """Remove the directory ``name`` in ``parent`` and all below it, never following a
    symlink, without recursion: one directory fd open at a time (plus ``parent``), each
    directory listed once, ``..`` to go back up (checked against the inode we came from)."""
    # frames: (name in its parent, (dev, ino) of the parent, subdirectories still to remove)
    frames: list[tuple[str, tuple[int, int], list[str]]] = []
    pst = os.fstat(parent)
    cur_parent_id = (pst.st_dev, pst.st_ino)
    fd = _open_dir(parent, name)
    cur_name = name
    try:
        while True:
            deadline()
            subdirs = []
            for e in _list(fd):
                if e.is_dir(follow_symlinks=False):
                    subdirs.append(e.name)
                else:
                    os.unlink(e.name, dir_fd=fd)
            frames.append((cur_name, cur_parent_id, subdirs))
            while frames and not frames[-1][2]:
                done_name, parent_id, _ = frames.pop()
                if not frames:
                    os.close(fd)
                    fd = -1
                    os.rmdir(done_name, dir_fd=parent)
                    return
                up = os.open("..", DIR_FLAGS, dir_fd=fd)
                ust = os.fstat(up)
                if (ust.st_dev, ust.st_ino) != parent_id:
                    os.close(up)
                    raise UnsafeLayer("a directory moved while it was being removed")
                os.close(fd)
                fd = up
                os.rmdir(done_name, dir_fd=fd)
            sub = frames[-1][2].pop()
            st = os.fstat(fd)
            nfd = _open_dir(fd, sub)
            os.close(fd)
            fd = nfd
            cur_name, cur_parent_id = sub, (st.st_dev, st.st_ino)
    finally:
        if fd >= 0:
            os.close(fd)


def _subdirs(node: Node) -> Iterator[Node]:
    return (c for c in node.children.values() if c.written)


def apply_dir_meta(root_fd: int, tree: Node, tick: Callable[[], None]) -> None:
    """Set the recorded mode and mtime of each directory, children before parents, walking
    down by name (``O_NOFOLLOW``: a directory replaced by a file or symlink is skipped) and up
    by ``..``; one directory fd open at a time besides the root's."""
    fd = os.dup(root_fd)
    stack: list[tuple[Node, Iterator[Node], tuple[int, int]]] = [
        (tree, _subdirs(tree), (0, 0))]
    try:
        while stack:
            tick()
            node, it, parent_id = stack[-1]
            child = next(it, None)
            if child is not None:
                try:
                    nfd = os.open(child.name, DIR_FLAGS, dir_fd=fd)
                except (FileNotFoundError, NotADirectoryError, OSError):
                    continue   # replaced later in the layer by a non-directory
                st = os.fstat(fd)
                os.close(fd)
                fd = nfd
                stack.append((child, _subdirs(child), (st.st_dev, st.st_ino)))
                continue
            stack.pop()
            if not stack:
                break
            up = os.open("..", DIR_FLAGS, dir_fd=fd)
            ust = os.fstat(up)
            if (ust.st_dev, ust.st_ino) != parent_id:
                os.close(up)
                raise UnsafeLayer("a directory moved while its mode was being set")
            if node.meta is not None:
                mode, mtime = node.meta
                os.fchmod(fd, mode)
                set_mtime(fd, mtime)
            os.close(fd)
            fd = up
    finally:
        os.close(fd)
