"""What one layer wrote, by resolved in-root path: a trie (memory grows with entries, not with
path lengths) that answers "is this a lower-layer entry?" for whiteouts and carries the modes
and mtimes of the layer's directories until every entry is in."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from zfsimage.errors import UnsafeLayer
from zfsimage.rootfs import DIR_FLAGS


class Node:
    __slots__ = ("children", "meta", "name", "parent")

    def __init__(self, name: str, parent: Node | None) -> None:
        self.name = name
        self.parent = parent
        self.children: dict[str, Node] = {}
        self.meta: tuple[int, int] | None = None      # (mode, mtime) of a directory entry


class Written:
    def __init__(self) -> None:
        self.root = Node("", None)

    def add(self, resolved: tuple[str, ...]) -> Node:
        node = self.root
        for c in resolved:
            nxt = node.children.get(c)
            if nxt is None:
                nxt = node.children[c] = Node(c, node)
            node = nxt
        return node

    def get(self, resolved: tuple[str, ...]) -> Node | None:
        node: Node | None = self.root
        for c in resolved:
            node = node.children.get(c) if node is not None else None
        return node

    def has(self, resolved: tuple[str, ...]) -> bool:
        return self.get(resolved) is not None

    def set_dir(self, resolved: tuple[str, ...], mode: int, mtime: int) -> None:
        self.add(resolved).meta = (mode, mtime)

    def forget_below(self, resolved: tuple[str, ...]) -> None:
        """A directory was replaced: what this layer wrote below it is gone."""
        node = self.get(resolved)
        if node is not None:
            node.children.clear()
            node.meta = None


def _subdirs(node: Node) -> Iterator[Node]:
    return (c for c in node.children.values() if c.children or c.meta is not None)


def apply_dir_meta(root_fd: int, written: Written, tick: Callable[[], None]) -> None:
    """Set the recorded mode and mtime of each directory, children before parents, walking
    down by name (``O_NOFOLLOW``: a directory replaced by a file or symlink is skipped) and up
    by ``..``; one directory fd open at a time besides the root's."""
    fd = os.dup(root_fd)
    stack: list[tuple[Node, Iterator[Node], tuple[int, int]]] = [
        (written.root, _subdirs(written.root), (0, 0))]
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
                os.utime(fd, ns=(mtime * 10**9, mtime * 10**9))
            os.close(fd)
            fd = up
    finally:
        os.close(fd)
