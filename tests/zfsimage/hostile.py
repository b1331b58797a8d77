"""Builders for hostile layers shared by the corpus tests, the fuzzer and the benchmark."""

from __future__ import annotations

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
