"""Compile C shipped in the jails package once per state root: ``<state_root>/bin/<stem>-<key>``.

The artifact is named by a hash of its source files and defines, compiled to a temporary name and
renamed into place, so concurrent first uses and upgrades never run a half-written or stale one.
Used for the task supervisor (an executable) and the cgroup batch reader (a shared library).
"""

from __future__ import annotations

import functools
import hashlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

from jails.errors import HostUnsupported


def sources(names: Sequence[str]) -> dict[str, bytes]:
    files = resources.files("jails")
    out = {}
    for name in names:
        try:
            out[name] = files.joinpath(name).read_bytes()
        except FileNotFoundError as exc:
            raise HostUnsupported(
                f"jails/{name} is not installed with the package: add it to package-data"
            ) from exc
    return out


def digest(srcs: Mapping[str, bytes], defines: Sequence[str]) -> str:
    h = hashlib.sha256()
    for name in sorted(srcs):
        # Length-prefixed, so moving text between files or defines always changes the key.
        for part in (name.encode(), srcs[name]):
            h.update(len(part).to_bytes(8, "big") + part)
    for d in defines:
        h.update(len(d).to_bytes(8, "big") + d.encode())
    return h.hexdigest()[:12]


@functools.cache
def installed_digest(names: tuple[str, ...], defines: tuple[str, ...]) -> str:
    # Once per process: the sources this process was started with are the ones its callers
    # match (an upgrade on disk is the next process's).
    return digest(sources(names), defines)


def build(state_root: Path, stem: str, names: Sequence[str], units: Sequence[str], *,
          flag_sets: Sequence[Sequence[str]] = ((),), defines: Sequence[str] = (),
          cc: str = "cc", what: str) -> Path:
    """``<state_root>/bin/<stem>-<key>`` compiled from ``units`` (``names``: every source file,
    headers included), with the first of ``flag_sets`` that compiles. ``what`` names the
    artifact in errors."""
    key = installed_digest(tuple(names), tuple(defines))
    bindir = state_root / "bin"
    target = bindir / f"{stem}-{key}"
    if target.exists():
        return target
    srcs = sources(names)
    compiler = shutil.which(cc)
    if compiler is None:
        raise HostUnsupported(f"no C compiler {cc!r} to build {what}: install gcc")
    bindir.mkdir(parents=True, exist_ok=True)
    tag = secrets.token_hex(4)
    srcdir = bindir / f".{stem}-{tag}.src"
    tmp = bindir / f".{stem}-{tag}"
    try:
        srcdir.mkdir()
        for name, content in srcs.items():
            (srcdir / name).write_bytes(content)
        for extra in flag_sets:
            proc = subprocess.run(
                [compiler, "-O2", "-Wall", *extra, *(f"-D{d}" for d in defines),
                 "-o", str(tmp), *(str(srcdir / u) for u in units)],
                stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
            if proc.returncode == 0:
                break
        else:
            raise HostUnsupported(f"compiling {what} failed: {proc.stderr.strip()}")
        os.chmod(tmp, 0o755)
        os.rename(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        shutil.rmtree(srcdir, ignore_errors=True)
    return target
