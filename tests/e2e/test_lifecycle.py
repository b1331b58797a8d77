"""A task's whole life through the rig's task runner: start from the registry image, logs through
the FIFOs, exit codes, signals, OOM, stop with kill_signal/kill_timeout, inspect, destroy."""

from __future__ import annotations

import pytest

from tests.fixtures.nomad import Nomad

pytestmark = [pytest.mark.root, pytest.mark.slow]


def sh(script: str) -> str:
    """A config body running ``script`` with the image's /bin/sh."""
    escaped = script.replace("\\\\", "\\\\\\\\").replace('"', '\\\\"')
    return f'command = "/bin/sh"\nargs = ["-c", "{escaped}"]'


def test_hello_world_runs_from_the_image_and_cleans_up(nomad: Nomad) -> None:
    run = nomad.start()  # the image's own Cmd: cat /etc/hello
    res = nomad.wait(run)
    assert res["result"] == {"exit_code": 0, "signal": 0, "oom_killed": False}
    assert res["err"] == ""
    nomad.wait_for(lambda: run.stdout() == "hello from xc\n", what="the log file")
    assert run.handle["version"] >= 1
    assert run.handle["config"]["id"] == run.task_id
    inspect = nomad.inspect(run)
    assert inspect["task"]["state"] == "EXITED"
    assert inspect["driver"]["attributes"]["jail"] == run.jail
    nomad.destroy(run)
    assert not any(run.jail in str(v) for v in nomad.leftovers().values())
