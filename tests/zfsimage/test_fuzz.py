"""Property-based fuzzing of layer application on a zfs-fuse dataset (issue 13).

Hypothesis draws layer stacks from the grammar in fuzz_layers.py and applies them with the real
``apply_layer`` below a root inside a zfs-fuse dataset. On every example:

- nothing outside the root changed (canary files, a canary symlink, the dataset's top level);
- no exception other than an ``ImageError`` escapes, and its message is one line;
- the model (oci_model.py) and the real apply agree: both refuse the same layer, or the tree
  equals the model's.

Two more properties: archives with bytes flipped and cut anywhere never end in anything but one
ImageError line; and the same stacks imported through ``ImageStore.import_layout`` (layout dir or
archive) leave no debris when refused (no layer dataset without its commit snapshot, no spool
file, no temp dir, no mount) and give a task clone equal to the model when accepted.

CI runs ``XC_FUZZ_EXAMPLES`` examples (default 300; a twentieth of them through the store;
derandomised so CI is stable); the longer campaign is ``python -m bench.image_fuzz``.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures.images import build_image, write_layout
from tests.fixtures.zpool import Pool
from tests.zfsimage.fuzz_layers import (
    Spec,
    layers,
    model_view,
    real_view,
    refused_by_header,
    render,
)
from tests.zfsimage.hostile import sandbox_snapshot
from tests.zfsimage.oci_model import Layer, Refused, Tree
from zfsimage import LayerLimits, zfs
from zfsimage.errors import ImageError
from zfsimage.extract import apply_layer

EXAMPLES = int(os.environ.get("XC_FUZZ_EXAMPLES", "300"))
CAMPAIGN = bool(os.environ.get("XC_FUZZ_CAMPAIGN"))
_n = itertools.count()


@pytest.fixture(scope="module")
def fuzz_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A zfs-fuse dataset; ``XC_FUZZ_DIR`` runs on any directory instead (quick iterations on
    the model, e.g. on tmpfs)."""
    if os.environ.get("XC_FUZZ_DIR"):
        d = Path(os.environ["XC_FUZZ_DIR"])
        d.mkdir(parents=True, exist_ok=True)
        yield d
        return
    zpool: Pool = request.getfixturevalue("zpool")
    ds = f"{zpool.name}/fuzz"
    mp = zpool.mount_root / "fuzz"
    zfs.create(ds, {"mountpoint": str(mp)})
    try:
        yield mp
    finally:
        zfs.destroy(ds, recursive=True)


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
    before = sandbox_snapshot(sandbox)
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
            assert sandbox_snapshot(sandbox) == before, "something outside the root changed"
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


@settings(max_examples=EXAMPLES, deadline=None, derandomize=not CAMPAIGN, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(layers(), st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=6),
       st.integers(0, 1 << 20))
def test_fuzz_mutated_archives(tmp_path_factory: pytest.TempPathFactory,
                               drawn: tuple[list[list[Spec]], list[bool]],
                               flips: list[tuple[int, int]], cut: int) -> None:
    """Bytes flipped and the archive cut anywhere: the reader and the apply end in the tree or
    in one ImageError line, never in another exception (no zfs needed: a temp directory)."""
    stack, _ = drawn
    data = bytearray(render(stack[0], False)[0])
    for pos, val in flips:
        if data:
            data[pos % len(data)] = val
    if cut % 3 == 0:
        del data[cut % (len(data) + 1):]
    base = tmp_path_factory.mktemp("mut")
    (base / "root").mkdir()
    blob = base / "layer.tar"
    blob.write_bytes(bytes(data))
    try:
        apply_layer(blob, "none", base / "root", None, LayerLimits(), what="layer 0")
    except ImageError as exc:
        assert str(exc).startswith("layer 0") and "\n" not in str(exc)
    finally:
        shutil.rmtree(base)


STORE_EXAMPLES = max(5, EXAMPLES // 20)


@pytest.fixture
def fuzz_store(make_store, tmp_path: Path):  # type: ignore[no-untyped-def]
    """One store for all examples of a run (Hypothesis calls the test once per example), and a
    private temp directory, so that what a layout archive's import leaves there is ours."""
    private = tmp_path / "tmp"
    private.mkdir()
    saved, tempfile.tempdir = tempfile.tempdir, str(private)
    try:
        yield make_store()
    finally:
        tempfile.tempdir = saved


def _store_debris(store) -> list[str]:  # type: ignore[no-untyped-def]
    raw = zfs.get([f"{store.ds}/layers"], ["type"], recursive=True)
    names = set(raw) - {f"{store.ds}/layers"}
    left = [n for n in names if "@" not in n and f"{n}@layer" not in names]
    left += [str(p) for p in (store.mount_root / "spool").iterdir()]
    left += [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
             if line.split()[1].startswith(str(store.mount_root / "layers"))]
    left += [str(p) for p in Path(tempfile.gettempdir()).iterdir()]
    return left


@settings(max_examples=STORE_EXAMPLES, deadline=None, derandomize=not CAMPAIGN, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(layers())
def test_fuzz_through_the_store(fuzz_store, tmp_path_factory: pytest.TempPathFactory,
                                drawn: tuple[list[list[Spec]], list[bool]]) -> None:
    """The same stacks imported as images: a refused layer leaves no layer dataset without its
    commit snapshot, no spool file, no temp dir, no mount; an accepted image's task clone is the
    model's tree."""
    stack, truncate = drawn
    store = fuzz_store
    tree = Tree()
    raws = []
    expect_ok = True
    for specs, cut in zip(stack, truncate, strict=True):
        data, kept, was_cut = render(specs, cut)
        raws.append(data)
        if expect_ok:
            expect_ok = _model_step(tree, kept, was_cut)
    built = build_image(raws, compression="gzip")
    lay = write_layout(tmp_path_factory.mktemp("lay") / "l", built)
    if len(raws) % 2:   # half the images come as a layout archive, unpacked to the temp dir
        archive = lay.parent / "l.tar"
        with tarfile.open(archive, "w") as tf:
            tf.add(lay, arcname=".")
        lay = archive
    ref = f"xctest/fuzz:{next(_n)}"
    try:
        img = store.import_layout(lay, ref)
    except ImageError as exc:
        assert "\n" not in str(exc) and "\x1b" not in str(exc)
        assert not expect_ok, f"model accepts the image, import refused: {exc}"
        assert _store_debris(store) == []
        return
    assert expect_ok, "model refuses the image, import accepted it"
    key = f"xctest-fz{next(_n)}"
    try:
        assert real_view(store.clone_rootfs(img, key)) == model_view(tree.nodes)
    finally:
        store.destroy_rootfs(key)

