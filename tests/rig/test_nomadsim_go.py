"""The rig's own Go unit tests (spec conversion, HCL pipeline, log checks), vet and gofmt."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.nomadsim.client import RIG_DIR, go_binary


def _go(rig_binary: Path, *args: str) -> subprocess.CompletedProcess[str]:
    del rig_binary  # only to reuse the session's skip-if-no-Go decision and build
    env = dict(os.environ)
    env["GOFLAGS"] = (env.get("GOFLAGS", "") + " -mod=readonly -buildvcs=false").strip()
    return subprocess.run(
        [go_binary(), *args], cwd=RIG_DIR, env=env, capture_output=True, text=True, timeout=600
    )


def test_go_unit_tests_pass(rig_binary: Path) -> None:
    res = _go(rig_binary, "test", "./...")
    assert res.returncode == 0, res.stdout + res.stderr


def test_go_vet_and_gofmt_are_clean(rig_binary: Path) -> None:
    vet = _go(rig_binary, "vet", "./...")
    assert vet.returncode == 0, vet.stdout + vet.stderr
    fmt = subprocess.run(
        [str(Path(go_binary()).parent / "gofmt"), "-l", "."],
        cwd=RIG_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert fmt.returncode == 0 and fmt.stdout == "", f"gofmt would change: {fmt.stdout}"
