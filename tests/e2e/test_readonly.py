"""readonly_rootfs and tmpfs mounts through the rig: what a job file asks for is what the task
gets (issue 5, "build what users expect")."""

from __future__ import annotations

import json

import pytest

from tests.fixtures.nomad import Nomad

pytestmark = [pytest.mark.root, pytest.mark.slow]

SCRIPT = (
    "echo t > /tmp/t && echo tmp-rw; "
    "echo l > /local/l && echo local-rw; "
    "echo a > /alloc/a && echo alloc-rw; "
    "echo x > /etc/xc-test || echo etc-ro; "
    "stat -c %a /tmp; grep ' /tmp ' /proc/mounts"
)


def test_readonly_rootfs_with_a_tmpfs_tmp(nomad: Nomad) -> None:
    config = f"""
command = "/bin/sh"
args = ["-c", {json.dumps(SCRIPT)}]
readonly_rootfs = true
mount {{
  type   = "tmpfs"
  target = "/tmp"
  tmpfs_options {{
    size = 8388608
    mode = 1777
  }}
}}
"""
    run = nomad.start(config)
    res = nomad.wait(run)
    assert res["result"]["exit_code"] == 0, (run.stdout(), run.stderr())
    nomad.wait_for(lambda: " /tmp " in run.stdout(), what="the task's log")
    *lines, mount = run.stdout().splitlines()
    assert lines == ["tmp-rw", "local-rw", "alloc-rw", "etc-ro", "1777"]
    _, target, fstype, opts, *_ = mount.split()
    assert (target, fstype) == ("/tmp", "tmpfs"), mount
    assert {"rw", "nosuid", "nodev", "size=8192k"} <= set(opts.split(",")), mount
    assert "Read-only file system" in run.stderr()
    # The writes to the task's dirs reached the host; the image's clone was never written.
    assert (run.task_dir / "local" / "l").read_text() == "l\n"
    assert (run.alloc_dir / "alloc" / "a").read_text() == "a\n"
    nomad.destroy(run)
    left = nomad.leftovers()
    assert not any(run.jail in str(v) for v in left.values()), left


def test_bad_tmpfs_mode_names_the_field(nomad: Nomad) -> None:
    config = """
command = "/bin/true"
mount {
  type   = "tmpfs"
  target = "/tmp"
  tmpfs_options {
    mode = 1787
  }
}
"""
    reply = nomad.start_raw(config)
    assert not reply.get("ok")
    assert "config.mount[0].tmpfs_options.mode" in json.dumps(reply), reply
