"""Bind sources pinned by fd (Linux): the object checked is the object mounted, and pins never
outlive a start."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jails.errors import SpecError
from jails.pins import Pins
from jails.sourcefd import open_source

pytestmark = pytest.mark.root


def mountinfo_under(prefix: Path) -> list[list[str]]:
    """mountinfo lines (split) whose mount point is under ``prefix``."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == str(prefix) or fields[4].startswith(str(prefix) + "/"):
            out.append(fields)
    return out


def test_pins_mount_the_opened_objects_privately_and_release_leaves_the_data(
    tmp_path: Path,
) -> None:
    data = tmp_path / "srv" / "data"
    data.mkdir(parents=True)
    (data / "f").write_text("payload")
    single = tmp_path / "srv" / "single.conf"
    single.write_text("one file")
    pins = Pins(tmp_path / "state")
    pinned = pins.pin("task-a", [data, single])
    try:
        assert (pinned[0] / "f").read_text() == "payload"
        assert pinned[1].read_text() == "one file"
        lines = mountinfo_under(pins.root)
        assert sorted(f[4] for f in lines) == sorted(str(p) for p in pinned)
        # private: no shared/master peer group tag among the optional fields
        for f in lines:
            optional = f[6 : f.index("-")]
            assert not any(o.startswith(("shared:", "master:")) for o in optional), f
        assert pins.names() == ["task-a"]
    finally:
        pins.release("task-a")
    assert mountinfo_under(pins.root) == []
    assert pins.names() == []
    assert (data / "f").read_text() == "payload"          # released, never deleted through
    assert single.read_text() == "one file"
    pins.release("task-a")                                 # idempotent


def test_a_component_swapped_for_a_symlink_is_refused_and_nothing_stays_pinned(
    tmp_path: Path,
) -> None:
    """What a task sharing a volume could do between the driver's check and the mount."""
    allowed = tmp_path / "allowed"
    (allowed / "b").mkdir(parents=True)
    good = allowed / "a"
    good.mkdir()
    secret = tmp_path / "host-only"
    secret.mkdir()
    (secret / "shadow").write_text("host secret")
    checked = allowed / "b" / "data"        # resolved and checked by the driver: a plain dir
    checked.mkdir()
    # ... then swapped: the parent "b" becomes a symlink to a host dir
    os.rename(allowed / "b", allowed / "b.old")
    os.symlink(secret, allowed / "b")
    (secret / "data").mkdir()
    pins = Pins(tmp_path / "state")
    with pytest.raises(SpecError) as ei:
        pins.pin("task-b", [good, checked])
    assert "is a symbolic link" in str(ei.value) and str(allowed / "b") in str(ei.value)
    assert mountinfo_under(pins.root) == []
    assert pins.names() == []


def test_open_source_follows_nothing(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink("real", tmp_path / "link")
    fd = open_source(str(tmp_path / "real"))
    try:
        assert os.path.samestat(os.fstat(fd), os.stat(tmp_path / "real"))
    finally:
        os.close(fd)
    with pytest.raises(SpecError, match="symbolic link"):
        open_source(str(tmp_path / "link"))
    with pytest.raises(SpecError, match="does not exist"):
        open_source(str(tmp_path / "missing"))
