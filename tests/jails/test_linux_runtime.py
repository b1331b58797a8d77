"""The conformance suite, for real, on the Linux backend (runc, cgroups, busybox rootfs)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest

from jails import JailSpec, Limits, Mount, Runtime
from jails.errors import SpecError
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

    def test_cgroup_and_pins_are_made_while_the_root_is_made_and_undone_with_a_failed_start(
        self, rt: Runtime, make_spec: Callable[..., JailSpec], rootfs: Path, tmp_path: Path
    ) -> None:
        from jails.linux import LinuxRuntime

        assert isinstance(rt, LinuxRuntime)
        src = tmp_path / "vol"
        src.mkdir()
        spec = make_spec(["/bin/true"], rootfs=tmp_path / "clone-under-way",
                         mounts=(Mount(src, "/vol"),))
        memcg = rt.cgroup(spec.name).dir("memory")
        pins = rt.state_root / "pins" / spec.name
        seen: list[tuple[bool, bool]] = []

        def ready() -> Path:
            # reserved before the root was asked for: the cgroup and the bind source's pin
            mounts = [line.split()[4] for line in
                      Path("/proc/self/mountinfo").read_text().splitlines()]
            seen.append((memcg.is_dir(), str(pins / "0") in mounts))
            raise OSError(5, "clone failed")

        with pytest.raises(OSError):
            rt.start(spec, rootfs_ready=ready)
        assert seen == [(True, True)]
        assert not memcg.exists() and not pins.exists()  # the failed start undid both
        rt.start(spec, rootfs_ready=lambda: rootfs)
        assert rt.wait(spec.name, 20).exit_code == 0
        assert not pins.exists()
        rt.destroy(spec.name)
        assert not memcg.exists()

    def test_cpuset_pins_the_task(self, rt: Runtime, make_spec: Callable[..., JailSpec]) -> None:
        spec = make_spec(
            ["/bin/sh", "-c", "grep Cpus_allowed_list /proc/self/status"],
            limits=Limits(cpuset=(0,)),
        )
        rt.start(spec)
        assert rt.wait(spec.name, 20).exit_code == 0
        assert spec.stdout_path.read_text().split() == ["Cpus_allowed_list:", "0"]

    def test_bind_sources_are_pinned_for_the_start_only(
        self, rt: Runtime, make_spec: Callable[..., JailSpec], tmp_path: Path
    ) -> None:
        src = tmp_path / "vol"
        src.mkdir()
        (src / "in").write_text("from the host")
        spec = make_spec(["/bin/sh", "-c", "cat /vol/in; echo back > /vol/out; sleep 30"],
                         mounts=(Mount(src, "/vol"),))
        rt.start(spec)
        pins_root = rt.state_root / "pins"
        mounted = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text()
                   .splitlines() if line.split()[4].startswith(str(pins_root))]
        assert mounted == []                       # released once runc had made its mounts
        assert not (pins_root / spec.name).exists()
        for _ in range(100):
            if (src / "out").exists():
                break
            time.sleep(0.05)
        assert (src / "out").read_text() == "back\n"  # the task still has its mount
        rt.destroy(spec.name)
        assert (src / "in").read_text() == "from the host"

    def test_a_bind_source_swapped_before_the_mount_is_refused(
        self, rt: Runtime, make_spec: Callable[..., JailSpec], tmp_path: Path
    ) -> None:
        (tmp_path / "host-secret").mkdir()
        (tmp_path / "host-secret" / "key").write_text("secret")
        (tmp_path / "shared").mkdir()
        # the driver resolved /shared/app to a plain dir; a task with the shared volume then
        # replaced "app" with a symlink to a host dir before this start mounted it
        os.symlink(tmp_path / "host-secret", tmp_path / "shared" / "app")
        spec = make_spec(["/bin/cat", "/data/key"],
                         mounts=(Mount(tmp_path / "shared" / "app", "/data"),))
        with pytest.raises(SpecError, match="symbolic link"):
            rt.start(spec)
        assert not rt.exists(spec.name)
        assert rt.pins.names() == []  # type: ignore[attr-defined]
