"""Deep-tree figures for issue 13: applying a very deep directory tree and removing it with an
upper layer's whiteout, next to GNU tar extracting and ``rm -rf`` removing the same tree on the
same kind of dataset (zfs-fuse; one dataset each, same pool).

    python -m bench.image_deep [--depth N] [--chained N] [--dir PATH]

1. ``--depth`` levels of plain nested names (GNU tar needs the whole name under PATH_MAX, so at
   most ~2000 one-letter levels): apply vs ``tar -xf``, whiteout vs ``rm -rf``;
2. ``--chained`` levels reached through in-root symlinks (the hostile layout: every entry name is
   short, the resolved depth is not), our side only, with ``max_depth`` raised: that it finishes,
   and how long the whiteout takes per level compared with case 1.
Prints each time and the ratio ours / GNU. Starts its own pool on the zfs-fuse daemon (test
fixtures) and removes it at the end; ``--dir`` runs in subdirectories of PATH instead (any file
system, e.g. tmpfs, for a baseline without FUSE).
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.fixtures.images import f, tar_bytes
from tests.fixtures.zpool import create_pool, destroy_pool, stop_daemon
from tests.zfsimage.hostile import deep_tree_layer, nested_names_layer
from zfsimage import LayerLimits, zfs
from zfsimage.extract import apply_layer


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _dataset(pool: str, mount_root: Path, name: str) -> Path:
    mp = mount_root / name
    zfs.create(f"{pool}/{name}", {"mountpoint": str(mp)})
    return mp


class _Dirs:
    """Where the trees go: datasets of a fresh zfs-fuse pool, or plain directories."""

    def __init__(self, base: Path | None) -> None:
        self.base = base
        self.pool = create_pool("bench", "2G") if base is None else None

    def make(self, name: str) -> Path:
        if self.pool is None:
            assert self.base is not None
            p = self.base / name
            p.mkdir(parents=True)
            return p
        return _dataset(self.pool.name, self.pool.mount_root, name)

    def close(self) -> None:
        if self.pool is not None:
            destroy_pool(self.pool)
            stop_daemon()
        elif self.base is not None:
            subprocess.run(["rm", "-rf", str(self.base)], check=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--depth", type=int, default=2000)
    ap.add_argument("--chained", type=int, default=10_000)
    ap.add_argument("--dir", type=Path, help="run in plain directories below this path")
    args = ap.parse_args()
    lim = LayerLimits(max_depth=max(args.depth, args.chained) + 10, max_path_len=1 << 20)
    dirs = _Dirs(Path(tempfile.mkdtemp(prefix="xctest-deep-", dir=args.dir)) if args.dir
                 else None)
    work = Path(tempfile.mkdtemp(prefix="xctest-deep-"))
    try:
        plain = work / "plain.tar"
        plain.write_bytes(nested_names_layer(args.depth))
        wh = work / "wh.tar"
        wh.write_bytes(tar_bytes([f(".wh.d")]))
        ours = dirs.make("ours")
        gnu = dirs.make("gnu")
        t_apply = timed(lambda: apply_layer(plain, "none", ours, None, lim))
        t_tar = timed(lambda: subprocess.run(["tar", "-xf", str(plain), "-C", str(gnu)],
                                             check=True))
        t_wh = timed(lambda: apply_layer(wh, "none", ours, None, lim))
        t_rm = timed(lambda: subprocess.run(["rm", "-rf", str(gnu / "d")], check=True))
        print(f"plain tree, {args.depth} levels:")
        print(f"  apply    {t_apply:7.2f} s   GNU tar -x {t_tar:7.2f} s   ratio "
              f"{t_apply / t_tar:5.2f}")
        print(f"  whiteout {t_wh:7.2f} s   rm -rf     {t_rm:7.2f} s   ratio {t_wh / t_rm:5.2f}")

        chained = work / "chained.tar"
        chained.write_bytes(deep_tree_layer(args.chained))
        wh2 = work / "wh2.tar"
        wh2.write_bytes(tar_bytes([f(".wh.t")] + [f(f".wh.s{k}") for k in range(1, 200)]))
        ours2 = dirs.make("chained")
        c_apply = timed(lambda: apply_layer(chained, "none", ours2, None, lim))
        c_wh = timed(lambda: apply_layer(wh2, "none", ours2, None, lim))
        print(f"symlink-chained tree, {args.chained} levels (ours only):")
        print(f"  apply    {c_apply:7.2f} s   whiteout {c_wh:7.2f} s   whiteout per level "
              f"{c_wh / args.chained * 1e6:6.0f} us (plain: {t_wh / args.depth * 1e6:6.0f} us,"
              f" rm -rf: {t_rm / args.depth * 1e6:6.0f} us)")
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)
        dirs.close()


if __name__ == "__main__":
    main()
