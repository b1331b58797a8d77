"""Sample many cgroups in one call: ``cgsample.c``, built once per state root and loaded with
ctypes, reads and parses every cgroup's sample files (the descriptors ``CgroupPaths`` keeps
open) the way ``CgroupPaths.sample`` does in Python. A TaskStats tick samples every running
task at once, and per task the Python reads and parsing cost more than the reads themselves.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from pathlib import Path

from jails import cbuild
from jails.cgroups import CgroupPaths
from jails.model import Usage

SOURCES = ("cgsample.c",)
SLOTS = 8  # XC_CG_SLOTS in cgsample.c
_VERSION = {"v1": 1, "v2": 2}
_FILES = {"v1": 5, "v2": 4}


def ensure_library(state_root: Path, cc: str = "cc") -> Path:
    return cbuild.build(state_root, "xc-cgsample", SOURCES, SOURCES,
                        flag_sets=(["-shared", "-fPIC"],), cc=cc,
                        what="the cgroup sample reader")


class BatchReader:
    """``xc_cg_sample`` of one built library. Thread-safe (the C keeps no state)."""

    def __init__(self, library: Path) -> None:
        fn = ctypes.CDLL(str(library)).xc_cg_sample
        fn.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int),
                       ctypes.POINTER(ctypes.c_longlong))
        fn.restype = ctypes.c_int
        self._fn = fn

    def sample(self, cgroups: Sequence[CgroupPaths]) -> list[Usage | None]:
        """One sample per cgroup (all of one cgroup mode), as ``CgroupPaths.sample(False)``
        gives; None where a read failed (stale descriptors: sample that one the slow way,
        which reopens them)."""
        if not cgroups:
            return []
        mode = cgroups[0].mode
        if any(cg.mode != mode for cg in cgroups):
            raise ValueError("one batch samples cgroups of one mode")
        per = _FILES[mode]
        fds = [fd for cg in cgroups for fd in cg.files.fds()]
        if len(fds) != per * len(cgroups):
            raise ValueError(f"a {mode} cgroup has {per} sample files")
        out = (ctypes.c_longlong * (SLOTS * len(cgroups)))()
        if self._fn(_VERSION[mode], len(cgroups), (ctypes.c_int * len(fds))(*fds), out) != 0:
            raise ValueError(f"cgsample.c does not know cgroup mode {mode}")
        rows = out[:]
        return [cg.usage_of(rows[i * SLOTS:(i + 1) * SLOTS]) if rows[i * SLOTS] == 0 else None
                for i, cg in enumerate(cgroups)]
