"""Builders for hostile layers shared by the corpus tests, the fuzzer and the benchmark."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from tests.fixtures.images import E, d, sym, tar_bytes


def deep_tree_entries(levels: int, group: int = 400, top: str = "t") -> list[E]:
    """A directory chain ``levels`` deep whose every entry name stays short: each group of
    ``group`` levels is reached through a symlink to the end of the previous group (the
    hostile layout of issue 13: per-entry depth small, resolved depth huge)."""
    out: list[E] = [d(top)]
    base = top
    made = 1
    k = 0
    while made < levels:
        n = min(group, levels - made)
        out += [d(base + "/d" * (j + 1)) for j in range(n)]
        made += n
        k += 1
        link = f"s{k}"
        out.append(sym(link, base + "/d" * n))
        base = link
    return out


def deep_tree_layer(levels: int, group: int = 400) -> bytes:
    return tar_bytes(deep_tree_entries(levels, group))


def nested_names_layer(levels: int) -> bytes:
    """The same depth with plain nested names (for tools that do not follow in-archive links)."""
    return tar_bytes([d("/".join(["d"] * (i + 1))) for i in range(levels)])


def sandbox_snapshot(sandbox: Path) -> dict[str, tuple[object, ...]]:
    """Everything in the sandbox except the root: type, mode, owner, size, links, content."""
    snap: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(sandbox):
        if Path(dirpath) == sandbox:
            dirnames[:] = [n for n in dirnames if n != "root"]
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = os.lstat(p)
            h = ""
            if stat.S_ISREG(st.st_mode):
                h = hashlib.sha256(p.read_bytes()).hexdigest()
            link = os.readlink(p) if stat.S_ISLNK(st.st_mode) else ""
            snap[str(p)] = (st.st_mode, st.st_uid, st.st_size, st.st_nlink, h, link,
                            st.st_mtime_ns)
    return snap
