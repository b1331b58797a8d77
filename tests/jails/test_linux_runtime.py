"""The conformance suite, for real, on the Linux backend (runc, cgroups, busybox rootfs)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest

from jails import Runtime
from tests.jails.conformance import RuntimeConformance

pytestmark = pytest.mark.root


class TestLinuxRuntime(RuntimeConformance):
    @pytest.fixture
    def rootfs(self, busybox_rootfs: Path) -> Path:
        return busybox_rootfs

    @pytest.fixture
    def rt(self, linux_runtime_factory: Callable[[], object]) -> Runtime:
        return cast(Runtime, linux_runtime_factory())

    @pytest.fixture
    def fresh_rt(self, linux_runtime_factory: Callable[[], object]) -> Callable[[], Runtime]:
        return lambda: cast(Runtime, linux_runtime_factory())
