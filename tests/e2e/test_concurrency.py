"""20 tasks started and stopped at once: all succeed, and nothing is left on the host."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.fixtures.nomad import Nomad, TaskRun

pytestmark = [pytest.mark.root, pytest.mark.slow]

N = 20
SCRIPT = "echo ready; while :; do sleep 0.1; done"


def test_twenty_tasks_start_and_stop_concurrently_and_leave_nothing(nomad: Nomad) -> None:
    before = nomad.leftovers()

    def life(i: int) -> tuple[TaskRun, dict[str, object]]:
        run = nomad.start(f'command = "/bin/sh"\nargs = ["-c", {json.dumps(SCRIPT)}]',
                          kill_signal="SIGKILL", kill_timeout_s=5, timeout=240)
        nomad.wait_for(lambda: "ready" in run.stdout(), timeout=120, what=f"task {i}")
        stopped = nomad.stop(run, timeout=120)
        destroyed = nomad.destroy(run)
        assert destroyed["ok"], destroyed
        return run, stopped

    with ThreadPoolExecutor(N) as pool:
        results = list(pool.map(life, range(N)))
    assert len({run.jail for run, _ in results}) == N
    for _, stopped in results:
        assert stopped["wait"]["result"]["signal"] == 9
    after = nomad.leftovers()
    for kind in ("containers", "state_dirs", "clones", "mounts", "cgroups", "records"):
        assert after[kind] == before[kind], (kind, after[kind])
