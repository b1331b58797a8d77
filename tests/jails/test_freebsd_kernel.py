"""The conformance suite on a real FreeBSD kernel: jail(8), rctl(8) enforcement, devd's OOM
notifications, procfs-free process listing. Marked ``freebsd_kernel``: skipped on Linux, run by
scripts/freebsd-vm.sh and .cirrus.yml (see docs/freebsd.md), where the host has
kern.racct.enable=1, devd running, and runs as root.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from jails import Limits, Runtime, open_runtime
from jails.rctl import memory_rules, rctl_rules, rule_filter
from tests.fixtures.freebsdroot import build_freebsd_rootfs
from tests.fixtures.sweep import test_name as resource_name
from tests.jails.conformance import RuntimeConformance

pytestmark = pytest.mark.freebsd_kernel


@pytest.fixture(scope="module")
def freebsd_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_freebsd_rootfs(tmp_path_factory.mktemp("fbsdroot") / "root")


@pytest.mark.racct
def test_the_kernel_takes_every_rule_we_make() -> None:
    """rctl_rule_add answers EOPNOTSUPP for an action a resource does not take (deny on a
    non-deniable one, throttle outside the I/O resources): every kind we emit must be taken."""
    jail = resource_name("rules")
    limits = Limits(memory_bytes=64 << 20, cpu_percent=50, max_processes=16, open_files=64)
    try:
        for rule in rctl_rules(jail, limits):
            subprocess.run(["rctl", "-a", rule], check=True, capture_output=True, text=True)
        listed = subprocess.run(["rctl", rule_filter(jail)], check=True, capture_output=True,
                                text=True).stdout.split()
        assert sorted(listed) == sorted(rctl_rules(jail, limits))
        assert set(memory_rules(jail, limits)) <= set(listed)
    finally:
        subprocess.run(["rctl", "-r", rule_filter(jail)], capture_output=True, check=False)


class TestFreeBSDRuntimeOnFreeBSD(RuntimeConformance):
    unsupported = {
        "test_readonly_root_keeps_dev_shm_writable": "FreeBSD has no /dev/shm (shm_open(2) "
        "objects live in the kernel)",
        "test_linux_abi_file_systems": "needs a Linux image; this rootfs is FreeBSD's /rescue (the "
        "parameters and mounts are exact tables in test_freebsd_linuxabi.py)",
    }

    @pytest.fixture
    def rootfs(self, freebsd_rootfs: Path) -> Path:
        return freebsd_rootfs

    @pytest.fixture
    def state_root(self, tmp_path_factory: pytest.TempPathFactory) -> Path:
        return tmp_path_factory.mktemp(resource_name("fbsd-state"))

    @pytest.fixture
    def rt(self, state_root: Path) -> Runtime:
        return open_runtime("freebsd", state_root)

    @pytest.fixture
    def fresh_rt(self, state_root: Path) -> Callable[[], Runtime]:
        return lambda: open_runtime("freebsd", state_root)
