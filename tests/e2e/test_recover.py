"""The plugin is SIGKILLed while tasks run; a new plugin recovers them from their handles alone
(and from handles whose task config bytes were lost, as after an agent restart)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.fixtures.nomad import Nomad, TaskRun

pytestmark = [pytest.mark.root, pytest.mark.slow]


def sh(script: str) -> str:
    return f'command = "/bin/sh"\nargs = ["-c", {json.dumps(script)}]'


TICKER = "echo ready; i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.1; done"
# Exits 42 once the test drops /alloc/go (a file in the shared alloc dir).
GATED = "echo ready; while ! test -e /alloc/go; do sleep 0.05; done; exit 42"


def exit_recorded(nomad: Nomad, run: TaskRun) -> bool:
    return (nomad.state_dir / "jails" / "tasks" / run.jail / "exit.json").exists()


def ticks(run: TaskRun) -> int:
    return sum(1 for line in run.stdout().splitlines() if line.startswith("tick"))


@pytest.mark.parametrize("agent_restart", [False, True], ids=["plugin-crash", "agent-restart"])
def test_tasks_survive_a_plugin_sigkill_and_are_recovered(nomad: Nomad,
                                                          agent_restart: bool) -> None:
    running = nomad.start(sh(TICKER))
    gated = nomad.start(sh(GATED))
    for run in (running, gated):
        nomad.wait_for(lambda run=run: "ready" in run.stdout(), what="the task to start")
    old_pid = nomad.kill_plugin()
    # While no plugin runs: the ticker keeps going, the gated task exits with 42.
    before = ticks(running)
    (gated.alloc_dir / "alloc" / "go").touch()
    nomad.wait_for(lambda: exit_recorded(nomad, gated), what="the gated task's exit")
    nomad.wait_for(lambda: ticks(running) > before + 2, what="ticks without a plugin")
    assert not Path(f"/proc/{old_pid}").exists()

    nomad.relaunch()
    for run in (running, gated):
        reply = nomad.recover(run, agent_restart=agent_restart)
        assert reply["ok"], reply
        if agent_restart:
            assert not reply["handle"]["config"].get("msgpack_driver_config")
        assert nomad.recover(run, agent_restart=agent_restart)["ok"]  # idempotent
    assert nomad.wait(gated)["result"] == {"exit_code": 42, "signal": 0, "oom_killed": False}
    assert nomad.inspect(running)["task"]["state"] == "RUNNING"
    after = ticks(running)
    nomad.wait_for(lambda: ticks(running) > after + 2, what="ticks after recovery")
    # The recovered plugin drives the task as the first did.
    assert nomad.stop(running)["wait"]["result"]["exit_code"] in (130, 137, 143)
    for run in (running, gated):
        nomad.destroy(run)
        assert not any(run.jail in str(v) for v in nomad.leftovers().values())


def test_recovering_a_vanished_task_is_an_error_and_destroy_still_cleans(nomad: Nomad) -> None:
    run = nomad.start(sh(TICKER))
    nomad.wait_for(lambda: "ready" in run.stdout(), what="the task to start")
    nomad.kill_plugin()
    # The task vanishes while no plugin runs (e.g. the host rebooted): supervisor and all.
    state = nomad.state_dir / "jails" / "tasks" / run.jail
    pids = json.loads((state / "task.json").read_text())
    os.kill(int(pids["supervisor_pid"]), signal.SIGKILL)
    os.kill(int(pids["pid"]), signal.SIGKILL)
    nomad.relaunch()
    reply = nomad.recover(run)
    assert not reply["ok"] and reply["code"] == "NotFound"
    assert "is gone" in reply["message"]
    # Nomad then destroys the handle it could not recover (force) and starts the task anew.
    nomad.destroy(run)
    assert not any(run.jail in str(v) for v in nomad.leftovers().values())
