"""The marks a destroy leaves for its retries, and the per-name lock that keeps a retried destroy
away from the start of a newer incarnation (e2e cases: tests/e2e/test_destroy_retry.py)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from driver.driver import NameLocks
from driver.state import DriverState
from driver.taskstore import TaskStore


def state(task_id: str, name: str = "xc-a-web") -> DriverState:
    return DriverState(task_id=task_id, alloc_id="a", task_name="web", name=name,
                       rootfs_key=name, image="img", image_digest="sha256:0", started_at=1.0)


def test_a_mark_names_its_incarnation_and_goes_with_the_record(tmp_path: Path) -> None:
    store = TaskStore(tmp_path)
    old = state("a/web/1")
    store.save(old)
    store.mark_destroying(old)
    assert store.being_destroyed() == [old]
    store.forget(old.name)
    assert store.being_destroyed() == [] and list(tmp_path.iterdir()) == []


def test_a_mark_of_an_earlier_incarnation_or_without_a_record_is_dropped(tmp_path: Path) -> None:
    store = TaskStore(tmp_path)
    old, new = state("a/web/1"), state("a/web/2")
    store.save(old)
    store.mark_destroying(old)
    store.save(new)  # a newer incarnation took the name: its things are not garbage
    assert store.being_destroyed() == []
    assert [p.name for p in tmp_path.iterdir()] == [f"{new.name}.json"]
    gone = state("b/web/1", name="xc-b-web")
    store.mark_destroying(gone)  # a destroy that ended between forget's two unlinks
    assert store.being_destroyed() == [] and not (tmp_path / "xc-b-web.destroying").exists()


def test_one_name_is_held_by_one_caller_at_a_time_and_others_run_beside() -> None:
    locks = NameLocks()
    inside: list[str] = []
    overlap = threading.Event()

    def hold(name: str, tag: str) -> None:
        with locks.hold(name):
            if any(t.startswith(name) for t in inside):
                overlap.set()
            inside.append(f"{name}:{tag}")
            time.sleep(0.05)
            inside.remove(f"{name}:{tag}")

    threads = [threading.Thread(target=hold, args=("x", str(i))) for i in range(4)]
    with locks.hold("y"):  # another name does not wait for it
        for t in threads:
            t.start()
        time.sleep(0.02)
        assert any(t.startswith("x") for t in inside)
    for t in threads:
        t.join()
    assert not overlap.is_set()
    assert locks._locks == {}  # nothing kept for names no one holds
