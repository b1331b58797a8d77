from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.fixtures.zpool import Pool
from zfsimage import ImageStore, RegistryOptions, StoreConfig, zfs

_n = itertools.count()


@pytest.fixture
def make_store(zpool: Pool,
               request: pytest.FixtureRequest
               ) -> Iterator[Callable[..., ImageStore]]:
    """Build ImageStores on fresh datasets of the session pool; destroyed after the test."""
    made: list[str] = []

    def make(**kw: Any) -> ImageStore:
        n = next(_n)
        ds = kw.pop("dataset", f"{zpool.name}/s{n}")
        opts = kw.pop("registry", None) or RegistryOptions(
            insecure_registries=tuple(kw.pop("insecure", ())), retries=3, backoff_s=0.05)
        cfg = StoreConfig(dataset=ds, mount_root=zpool.mount_root / f"s{n}", registry=opts, **kw)
        made.append(ds)
        return ImageStore(cfg)

    yield make
    for ds in reversed(made):
        zfs.destroy(ds, recursive=True)
