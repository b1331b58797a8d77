"""A task's disk quota (``storage_opt = { size = ... }``) through the rig on zfs-fuse: a write past
it fails inside the task with EDQUOT, and nothing else notices (a neighbour without a quota, the
image's layer snapshot)."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.fixtures.nomad import Nomad, TaskRun
from tests.fixtures.sweep import test_name

pytestmark = [pytest.mark.root, pytest.mark.slow]

MIB = 1 << 20
# busybox dd (no applet link in the test image); dd's exit status goes to stdout
FILL = "/bin/busybox dd if=/dev/urandom of=/fill bs=1M count={mib} 2>&1; echo rc=$?"


def sh(script: str) -> str:
    return f'command = "/bin/sh"\nargs = ["-c", {json.dumps(script)}]'


def zfs_get(dataset: str, *props: str) -> dict[str, str]:
    out = subprocess.run(["zfs", "get", "-H", "-p", "-o", "property,value", ",".join(props),
                          dataset], capture_output=True, text=True, check=True).stdout
    return dict(line.split("\t", 1) for line in out.splitlines())


def layer_snapshots(nomad: Nomad) -> dict[str, str]:
    """{name: referenced} of every layer dataset of the store and of its commit snapshot
    (zfs-fuse has no ``written``)."""
    out = subprocess.run(["zfs", "get", "-H", "-p", "-r", "-o", "name,value", "referenced",
                          f"{nomad.dataset}/layers"],
                         capture_output=True, text=True, check=True).stdout
    return {n: rest for n, _, rest in (line.partition("\t") for line in out.splitlines())}


def finish(nomad: Nomad, run: TaskRun) -> None:
    nomad.destroy(run)
    left = nomad.leftovers()
    assert not any(run.jail in str(v) for v in left.values()), left


def test_a_write_past_the_quota_gets_edquot_and_nothing_else_is_affected(nomad: Nomad) -> None:
    warm = nomad.start()  # the image is in the store before we look at its snapshots
    nomad.wait(warm)
    finish(nomad, warm)
    layers = layer_snapshots(nomad)
    assert any("@" in n for n in layers), layers

    limited = nomad.start(sh(FILL.format(mib=64)) + '\nstorage_opt = { size = "8M" }')
    res = nomad.wait(limited)
    assert res["result"]["exit_code"] == 0, (limited.stdout(), limited.stderr())
    nomad.wait_for(lambda: "rc=" in limited.stdout(), what="the task's log")
    assert "Disk quota exceeded" in limited.stdout(), limited.stdout()
    assert "rc=1" in limited.stdout()
    ds = f"{nomad.dataset}/tasks/{limited.driver_state['rootfs_key']}"  # maybe a spare
    props = zfs_get(ds, "refquota", "referenced")
    assert props["refquota"] == str(8 * MIB)
    assert int(props["referenced"]) < 12 * MIB  # zfs may overshoot by what one txg held
    assert limited.driver_state["disk_bytes"] == 8 * MIB
    inspect = nomad.inspect(limited)
    assert inspect["driver"]["attributes"]["disk_quota_bytes"] == str(8 * MIB)

    # the neighbour on the same image has no quota: it writes three times the other's
    free = nomad.start(sh(FILL.format(mib=24)))
    assert nomad.wait(free)["result"]["exit_code"] == 0
    nomad.wait_for(lambda: "rc=" in free.stdout(), what="the neighbour's log")
    assert "rc=0" in free.stdout() and "quota" not in free.stdout(), free.stdout()
    free_ds = f"{nomad.dataset}/tasks/{free.driver_state['rootfs_key']}"
    assert zfs_get(free_ds, "refquota")["refquota"] == "0"
    assert "disk_quota_bytes" not in nomad.inspect(free)["driver"]["attributes"]

    assert layer_snapshots(nomad) == layers  # the image's layers took none of these writes
    finish(nomad, limited)
    finish(nomad, free)


def test_a_quota_smaller_than_the_image_names_the_option(nomad: Nomad) -> None:
    name = test_name("tiny")
    reply = nomad.start_raw('command = "/bin/true"\nstorage_opt = { size = "64k" }', name=name)
    assert not reply.get("ok")
    text = json.dumps(reply)
    assert "config.storage_opt.size" in text and "ask for more than" in text, reply
    left = nomad.leftovers()
    assert not any(name in str(v) for v in left.values()), left
