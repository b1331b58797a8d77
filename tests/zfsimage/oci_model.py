"""A small in-memory reference model of applying OCI layers, written from the OCI image-spec
(layer.md: changesets, whiteouts, opaque whiteouts) and the documented choices of
zfsimage/extract.py, for the fuzzer to compare the real apply with.

A tree is ``{path tuple: Node}``. Paths resolve as if the root were ``/``: symlinks are followed
inside the tree (absolute targets restart at the root, ``..`` clamps at it, at most 40 hops).
Regular files are values (a hardlink copies its target: entries always replace files, never
change them in place, so content-wise a copy and a link agree).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

MAX_HOPS = 40
WH = ".wh."
OPQ = ".wh..wh..opq"

Path_ = tuple[str, ...]


class Refused(Exception):
    """The model says the layer must be refused."""


@dataclass(frozen=True)
class Node:
    kind: str                 # dir | reg | sym | fifo
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    data: bytes = b""
    target: str = ""
    mtime: int | None = None  # compared for reg and sym only


@dataclass(frozen=True)
class Entry:
    """One tar entry as the fuzzer generated it (after the header is parsed)."""

    name: str
    kind: str                 # dir | reg | sym | lnk | fifo | chr
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    data: bytes = b""
    link: str = ""
    mtime: int = 1_700_000_000


def split(name: str, max_depth: int = 256, max_comp: int = 255, max_path: int = 4096) -> Path_:
    if "\0" in name or len(name.encode("utf-8", "surrogateescape")) > max_path:
        raise Refused("bad name")
    comps = tuple(c for c in name.split("/") if c not in ("", "."))
    if ".." in comps or any(len(c.encode("utf-8", "surrogateescape")) > max_comp
                            for c in comps) or len(comps) > max_depth:
        raise Refused("bad name")
    return comps


class Tree:
    def __init__(self) -> None:
        self.nodes: dict[Path_, Node] = {(): Node("dir")}

    def new_dir(self, parent: Path_, mode: int) -> Node:
        """A directory made by mkdir(2): in a set-group-ID directory it inherits the group and
        the set-group-ID bit (Linux, and BSD semantics for the group)."""
        up = self.nodes[parent]
        if up.mode & 0o2000:
            return Node("dir", mode | 0o2000, gid=up.gid)
        return Node("dir", mode)

    def children(self, p: Path_) -> list[Path_]:
        return [q for q in self.nodes if len(q) == len(p) + 1 and q[:len(p)] == p]

    def remove(self, p: Path_) -> None:
        for q in [q for q in self.nodes if q[:len(p)] == p and q]:
            del self.nodes[q]

    def resolve_dir(self, comps: Path_, create: bool) -> Path_ | None:
        """The real directory path of ``comps``; None if missing (and not ``create``) or not a
        directory without ``create``; Refused when ``create`` meets a non-directory."""
        cur: list[str] = []
        todo = list(reversed(comps))
        hops = 0
        while todo:
            c = todo.pop()
            if c in ("", "."):
                continue
            if c == "..":
                if cur:
                    cur.pop()
                continue
            p = (*cur, c)
            n = self.nodes.get(p)
            if n is None:
                if not create:
                    return None
                self.nodes[p] = self.new_dir(tuple(cur), 0o755)
                cur.append(c)
                continue
            if n.kind == "dir":
                cur.append(c)
                continue
            if n.kind != "sym":
                if not create:
                    return None
                raise Refused("path through a non-directory")
            hops += 1
            if hops > MAX_HOPS or not n.target:
                raise Refused("symlink loop or empty target")
            if n.target.startswith("/"):
                cur = []
            todo.extend(reversed(n.target.split("/")))
        return tuple(cur)


class Layer:
    """Applies one layer's entries to a tree, tracking the layer's own resolved paths."""

    def __init__(self, tree: Tree, device_nodes: bool = False) -> None:
        self.t = tree
        self.mine: set[Path_] = set()
        self.dir_meta: dict[Path_, tuple[int, int, int, int]] = {}
        self.devices = device_nodes

    def _mark(self, p: Path_) -> None:
        for i in range(1, len(p) + 1):
            self.mine.add(p[:i])

    def _replace(self, p: Path_) -> None:
        if p in self.t.nodes:
            self.t.remove(p)
            self.mine = {q for q in self.mine if not (len(q) > len(p) and q[:len(p)] == p)}
            self.dir_meta = {q: v for q, v in self.dir_meta.items()
                             if not (len(q) > len(p) and q[:len(p)] == p)}

    def apply(self, e: Entry) -> None:
        comps = split(e.name)
        if comps and comps[-1].startswith(WH):
            self._whiteout(comps)
            return
        if not comps:
            if e.kind == "dir":
                return
            raise Refused("replaces the root")
        parent = self.t.resolve_dir(comps[:-1], create=True)
        assert parent is not None
        p = (*parent, comps[-1])
        if e.kind == "dir":
            cur = self.t.nodes.get(p)
            if cur is None or cur.kind != "dir":
                self._replace(p)
                self.t.nodes[p] = self.t.new_dir(parent, 0o700)
            self.t.nodes[p] = replace(self.t.nodes[p], uid=e.uid, gid=e.gid)
            self.dir_meta[p] = (e.mode, e.uid, e.gid, e.mtime)
        elif e.kind == "reg":
            self._replace(p)
            self.t.nodes[p] = Node("reg", e.mode, e.uid, e.gid, e.data, mtime=e.mtime)
        elif e.kind == "sym":
            if not e.link or "\0" in e.link or len(e.link.encode()) > 4095:
                raise Refused("bad symlink target")
            self._replace(p)
            self.t.nodes[p] = Node("sym", 0o777, e.uid, e.gid, target=e.link, mtime=e.mtime)
        elif e.kind == "lnk":
            self._hardlink(p, e)
        elif e.kind == "fifo":
            self._replace(p)
            self.t.nodes[p] = Node("fifo", e.mode, e.uid, e.gid)
        else:
            return  # device nodes are skipped (LayerLimits.device_nodes = "skip")
        self._mark(p)

    def _hardlink(self, p: Path_, e: Entry) -> None:
        tc = split(e.link)
        if not tc:
            raise Refused("hardlink to the root")
        tparent = self.t.resolve_dir(tc[:-1], create=False)
        target = self.t.nodes.get((*tparent, tc[-1])) if tparent is not None else None
        if target is None or target.kind == "dir":
            raise Refused("hardlink target missing or a directory")
        if tparent is not None and (*tparent, tc[-1]) == p:
            return
        self._replace(p)
        self.t.nodes[p] = target

    def _whiteout(self, comps: Path_) -> None:
        base = comps[-1]
        if base == OPQ:
            d = self.t.resolve_dir(comps[:-1], create=False)
            if d is not None:
                self._opaque(d)
            return
        if base.startswith(WH + WH):
            return
        target = base[len(WH):]
        if target in ("", ".", ".."):
            raise Refused("whiteout names no file")
        d = self.t.resolve_dir(comps[:-1], create=False)
        if d is None or (*d, target) in self.mine:
            return
        self.t.remove((*d, target))

    def _opaque(self, d: Path_) -> None:
        todo = [d]
        while todo:
            cur = todo.pop()
            for c in self.t.children(cur):
                if c not in self.mine:
                    self.t.remove(c)
                elif self.t.nodes[c].kind == "dir":
                    todo.append(c)

    def finish(self) -> None:
        for p, (mode, uid, gid, _mtime) in self.dir_meta.items():
            n = self.t.nodes.get(p)
            if n is not None and n.kind == "dir":
                self.t.nodes[p] = replace(n, mode=mode, uid=uid, gid=gid)


def apply_layers(layers: list[list[Entry]]) -> Tree:
    """The expected tree, or Refused (raised) for the first layer the model refuses."""
    t = Tree()
    for entries in layers:
        layer = Layer(t)
        for e in entries:
            layer.apply(e)
        layer.finish()
    return t
