"""python -m plugin_proto.gen --check: passes on the committed files, fails when stale."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.plugin import ROOT

pytestmark = pytest.mark.skipif(shutil.which("protoc-gen-mypy") is None,
                                reason="mypy-protobuf (protoc-gen-mypy) is not installed")


def check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "plugin_proto.gen", "--check"], cwd=root,
                          capture_output=True, text=True, timeout=120)


def test_committed_generated_code_is_fresh() -> None:
    res = check(ROOT)
    assert res.returncode == 0, res.stderr


def test_check_fails_when_a_proto_changed(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "plugin_proto", tmp_path / "plugin_proto",
                    ignore=shutil.ignore_patterns("__pycache__"))
    proto = tmp_path / "plugin_proto" / "structs.proto"
    proto.write_text(proto.read_text().replace("bool recoverable = 1;",
                                               "bool recoverable = 1;\n  string why = 2;"))
    res = check(tmp_path)
    assert res.returncode == 1
    assert "structs_pb2.py" in res.stderr and "python -m plugin_proto.gen" in res.stderr
