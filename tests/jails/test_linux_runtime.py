"""The conformance suite, for real, on the Linux backend (runc, cgroups, busybox rootfs)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest

from jails import JailSpec, Limits, Runtime
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

    def test_cpuset_pins_the_task(self, rt: Runtime, make_spec: Callable[..., JailSpec]) -> None:
        spec = make_spec(
            ["/bin/sh", "-c", "grep Cpus_allowed_list /proc/self/status"],
            limits=Limits(cpuset=(0,)),
        )
        rt.start(spec)
        assert rt.wait(spec.name, 20).exit_code == 0
        assert spec.stdout_path.read_text().split() == ["Cpus_allowed_list:", "0"]
