"""Resolved in-root paths as nodes of one tree per layer application.

A path is its node: a child is one dict lookup away from its parent, its depth is stored, so
resolving, depth checks and "did this layer write here?" cost O(1) per component however deep
the tree (a tuple of names would cost O(depth) per entry, O(depth²) per layer). A node also
records whether the layer wrote it (or something below it) and a directory entry's mode and
mtime until every entry is in.
"""

from __future__ import annotations


class Node:
    __slots__ = ("children", "depth", "meta", "name", "parent", "written")

    def __init__(self, name: str, parent: Node | None) -> None:
        self.name = name
        self.parent = parent
        self.depth: int = parent.depth + 1 if parent is not None else 0
        self.children: dict[str, Node] = {}
        self.written = False                          # this layer wrote it or below it
        self.meta: tuple[int, int] | None = None      # (mode, mtime) of a directory entry

    def child(self, name: str) -> Node:
        node = self.children.get(name)
        if node is None:
            node = self.children[name] = Node(name, self)
        return node

    def path(self) -> tuple[str, ...]:
        out = []
        node: Node | None = self
        while node is not None and node.parent is not None:
            out.append(node.name)
            node = node.parent
        return tuple(reversed(out))

    def text(self) -> str:
        return "/".join(self.path())

    def mark_written(self) -> None:
        node: Node | None = self
        while node is not None and not node.written:
            node.written = True
            node = node.parent

    def forget_below(self) -> None:
        """What was here was replaced or removed: nothing below it is this layer's any more."""
        self.children.clear()
        self.meta = None
