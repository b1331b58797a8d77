"""Bind sources are resolved on the host at start; symlinks cannot redirect a mount."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from driver.config import ConfigError, MountSpec, TaskConfig
from driver.hostpaths import resolve_mount_sources, resolve_nomad_paths
from driver.taskspec import NomadMount, NomadTask


def task_with(*mounts: MountSpec) -> TaskConfig:
    return TaskConfig(image="busybox", mounts=mounts)


def bind(source: str, target: str = "/data", origin: str = "config.volumes[0]") -> MountSpec:
    return MountSpec("bind", source, target, origin=origin)


def test_allowed_path_resolves_to_itself(tmp_path: Path) -> None:
    allowed = tmp_path / "srv"
    (allowed / "data").mkdir(parents=True)
    out = resolve_mount_sources(task_with(bind(str(allowed / "data"))), str(tmp_path / "task"),
                                [str(allowed)])
    assert out.mounts[0].source == str(allowed / "data")


def test_symlink_planted_in_an_allowed_dir_is_refused(tmp_path: Path) -> None:
    allowed = tmp_path / "srv"
    allowed.mkdir()
    outside = tmp_path / "etc"
    outside.mkdir()
    os.symlink(outside, allowed / "evil")
    with pytest.raises(ConfigError) as info:
        resolve_mount_sources(task_with(bind(str(allowed / "evil"))), str(tmp_path / "task"),
                              [str(allowed)])
    assert info.value.field == "config.volumes[0]"
    assert f"resolves to {outside}" in str(info.value)


def test_symlink_inside_the_allowed_dir_mounts_its_target(tmp_path: Path) -> None:
    allowed = tmp_path / "srv"
    (allowed / "real").mkdir(parents=True)
    os.symlink(allowed / "real", allowed / "alias")
    out = resolve_mount_sources(task_with(bind(str(allowed / "alias"))), str(tmp_path / "task"),
                                [str(allowed)])
    assert out.mounts[0].source == str(allowed / "real")


def test_relative_source_through_a_planted_symlink_is_refused(tmp_path: Path) -> None:
    task_dir = tmp_path / "alloc" / "web"
    (task_dir / "local").mkdir(parents=True)
    os.symlink("/", task_dir / "local" / "escape")
    with pytest.raises(ConfigError) as info:
        resolve_mount_sources(task_with(bind("local/escape/etc", origin="config.mount[0]")),
                              str(task_dir), [])
    assert info.value.field == "config.mount[0]"
    assert "outside the task directory" in str(info.value)


def test_relative_source_inside_the_task_dir_is_kept(tmp_path: Path) -> None:
    task_dir = tmp_path / "alloc" / "web"
    (task_dir / "local").mkdir(parents=True)
    out = resolve_mount_sources(task_with(bind("local/cache")), str(task_dir), [])
    assert out.mounts[0].source == str(task_dir / "local" / "cache")


def test_no_allow_list_means_any_resolved_host_path(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    os.symlink(tmp_path / "a", tmp_path / "b")
    out = resolve_mount_sources(task_with(bind(str(tmp_path / "b"))), str(tmp_path / "t"), [])
    assert out.mounts[0].source == str(tmp_path / "a")


def test_nomad_dirs_and_volume_mounts_reach_the_backend_resolved(tmp_path: Path) -> None:
    """An operator's data_dir behind a symlink still works: the backend binds only resolved
    paths (it refuses a symlink in a bind source, which is how it notices a swap)."""
    (tmp_path / "disk" / "alloc-1" / "web").mkdir(parents=True)
    os.symlink(tmp_path / "disk", tmp_path / "nomad-data")
    (tmp_path / "vols" / "pg").mkdir(parents=True)
    os.symlink(tmp_path / "vols", tmp_path / "volumes")
    nomad = NomadTask(id="t", name="web", alloc_id="a", alloc_dir=str(tmp_path / "nomad-data" /
                      "alloc-1"), stdout_path="/o", stderr_path="/e",
                      mounts=(NomadMount(str(tmp_path / "volumes" / "pg"), "/pg", True),))
    out = resolve_nomad_paths(nomad)
    assert out.alloc_dir == str(tmp_path / "disk" / "alloc-1")
    assert out.task_dir == str(tmp_path / "disk" / "alloc-1" / "web")
    assert out.mounts == (NomadMount(str(tmp_path / "vols" / "pg"), "/pg", True),)
    assert (out.stdout_path, out.name, out.id) == ("/o", "web", "t")
