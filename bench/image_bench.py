"""Image store benchmarks; every figure is a ratio against a baseline run in the same process.

    python -m bench.image_bench [--files N] [--rounds R]

1. cold pull + unpack of one multi-layer image: this project vs `skopeo copy` + `umoci unpack`
   into the same pool (goal: ratio <= 1.0, i.e. at least as fast);
2. extraction alone vs GNU `tar -x` of the same layer into the same kind of dataset (goal:
   speed ratio >= 0.8);
3. warm rootfs (clone_rootfs of a cached image) vs a bare `zfs clone` (goal: <= 1.5x);
4. a second image sharing the base: bytes downloaded and extracted for shared layers (goal: 0).
Starts its own zfs-fuse pool and registry (test fixtures) and removes them at the end.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import random
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from tests.fixtures import images as im
from tests.fixtures.registry import start_registry
from tests.fixtures.zpool import create_pool, destroy_pool, stop_daemon
from zfsimage import ImageStore, RegistryOptions, StoreConfig, zfs
from zfsimage.extract import apply_layer


def content_layer(seed: int, files: int) -> bytes:
    rnd = random.Random(seed)
    entries = [im.d(f"data{seed}")]
    for i in range(files):
        if i % 50 == 0:
            entries.append(im.d(f"data{seed}/d{i // 50}"))
        size = rnd.choice([200, 1500, 4000, 12000, 40000])
        # text-like, compressible content
        words = [rnd.choice(("alpha", "beta", "gamma", "delta", "jail", "zfs", "layer"))
                 for _ in range(size // 6)]
        entries.append(im.f(f"data{seed}/d{i // 50}/f{i}", " ".join(words)[:size]))
    return im.tar_bytes(entries)


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=1500)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    pool = create_pool("bench", "8G")
    reg = start_registry("plain")
    work = Path(tempfile.mkdtemp(prefix="xctest-bench-"))
    try:
        layers = [im.tar_bytes(im.busybox_base())] + [content_layer(s, args.files)
                                                       for s in (1, 2, 3)]
        built = im.build_image(layers)
        ref = im.push_image(reg, "bench/app", "1", built)
        print(f"image: {len(layers)} layers, "
              f"{sum(len(x) for x in layers) / 1e6:.1f} MB uncompressed, "
              f"{sum(len(b) for b in built.blobs.values()) / 1e6:.1f} MB compressed")

        # 1. cold pull + unpack, alternating runs
        ours, theirs = [], []
        for r in range(args.rounds):
            cfg = StoreConfig(dataset=f"{pool.name}/cold{r}", mount_root=pool.mount_root / f"c{r}",
                              registry=RegistryOptions(insecure_registries=(reg.host,)))
            store = ImageStore(cfg)
            ours.append(timed(lambda store=store: store.ensure_image(ref)))
            ds = f"{pool.name}/umoci{r}"
            mp = pool.mount_root / f"u{r}"
            zfs.create(ds, {"mountpoint": str(mp)})
            lay = work / f"oci{r}"

            def skopeo_umoci(lay: Path = lay, mp: Path = mp) -> None:
                subprocess.run(["skopeo", "copy", "--src-tls-verify=false",
                                f"docker://{ref}", f"oci:{lay}:1"], check=True,
                               capture_output=True)
                subprocess.run(["umoci", "unpack", "--image", f"{lay}:1", str(mp / "b")],
                               check=True, capture_output=True)
            theirs.append(timed(skopeo_umoci))
        o, t = statistics.median(ours), statistics.median(theirs)
        print(f"1. cold pull+unpack: ours {o:.2f}s vs skopeo+umoci {t:.2f}s -> "
              f"ratio {o / t:.2f} (goal <= 1.0)")

        # 2. extraction alone vs GNU tar -x (same layer, fresh datasets, alternating)
        raw = layers[1]
        blob = work / "layer.tar.gz"
        blob.write_bytes(gzip.compress(raw, 6))
        diff = "sha256:" + hashlib.sha256(raw).hexdigest()
        e_ours, e_tar = [], []
        for r in range(args.rounds):
            for kind in ("ours", "tar"):
                ds = f"{pool.name}/x{kind}{r}"
                mp = pool.mount_root / f"x{kind}{r}"
                zfs.create(ds, {"mountpoint": str(mp)})
                if kind == "ours":
                    e_ours.append(timed(lambda mp=mp: apply_layer(blob, "gzip", mp, diff)))
                else:
                    e_tar.append(timed(lambda mp=mp: subprocess.run(
                        ["tar", "-xzf", str(blob), "-C", str(mp), "--numeric-owner", "-p"],
                        check=True)))
        o, t = statistics.median(e_ours), statistics.median(e_tar)
        print(f"2. extraction: ours {o:.2f}s vs GNU tar {t:.2f}s -> speed ratio {t / o:.2f} "
              f"(goal >= 0.8)")

        # 3. warm rootfs vs bare zfs clone
        store = ImageStore(StoreConfig(dataset=f"{pool.name}/cold0",
                                       mount_root=pool.mount_root / "c0",
                                       registry=RegistryOptions(insecure_registries=(reg.host,))))
        img = store.ensure_image(ref)
        snap = f"{store.layer_dataset(img.chain_id or '')}@layer"
        c_ours, c_bare = [], []
        for i in range(20):
            c_ours.append(timed(lambda i=i: store.clone_rootfs(img, f"bench{i}")))
            mp = pool.mount_root / f"bare{i}"
            c_bare.append(timed(lambda i=i, mp=mp: zfs.clone(
                snap, f"{pool.name}/bare{i}", {"mountpoint": str(mp)})))
        for i in range(20):
            store.destroy_rootfs(f"bench{i}")
            zfs.destroy(f"{pool.name}/bare{i}")
        o, t = statistics.median(c_ours), statistics.median(c_bare)
        print(f"3. warm rootfs: clone_rootfs {o * 1000:.1f} ms vs bare zfs clone "
              f"{t * 1000:.1f} ms -> ratio {o / t:.2f} (goal <= 1.5)")

        # 4. shared base: a second image with the same first three layers
        b2 = im.build_image([*layers[:3], im.tar_bytes([im.f("other", "x")])])
        ref2 = im.push_image(reg, "bench/other", "1", b2)
        events = []
        store.ensure_image(ref2, progress=events.append)
        final = events[-1]
        shared_bytes = final.bytes_done - len(im.compress(im.tar_bytes([im.f("other", "x")]),
                                                          "gzip"))
        extracted = [e.layer for e in events if e.phase == "extract"]
        print(f"4. shared base: layers cached {final.layers_cached}/3 shared, bytes downloaded "
              f"for shared layers {shared_bytes}, layers extracted {extracted} (goal: 0 and [4])")
    finally:
        reg.stop()
        destroy_pool(pool)
        stop_daemon()
        subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
