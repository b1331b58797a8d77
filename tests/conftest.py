from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from tests.fixtures.sweep import sweep_all

# Shared fixtures are registered once, here: a session-scoped fixture imported into two conftest
# files would be two fixtures, each creating its own copy of the session resource.
pytest_plugins = [
    "tests.fixtures.zpool",
    "tests.fixtures.registry",
    "tests.fixtures.rootfs",
    "tests.fixtures.runc",
    "tests.fixtures.plugin",
    "tests.fixtures.network",  # before nomad, which imports it
    "tests.fixtures.nomad",
]


@pytest.fixture(scope="session", autouse=True)
def _sweep_stale_test_resources() -> Iterator[None]:
    sweep_all()
    yield
    sweep_all()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that need a FreeBSD kernel run on FreeBSD and are skipped, saying where they run,
    everywhere else."""
    if sys.platform.startswith("freebsd"):
        return
    skip = pytest.mark.skip(reason="needs a FreeBSD kernel: scripts/freebsd-vm.sh or .cirrus.yml")
    for item in items:
        if item.get_closest_marker("freebsd_kernel") is not None:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.fixtures.zpool import DAEMON_NOTES  # a plugin module: imported by pytest first
    if DAEMON_NOTES:
        terminalreporter.section("zfs-fuse daemon log (lines not printed on every start)")
        for line in DAEMON_NOTES:
            terminalreporter.write_line(line)
