"""remove_tree against a tree that gets a last file while it is being removed."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest

from jails.taskdir import remove_tree


def test_remove_tree_survives_a_late_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = tmp_path / ".del-task"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "runc.log").write_text("x")
    real_rmtree = shutil.rmtree
    calls = []

    def rmtree_with_late_write(path: Path) -> None:
        calls.append(path)
        if len(calls) == 1:
            # What an exiting writer does: a file appears after rmtree emptied the directory.
            real_rmtree(tree / "sub")
            (tree / "late.tmp").write_text("late")
            raise OSError(errno.ENOTEMPTY, "Directory not empty", str(path))
        real_rmtree(path)

    monkeypatch.setattr(shutil, "rmtree", rmtree_with_late_write)
    remove_tree(tree)
    assert not tree.exists()
    assert len(calls) == 2


def test_remove_tree_of_nothing_is_fine(tmp_path: Path) -> None:
    remove_tree(tmp_path / "gone")
