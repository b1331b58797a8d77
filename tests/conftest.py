from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.sweep import sweep_all


@pytest.fixture(scope="session", autouse=True)
def _sweep_stale_test_resources() -> Iterator[None]:
    sweep_all()
    yield
    sweep_all()
