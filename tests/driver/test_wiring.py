"""driver.wiring: components are built in one place and opened once, on first use."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from driver.config import PluginConfig
from driver.events import EventBus
from driver.wiring import Once, build_driver


def test_once_opens_one_component_whatever_the_threads() -> None:
    opened: list[object] = []

    def open_slowly() -> object:
        time.sleep(0.01)  # long enough for every thread to be waiting on the first open
        opened.append(object())
        return opened[-1]

    get = Once(open_slowly)
    seen: list[object] = []
    threads = [threading.Thread(target=lambda: seen.append(get())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(opened) == 1 and seen == opened * 8


def test_building_the_driver_opens_nothing(tmp_path: Path) -> None:
    # SetConfig may still change the settings: nothing runs a command or makes a dir before a
    # task needs the runtime or the store.
    driver = build_driver(PluginConfig(state_dir=str(tmp_path / "state")), EventBus())
    assert not (tmp_path / "state").exists()
    assert driver.tasks.root == tmp_path / "state" / "driver"
    driver.close()
