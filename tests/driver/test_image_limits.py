"""The plugin's ``image_limits {}`` block: every LayerLimits field, decoded, wired to the store,
and named in the error a task gets when its image hits one."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path
from typing import Any

import pytest

from driver import wiring
from driver.config import PLUGIN_SCHEMA, ConfigError, PluginConfig, TaskConfig, decode_plugin_config
from driver.driver import XcDriver
from driver.errors import StartFailed
from driver.hclschema import Section
from driver.state import Resources
from driver.taskspec import NomadTask
from driver.taskstore import TaskStore
from tests.driver.ctyenc import nomad_bytes
from tests.driver.fakes import FakeImages, FakeRuntime
from zfsimage.errors import LimitExceeded
from zfsimage.limits import LayerLimits

GIB = 1024**3


def decoded(**limits: Any) -> LayerLimits:
    raw = nomad_bytes(PLUGIN_SCHEMA, {"image_limits": limits})
    return decode_plugin_config(raw, "linux").image_limits


def test_every_layer_limit_is_an_option_with_its_default() -> None:
    section = next(s for s in PLUGIN_SCHEMA if s.key == "image_limits")
    assert isinstance(section, Section)
    assert [f.key for f in section.fields] == [f.name for f in dataclasses.fields(LayerLimits)]
    assert decoded() == LayerLimits()
    assert decode_plugin_config(b"", "linux").image_limits == LayerLimits()
    assert PluginConfig().image_limits == LayerLimits()


def test_raised_values_decode_to_layer_limits() -> None:
    got = decoded(max_bytes="128G", max_file_size="68719476736", max_meta_size="2MiB",
                  max_entries=2_000_000, max_layers=512, max_apply_seconds="2h30m",
                  device_nodes="create")
    assert got == LayerLimits(max_bytes=128 * GIB, max_file_size=64 * GIB,
                              max_meta_size=2 * 1024**2, max_entries=2_000_000, max_layers=512,
                              max_apply_seconds=9000.0, device_nodes="create")
    # a number written for max_apply_seconds reaches the plugin as its digits (HCL conversion)
    assert decoded(max_apply_seconds="90").max_apply_seconds == 90.0


@pytest.mark.parametrize(
    ("limits", "field", "words"),
    [
        ({"max_bytes": "lots"}, "max_bytes", "'lots' is not a size; set max_bytes to a size such "
         'as "64G"'),
        ({"max_bytes": "0"}, "max_bytes", "must be more than zero"),
        ({"max_temp_bytes": "1.5G"}, "max_temp_bytes", "not a size"),
        ({"max_entries": 0}, "max_entries", "0 is below 1; set max_entries to a whole number"),
        ({"max_layers": 2.5}, "max_layers", "not a whole number"),
        ({"max_apply_seconds": "soon"}, "max_apply_seconds", '"soon" is not a duration; set '
         'max_apply_seconds to a duration such as "1h" or a number of seconds'),
        ({"max_apply_seconds": "0"}, "max_apply_seconds", "must be more than zero"),
        ({"device_nodes": "mknod"}, "device_nodes",
         "'mknod' is not one of skip, create; set device_nodes = \"skip\" or \"create\""),
    ],
    ids=lambda v: v if isinstance(v, str) and " " not in v else "",
)
def test_bad_limits_name_the_field_and_what_to_write(limits: dict[str, Any], field: str,
                                                     words: str) -> None:
    with pytest.raises(ConfigError) as info:
        decoded(**limits)
    assert info.value.field == f"config.image_limits.{field}"
    assert words in str(info.value)


def test_the_limits_reach_the_image_store(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(wiring.zfsimage, "ImageStore", seen.append)
    config = dataclasses.replace(PluginConfig(state_dir=str(tmp_path)),
                                 image_limits=decoded(max_entries=7, max_bytes="1G"))
    wiring.open_image_store(config)
    assert seen[0].limits == LayerLimits(max_entries=7, max_bytes=GIB)


# ---- what a task is told ----

ALLOC = "0b5c4d3e-1111-2222-3333-444455556666"


def start_failure(tmp_path: Path, exc: BaseException) -> StartFailed:
    images = FakeImages(tmp_path / "state" / "images")
    images.fail("ensure_image", exc)
    runtime = FakeRuntime()
    d = XcDriver(PluginConfig(state_dir=str(tmp_path / "state")), runtime=lambda: runtime,
                 images=lambda: images, tasks=TaskStore(tmp_path / "state" / "driver"))
    nomad = NomadTask(id=f"{ALLOC}/web/1a2b3c4d", name="web", alloc_id=ALLOC,
                      alloc_dir=str(tmp_path / "alloc"), stdout_path=str(tmp_path / "out"),
                      stderr_path=str(tmp_path / "err"),
                      resources=Resources(cpu_mhz=100, memory_mb=64))

    async def start() -> None:
        await asyncio.wait_for(d.start_task(nomad, TaskConfig(image="reg.example/app:1")), 10)

    with pytest.raises(StartFailed) as info:
        asyncio.run(start())
    return info.value


def test_a_limit_hit_names_the_plugin_option_that_raises_it(tmp_path: Path) -> None:
    err = start_failure(tmp_path, LimitExceeded(
        "layer sha256:ab12: more than 10 entries (max_entries)", "max_entries"))
    assert str(err) == ("image reg.example/app:1: layer sha256:ab12: more than 10 entries "
                        "(max_entries); raise image_limits.max_entries in the agent's plugin "
                        '"xc" config if the image is trusted')
    assert err.recoverable is False


def test_an_unexpected_pull_error_is_one_line_and_a_logged_traceback(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="driver"):
        err = start_failure(tmp_path, KeyError("bad\n\x1b[31mkey"))
    assert "\n" not in str(err) and "\x1b" not in str(err)
    assert str(err).startswith("image reg.example/app:1: the pull failed on an unexpected "
                               "KeyError")
    assert "plugin log" in str(err)
    assert err.recoverable is True
    (record,) = [r for r in caplog.records if r.exc_info]
    assert record.exc_info is not None and isinstance(record.exc_info[1], KeyError)
