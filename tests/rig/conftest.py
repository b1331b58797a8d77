"""Fixtures for tests that drive a plugin through the Go Nomad-client rig (tests/nomadsim)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.nomadsim.client import Rig, build_rig, go_binary

ROOT = Path(__file__).resolve().parents[2]
MISBEHAVING = Path(__file__).resolve().parent / "misbehaving_plugin.py"


@pytest.fixture(scope="session")
def rig_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rig, built once per session (Go's build cache makes rebuilds cheap)."""
    try:
        go_binary()
    except FileNotFoundError as exc:
        pytest.skip(f"rig needs Go: {exc}")
    return build_rig(tmp_path_factory.mktemp("nomadsim-bin"))


@pytest.fixture
def rig(rig_binary: Path, tmp_path: Path) -> Iterator[Rig]:
    r = Rig.start(rig_binary, stderr_path=tmp_path / "nomadsim.log")
    try:
        yield r
    finally:
        r.stop()


def plugin_env(tmpdir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a plugin started by the rig: the repository importable, its temp dir
    (and so its unix socket) inside the test's own tmp_path."""
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": pythonpath, "TMPDIR": str(tmpdir), **(extra or {})}


@pytest.fixture
def penv(tmp_path: Path) -> dict[str, str]:
    """plugin_env for this test."""
    d = tmp_path / "plugin-tmp"
    d.mkdir()
    return plugin_env(d)


@pytest.fixture
def driver_argv() -> list[str]:
    """How Nomad would exec this installation's plugin."""
    return [sys.executable, "-m", "driver"]


@pytest.fixture
def misbehaving() -> Callable[[str], list[str]]:
    """argv of the deliberately broken plugin in one of its modes."""
    return lambda mode: [sys.executable, str(MISBEHAVING), mode]
