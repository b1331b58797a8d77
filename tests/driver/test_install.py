"""`nomad-driver-xc install --plugin-dir DIR`: a launcher Nomad can exec as DIR/xc."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.fixtures.plugin import COOKIE_KEY, ROOT, plugin_env, start_plugin


def run_install(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in plugin_env().items() if k != COOKIE_KEY}
    return subprocess.run([sys.executable, "-m", "driver", "install", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_install_writes_an_executable_regular_file_that_is_the_plugin(tmp_path: Path) -> None:
    plugin_dir = tmp_path / "plugins"
    res = run_install("--plugin-dir", str(plugin_dir))
    assert res.returncode == 0, res.stderr
    target = plugin_dir / "xc"
    st = target.lstat()
    assert stat.S_ISREG(st.st_mode) and st.st_mode & 0o111
    assert [p.name for p in plugin_dir.iterdir()] == ["xc"]  # no temp files left behind
    assert 'plugin "xc"' in res.stdout

    # Run by hand from anywhere (no PYTHONPATH): the clear sentence and exit 1.
    bare_env = {k: v for k, v in os.environ.items() if k not in (COOKIE_KEY, "PYTHONPATH")}
    by_hand = subprocess.run([str(target)], cwd="/", env=bare_env, capture_output=True,
                             text=True, timeout=30)
    assert by_hand.returncode == 1 and "Nomad" in by_hand.stderr

    # Started as Nomad would: the handshake.
    pp = start_plugin(command=[str(target)], env={"PYTHONPATH": ""})
    try:
        assert pp.handshake.startswith("1|2|unix|")
    finally:
        pp.stop()


def test_install_replaces_a_dangling_link_and_is_idempotent(tmp_path: Path) -> None:
    (tmp_path / "xc").symlink_to(tmp_path / "gone")
    assert run_install("--plugin-dir", str(tmp_path)).returncode == 0
    first = (tmp_path / "xc").read_text()
    assert not (tmp_path / "xc").is_symlink()
    assert run_install("--plugin-dir", str(tmp_path)).returncode == 0
    assert (tmp_path / "xc").read_text() == first


def test_install_refuses_a_file_as_plugin_dir(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("")
    res = run_install("--plugin-dir", str(f))
    assert res.returncode == 1
    assert "is not a directory" in res.stderr


def test_install_needs_the_plugin_dir_option() -> None:
    res = run_install()
    assert res.returncode == 2 and "--plugin-dir" in res.stderr
