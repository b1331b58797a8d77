"""Property-based fuzzing of layer application on a zfs-fuse dataset (issue 13).

Hypothesis draws layer stacks from the grammar in fuzz_layers.py and applies them with the real
``apply_layer`` below a root inside a zfs-fuse dataset. On every example:

- nothing outside the root changed (canary files, a canary symlink, the dataset's top level);
- no exception other than an ``ImageError`` escapes, and its message is one line;
- the model (oci_model.py) and the real apply agree: both refuse the same layer, or the tree
  equals the model's.

CI runs ``XC_FUZZ_EXAMPLES`` examples (default 120, derandomised so CI is stable); the longer
campaign is ``python -m bench.image_fuzz``.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from tests.fixtures.zpool import Pool
from tests.zfsimage.fuzz_layers import (
    Spec,
    layers,
    model_view,
    real_view,
    refused_by_header,
    render,
)
from tests.zfsimage.oci_model import Layer, Refused, Tree
from zfsimage import LayerLimits, zfs
from zfsimage.errors import ImageError
from zfsimage.extract import apply_layer

EXAMPLES = int(os.environ.get("XC_FUZZ_EXAMPLES", "120"))
CAMPAIGN = bool(os.environ.get("XC_FUZZ_CAMPAIGN"))
_n = itertools.count()


@pytest.fixture(scope="module")
def fuzz_dir(zpool: Pool) -> Iterator[Path]:
    ds = f"{zpool.name}/fuzz"
    mp = zpool.mount_root / "fuzz"
    zfs.create(ds, {"mountpoint": str(mp)})
    try:
        yield mp
    finally:
        zfs.destroy(ds, recursive=True)


def _outside(sandbox: Path) -> dict[str, tuple[object, ...]]:
    snap: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(sandbox):
        if Path(dirpath) == sandbox:
            dirnames[:] = [n for n in dirnames if n != "root"]
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = os.lstat(p)
            h = hashlib.sha256(p.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else ""
            snap[str(p)] = (st.st_mode, st.st_uid, st.st_size, st.st_mtime_ns, h,
                            os.readlink(p) if stat.S_ISLNK(st.st_mode) else "")
    return snap


def _model_step(tree: Tree, specs: list[Spec], cut: bool) -> bool:
    """Apply one layer to the model; False when the model refuses it."""
    layer = Layer(tree)
    try:
        for s in specs:
            if refused_by_header(s):
                return False
            layer.apply(s.entry)
        if cut:
            return False
        layer.finish()
    except Refused:
        return False
    return True


def run_stack(top: Path, stack: list[list[Spec]], truncate: list[bool]) -> None:
    before_top = sorted(os.listdir(top))
    sandbox = top / f"ex{next(_n)}"
    root = sandbox / "root"
    root.mkdir(parents=True)
    out = sandbox / "outside"
    out.mkdir()
    (out / "canary").write_text("canary")
    os.symlink("canary", out / "link")
    before = _outside(sandbox)
    tree = Tree()
    try:
        for i, (specs, cut) in enumerate(zip(stack, truncate, strict=True)):
            data, kept, was_cut = render(specs, cut)
            blob = sandbox / f"layer{i}.tar"
            blob.write_bytes(data)
            expect_ok = _model_step(tree, kept, was_cut)
            err: ImageError | None = None
            try:
                apply_layer(blob, "none", root, None, LayerLimits(), what=f"layer {i}")
            except ImageError as exc:
                err = exc
            finally:
                blob.unlink()
            assert _outside(sandbox) == before, "something outside the root changed"
            if err is not None:
                msg = str(err)
                assert msg.startswith(f"layer {i}") and "\n" not in msg and "\x1b" not in msg
                assert not expect_ok, f"model accepts layer {i}, apply refused: {msg}"
                return
            assert expect_ok, f"model refuses layer {i}, apply accepted it"
            assert real_view(root) == model_view(tree.nodes)
    finally:
        shutil.rmtree(sandbox)
    assert sorted(os.listdir(top)) == before_top


@settings(max_examples=EXAMPLES, deadline=None, derandomize=not CAMPAIGN, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(layers())
def test_fuzz_layer_stacks(fuzz_dir: Path, drawn: tuple[list[list[Spec]], list[bool]]) -> None:
    stack, truncate = drawn
    run_stack(fuzz_dir, stack, truncate)
