"""A destroy that fails is finished later. Nomad ignores DestroyTask's errors and never asks
again, so a task clone kept busy (here: a host process holding a file in it, as an operator's
shell in the root would) must not stay behind once it is free: the plugin retries in the
background, and a plugin started after a crash finishes what the dead one marked."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.fixtures.nomad import Nomad, TaskRun

pytestmark = [pytest.mark.root, pytest.mark.slow]

SLEEP = 'command = "/bin/sleep"\nargs = ["600"]'


@contextmanager
def holding_a_file_in_the_root(nomad: Nomad, run: TaskRun) -> Iterator[None]:
    """Keep the task's clone busy: zfs cannot unmount it, so it cannot destroy it."""
    root = nomad.state_dir / "images" / "tasks" / run.root_key
    fd = os.open(root / "bin" / "busybox", os.O_RDONLY)
    try:
        yield
    finally:
        os.close(fd)


def left_of(nomad: Nomad, run: TaskRun) -> dict[str, list[str]]:
    def ours(x: str) -> bool:
        return run.jail in x or run.root_key in x

    return {k: [x for x in v if ours(x)] for k, v in nomad.leftovers().items()
            if any(ours(x) for x in v)}


def test_a_destroy_that_failed_is_finished_once_the_clone_is_free(nomad: Nomad) -> None:
    run = nomad.start(SLEEP)
    with holding_a_file_in_the_root(nomad, run):
        reply = nomad.destroy(run)
        assert not reply["ok"] and "cannot unmount" in reply["error"], reply
        left = left_of(nomad, run)
        # the task is gone; its clone, its record and the record's mark wait for the retry
        assert not left.get("containers") and left["clones"], left
        assert sorted(left["records"]) == [f"{run.jail}.destroying", f"{run.jail}.json"]
    nomad.wait_for(lambda: not left_of(nomad, run), timeout=60,
                   what="the retried destroy to remove the clone and the record")
    # Nomad forgot the task; so did the plugin, and a second destroy succeeds
    assert nomad.rpc("DestroyTask", {"task_id": run.task_id, "force": True})["ok"]


def test_a_plugin_started_after_a_crash_finishes_the_destroy(nomad: Nomad) -> None:
    run = nomad.start(SLEEP)
    with holding_a_file_in_the_root(nomad, run):
        assert not nomad.destroy(run)["ok"]
        nomad.kill_plugin()  # before its retry: only the mark on disk is left
    assert left_of(nomad, run)["clones"]
    nomad.relaunch()  # SetConfig from the agent resumes the marked destroys
    nomad.wait_for(lambda: not left_of(nomad, run), timeout=60,
                   what="the new plugin to finish the destroy")
