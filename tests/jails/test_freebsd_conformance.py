"""The conformance suite run on the FreeBSD backend against the fake FreeBSD host
(tests/fixtures/fakefreebsd.py) on Linux."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from jails import Runtime
from tests.fixtures.fakefreebsd import FakeFreeBSDHost
from tests.fixtures.rootfs import rootfs_copy
from tests.fixtures.runc import runc_usable
from tests.fixtures.sweep import test_name as resource_name
from tests.jails.conformance import RuntimeConformance

pytestmark = pytest.mark.root

LIMITS = "rctl/racct enforcement needs a FreeBSD kernel; the rules are asserted in test_freebsd.py"


@pytest.fixture(scope="module")
def fbsd_rootfs(busybox_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Own copy: the fake finds a jail's processes by their root directory.
    return rootfs_copy(busybox_rootfs, tmp_path_factory.mktemp("fbsd") / "jailroot")


class TestFreeBSDRuntimeOnFakeHost(RuntimeConformance):
    unsupported = {
        "test_env_cwd_hostname_user": "host.hostname needs a real jail (jail_params table tests)",
        "test_numeric_user_and_group": "jexec -U needs a user name (see test_freebsd.py)",
        "test_missing_command_fails_start_cleanly": "jexec reports a missing command as an exit",
        "test_exec_timeout_kills_the_command": "the fake jail has no procfs to list processes",
        "test_readonly_root_keeps_dev_shm_writable": "FreeBSD has no /dev/shm (shm_open(2) "
        "objects live in the kernel)",
        "test_stats_move": LIMITS,
        "test_memory_limit_oom_kill_reported": LIMITS,
        "test_under_memory_limit_no_oom": LIMITS,
        "test_pids_and_open_files_limits": LIMITS,
        "test_cpu_limit_enforced": LIMITS,
    }

    @pytest.fixture
    def host(self, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeFreeBSDHost]:
        if runc_usable() is not None or os.geteuid() != 0:
            pytest.skip("needs root (bind mounts, chroot) and cc")
        h = FakeFreeBSDHost(tmp_path_factory.mktemp(resource_name("fbsd")))
        yield h
        h.cleanup()

    @pytest.fixture
    def rootfs(self, fbsd_rootfs: Path) -> Path:
        return fbsd_rootfs

    @pytest.fixture
    def state_root(self, tmp_path_factory: pytest.TempPathFactory) -> Path:
        return tmp_path_factory.mktemp(resource_name("fbsd-state"))

    @pytest.fixture
    def rt(self, host: FakeFreeBSDHost, state_root: Path) -> Runtime:
        return host.runtime(state_root)

    @pytest.fixture
    def fresh_rt(self, host: FakeFreeBSDHost, state_root: Path) -> Callable[[], Runtime]:
        return lambda: host.runtime(state_root)
