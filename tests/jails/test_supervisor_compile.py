"""The C supervisor compiles, warnings as errors, for every target it runs on: natively (Linux),
for FreeBSD amd64 and arm64 with Zig's C compiler (PyPI ``ziglang``, which ships FreeBSD's libc
headers, so the FreeBSD-only branches are compiled on every run), and the fake FreeBSD host's
Linux build. The FreeBSD binaries are linked too, and must be FreeBSD executables. Every unit
is compiled and shipped, and the build cache key covers every source file and the defines."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from importlib import resources
from pathlib import Path

import pytest

from jails import cgbatch, supervisor

JAILS = Path(str(resources.files("jails")))
WARNINGS = ["-Wall", "-Wextra", "-Werror"]


def _compile(cc: list[str], out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    units = [str(JAILS / u) for u in supervisor.UNITS]
    return subprocess.run([*cc, *WARNINGS, *extra, "-o", str(out), *units],
                          capture_output=True, text=True, timeout=300, check=False)


def test_every_c_file_is_a_listed_source_and_shipped() -> None:
    """A unit added to jails/ but not to SOURCES would be left out of the build and of the cache
    key; one missing from package-data would be absent from an installed plugin. The C files are
    the supervisor's and the cgroup batch reader's (jails/cgbatch.py)."""
    on_disk = {p.name for p in JAILS.iterdir() if p.suffix in (".c", ".h")}
    assert on_disk == set(supervisor.SOURCES) | set(cgbatch.SOURCES)
    assert set(supervisor.UNITS) | set(cgbatch.SOURCES) == {n for n in on_disk
                                                            if n.endswith(".c")}
    pyproject = tomllib.loads((JAILS.parent / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["jails"]
    assert all(any(fnmatch(n, pat) for pat in patterns) for n in on_disk)


@pytest.mark.skipif(shutil.which("cc") is None, reason="no native C compiler (cc)")
def test_the_cgroup_reader_builds_without_warnings(tmp_path: Path) -> None:
    proc = subprocess.run(["cc", *WARNINGS, "-shared", "-fPIC", "-o", str(tmp_path / "cg.so"),
                           *(str(JAILS / u) for u in cgbatch.SOURCES)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


@pytest.mark.parametrize("name", supervisor.SOURCES)
def test_cache_key_covers_every_source_file(name: str) -> None:
    sources = {n: (JAILS / n).read_bytes() for n in supervisor.SOURCES}
    key = supervisor._digest(sources, [])
    assert supervisor._digest({**sources, name: sources[name] + b"\n"}, []) != key
    assert supervisor._digest(sources, ['XC_FAKE_JAILS="/j"']) != key


def _is_freebsd_executable(path: Path) -> bool:
    """FreeBSD's run-time linker as interpreter and the ABI note FreeBSD's kernel looks for."""
    data = path.read_bytes()
    return data[:4] == b"\x7fELF" and b"/libexec/ld-elf.so.1\0" in data and b"FreeBSD\0" in data


@pytest.mark.skipif(shutil.which("cc") is None, reason="no native C compiler (cc)")
@pytest.mark.parametrize("defines", [[], ['-DXC_FAKE_JAILS="/nonexistent/jails"']],
                         ids=["native", "fake-freebsd-host"])
def test_native_build_has_no_warnings(tmp_path: Path, defines: list[str]) -> None:
    proc = _compile(["cc"], tmp_path / "xc-supervisor", *defines)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


@pytest.mark.parametrize("target", ["x86_64-freebsd", "aarch64-freebsd"])
def test_freebsd_build_has_no_warnings(tmp_path: Path, target: str) -> None:
    pytest.importorskip("ziglang", reason="dev dependency ziglang (pip install -e '.[dev]')")
    out = tmp_path / "xc-supervisor"
    proc = _compile([sys.executable, "-m", "ziglang", "cc", "-target", target], out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert _is_freebsd_executable(out)


def test_a_warning_fails_the_build(tmp_path: Path) -> None:
    """The flags really turn warnings into errors (else the tests above could not fail)."""
    pytest.importorskip("ziglang", reason="dev dependency ziglang (pip install -e '.[dev]')")
    src = tmp_path / "w.c"
    src.write_text("int main(void) { int unused; return 0; }\n")
    proc = subprocess.run([sys.executable, "-m", "ziglang", "cc", "-target", "x86_64-freebsd",
                           *WARNINGS, "-o", str(tmp_path / "w"), str(src)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode != 0 and "unused" in proc.stderr
