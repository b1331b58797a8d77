"""The pull path under hostile registries: every failure is one line from the CLI (exit 1, no
traceback) and leaves nothing behind (no layer dataset without its commit snapshot, no spool
file, no image record)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.fixtures.images import build_image, f, tar_bytes
from tests.zfsimage.hostile_registry import MT_INDEX, HostileRegistry
from zfsimage import zfs
from zfsimage.cli import main

GOOD_LAYER = tar_bytes([f("hello", "hi")])


@pytest.fixture
def hreg() -> Iterator[HostileRegistry]:
    r = HostileRegistry()
    yield r
    r.stop()


def _image(reg: HostileRegistry, layers: list[bytes] | None = None,
           config: bytes | None = None, tweak: Callable[[dict[str, Any]], None] | None = None,
           tag: str = "1") -> dict[str, Any]:
    built = build_image(layers if layers is not None else [GOOD_LAYER])
    man = json.loads(built.manifest)
    for d, data in built.blobs.items():
        reg.blobs[d] = data
    if config is not None:
        man["config"] = {**man["config"], **reg.blob(config)}
    if tweak is not None:
        tweak(man)
    return reg.manifest(man, tag)


def _pull(store, reg: HostileRegistry, ref: str = "img:1") -> str:  # type: ignore[no-untyped-def]
    out, err = io.StringIO(), io.StringIO()
    rc = main(["--dataset", store.ds, "--mount-root", str(store.mount_root),
               "--insecure-registry", reg.host, "pull", "-q", f"{reg.host}/x/{ref}"], out, err)
    msg = err.getvalue()
    assert rc == 1, (rc, out.getvalue(), msg)
    assert msg.startswith("error: ") and msg.count("\n") == 1, msg
    assert "Traceback" not in msg and "internal error" not in msg, msg
    names = set(zfs.get([f"{store.ds}/layers"], ["type"], recursive=True)) - \
        {f"{store.ds}/layers"}
    assert [n for n in names if "@" not in n and f"{n}@layer" not in names] == []
    assert list((store.mount_root / "spool").iterdir()) == []
    assert store.list_images() == []
    return msg


def test_truncated_blob_bodies(make_store, hreg: HostileRegistry) -> None:
    _image(hreg)
    hreg.short_blobs = True
    msg = _pull(make_store(), hreg)
    assert hreg.host in msg or "sha256:" in msg


@pytest.mark.parametrize("delta", [-10, 10], ids=["smaller", "larger"])
def test_wrong_blob_sizes(make_store, hreg: HostileRegistry, delta: int) -> None:
    def tweak(man: dict[str, Any]) -> None:
        man["layers"][0]["size"] += delta
    _image(hreg, tweak=tweak)
    _pull(make_store(), hreg)


@pytest.mark.parametrize("config", [b"not json", b"[1, 2]", b'{"rootfs": {"diff_ids": 5}}',
                                    b'{"rootfs": {"diff_ids": ["md5:x"]}}'],
                         ids=["not-json", "list", "diff-ids-number", "diff-id-bad"])
def test_configs_that_are_not_configs(make_store, hreg: HostileRegistry, config: bytes) -> None:
    _image(hreg, config=config)
    _pull(make_store(), hreg)


@pytest.mark.parametrize("body", [b"{", b"[]", b'{"layers": null, "config": {}}',
                                  b'{"schemaVersion": 2, "layers": [5]}'],
                         ids=["truncated", "list", "layers-null", "layer-not-object"])
def test_manifests_of_the_wrong_shape(make_store, hreg: HostileRegistry, body: bytes) -> None:
    hreg.manifest(body, "1")
    _pull(make_store(), hreg)


def test_indexes_nested_too_deep(make_store, hreg: HostileRegistry) -> None:
    desc = _image(hreg, tag="inner")
    for _ in range(6):
        desc = hreg.manifest({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [desc]},
                             media_type=MT_INDEX)
    hreg.manifests["1"] = hreg.manifests[desc["digest"]]
    assert "max_index_depth" in _pull(make_store(), hreg)


def test_index_that_loops_to_itself(make_store, hreg: HostileRegistry) -> None:
    desc = _image(hreg, tag="inner")
    index = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [desc]}
    top = hreg.manifest(index, "1", media_type=MT_INDEX)
    hreg.lie_manifest = hreg.manifests[top["digest"]][0]   # every digest answers the index
    assert "digest" in _pull(make_store(), hreg)


def test_manifest_of_10000_layers(make_store, hreg: HostileRegistry) -> None:
    def many(man: dict[str, Any]) -> None:
        man["layers"] = man["layers"] * 10_000
    _image(hreg, tweak=many)
    msg = _pull(make_store(), hreg)
    assert "max_layers" in msg
    assert not [p for p in hreg.requests if "/blobs/" in p]
