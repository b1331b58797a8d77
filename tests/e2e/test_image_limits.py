"""The plugin's ``image_limits {}`` through the rig: Nomad's hcldec turns the operator's HCL into
what the plugin decodes, a bad value is refused naming ``image_limits.<field>``, and a task whose
image goes over a lowered limit fails with one error naming the option that raises it, leaving
no layer without its commit snapshot."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.nomad import CGROUP_PARENT_ENV, ROOT, Nomad, cgroup_parent

pytestmark = [pytest.mark.root, pytest.mark.slow]

INSTANCE = "limits"


def zfs_names(dataset: str, kind: str) -> list[str]:
    cp = subprocess.run(["zfs", "list", "-H", "-o", "name", "-t", kind, "-r", dataset],
                        capture_output=True, text=True, check=False)
    return cp.stdout.split()


@pytest.fixture
def limited(nomad: Nomad) -> Iterator[tuple[Nomad, str, Path]]:
    """A second plugin with a dataset and state dir of its own: the session's store already
    holds the test image, and a limit is only checked when an image is pulled."""
    dataset = f"{nomad.dataset}-limits"
    state_dir = nomad.state_dir / "limits"  # under the session's: its fixture cleans it up
    env = {"PYTHONPATH": str(ROOT), CGROUP_PARENT_ENV: cgroup_parent()}
    nomad.rig.check("launch", instance=INSTANCE, argv=[sys.executable, "-m", "driver"], env=env,
                    dir=str(ROOT))
    try:
        yield nomad, dataset, state_dir
    finally:
        nomad.rig.call("shutdown", instance=INSTANCE, timeout=60)
        subprocess.run(["zfs", "destroy", "-r", "-f", dataset], capture_output=True, check=False)


def config_hcl(nomad: Nomad, dataset: str, state_dir: Path, limits: str) -> str:
    return "\n".join([
        f'dataset = "{dataset}"', 'backend = "linux"', f'state_dir = "{state_dir}"',
        f'allow_insecure_registries = ["{nomad.registry.host}"]',
        "image_limits {", limits, "}"])


def test_an_image_over_a_lowered_limit_fails_naming_the_plugin_option(
        limited: tuple[Nomad, str, Path]) -> None:
    nomad, dataset, state_dir = limited
    bad = nomad.rig.call("set_config", instance=INSTANCE,
                         hcl=config_hcl(nomad, dataset, state_dir, 'max_bytes = "lots"'))
    assert not bad["ok"]
    assert ("config.image_limits.max_bytes: 'lots' is not a size; set max_bytes to a size such "
            'as "64G"') in bad["error"], bad

    # Numbers for the size and the duration: hcldec hands them to the plugin as their digits.
    nomad.rig.check("set_config", instance=INSTANCE, hcl=config_hcl(
        nomad, dataset, state_dir,
        "max_entries = 5\nmax_bytes = 1073741824\nmax_apply_seconds = 600"))
    nomad.rig.check("init", instance=INSTANCE)
    reply = nomad.rig.call("run_task_start", instance=INSTANCE, timeout=125, timeout_s=120,
                           task=nomad.task_spec('command = "/bin/true"'),
                           alloc_root=str(nomad.alloc_root))
    assert not reply["ok"] and reply["stage"] == "rpc", reply
    assert reply["code"] == "FailedPrecondition"
    message = reply["message"]
    assert "more than 5 entries (max_entries)" in message
    assert message.endswith('raise image_limits.max_entries in the agent\'s plugin "xc" config '
                            "if the image is trusted"), message
    assert "\n" not in message and "Traceback" not in message
    assert reply.get("recoverable") is False

    # Nothing half-done: every layer dataset has its commit snapshot, no task clone exists.
    layers = [n for n in zfs_names(dataset, "filesystem") if n.startswith(f"{dataset}/layers/")]
    snaps = set(zfs_names(dataset, "snapshot"))
    assert [n for n in layers if f"{n}@layer" not in snaps] == []
    assert [n for n in zfs_names(dataset, "filesystem")
            if n.startswith(f"{dataset}/tasks/")] == []
