"""Shared set-up for the jails benchmarks: a busybox rootfs, a runtime whose resources are named
like test resources (so the test sweep removes them after a crash), and teardown."""

from __future__ import annotations

import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jails import JailSpec, open_runtime
from jails.linux import LinuxRuntime
from tests.fixtures.rootfs import build_rootfs
from tests.fixtures.runc import (
    _remove_cgroup_tree,
    cgroup_parent,
    cleanup_state_root,
    state_root_path,
)
from tests.fixtures.sweep import test_name


@contextlib.contextmanager
def bench_env() -> Iterator[tuple[LinuxRuntime, Path, Path]]:
    work = Path(tempfile.mkdtemp(prefix=test_name("bench") + "-"))
    rootfs = build_rootfs(work / "rootfs")
    rt = open_runtime("linux", state_root_path(), cgroup_parent=cgroup_parent())
    assert isinstance(rt, LinuxRuntime)
    try:
        yield rt, rootfs, work
    finally:
        for name in rt.names():
            with contextlib.suppress(Exception):
                rt.destroy(name)
        cleanup_state_root(state_root_path())
        _remove_cgroup_tree(cgroup_parent())
        shutil.rmtree(work, ignore_errors=True)


def spec(rootfs: Path, work: Path, suffix: str, argv: tuple[str, ...]) -> JailSpec:
    return JailSpec(
        name=test_name(suffix),
        rootfs=rootfs,
        argv=argv,
        stdout_path=work / "task.log",
        stderr_path=work / "task.log",
    )


def bare_bundle(rootfs: Path, work: Path, argv: list[str]) -> Path:
    """A plain `runc spec` bundle (host network, like ours) for the baseline."""
    bundle = work / f"bundle-{argv[0].rsplit('/', 1)[-1]}"
    bundle.mkdir(exist_ok=True)
    subprocess.run(["runc", "spec"], cwd=bundle, check=True)
    cfg = json.loads((bundle / "config.json").read_text())
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = argv
    cfg["root"] = {"path": str(rootfs), "readonly": False}
    cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "network"]
    cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] not in ("/sys", "/sys/fs/cgroup")]
    cfg["linux"]["cgroupsPath"] = f"/{cgroup_parent()}/bare"
    (bundle / "config.json").write_text(json.dumps(cfg))
    return bundle


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000.0


def runc_root() -> Path:
    return state_root_path() / "bare-runc"
