"""The C batch reader (jails/cgsample.c) reads what CgroupPaths.sample reads, in one call.

On cgroup trees written by the test, for v1 and v2 and files the kernel would never write, its
samples equal the Python reader's field by field; a failed read is that cgroup's None only; and
LinuxRuntime.sample_many over real runc containers gives what sample gives, one by one.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from jails import JailNotFound, JailSpec, Usage
from jails.cgbatch import BatchReader, ensure_library
from jails.cgroups import CgroupPaths
from jails.linux import LinuxRuntime
from tests.fixtures.sweep import test_name

V1 = ("cpuacct.stat", "cpuacct.usage", "memory.stat", "memory.usage_in_bytes",
      "memory.max_usage_in_bytes")
V2 = ("cpu.stat", "memory.stat", "memory.current", "memory.peak")
_N = itertools.count()


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> BatchReader:
    return BatchReader(ensure_library(tmp_path_factory.mktemp("cgsample")))


def tree(root: Path, mode: str, files: Mapping[str, bytes | None]) -> CgroupPaths:
    """A cgroup of ``mode`` under ``root`` holding ``files`` (None: the file is missing)."""
    rel = f"xc/t{next(_N)}"
    for name, content in files.items():
        where = root / rel if mode == "v2" else root / name.split(".")[0] / rel
        where.mkdir(parents=True, exist_ok=True)
        if content is not None:
            (where / name).write_bytes(content)
    return CgroupPaths(rel, mode, root=root)


def same(c: Usage | None, py: Usage) -> None:
    assert c is not None
    assert c._replace(timestamp_ns=0) == py._replace(timestamp_ns=0)
    assert abs(c.timestamp_ns - py.timestamp_ns) < 10**9


CASES_V1 = {
    "kernel-like": {
        "cpuacct.stat": b"user 12\nsystem 34\n", "cpuacct.usage": b"987654321\n",
        "memory.stat": b"cache 4096\nrss 8192\nrss_huge 0\ntotal_cache 4096\ntotal_rss 12288\n",
        "memory.usage_in_bytes": b"65536\n", "memory.max_usage_in_bytes": b"131072\n"},
    "no total_rss: the cgroup's own rss": {
        "cpuacct.stat": b"system 3\nuser 4", "cpuacct.usage": b"5",
        "memory.stat": b"rss_huge 7\nrss 8192\n", "memory.usage_in_bytes": b" 12 \n",
        "memory.max_usage_in_bytes": b"+13\n"},
    "neither, and garbage": {
        "cpuacct.stat": b"user x1\nuser 5\nsystem \n", "cpuacct.usage": b"12a\n",
        "memory.stat": b"total_rss_x 9\ntotal_rss -1\n", "memory.usage_in_bytes": b"",
        "memory.max_usage_in_bytes": b"-4\n"},
    "missing files": {name: None for name in V1},
}


@pytest.mark.parametrize("case", list(CASES_V1))
def test_v1_equals_the_python_reader(reader: BatchReader, tmp_path: Path, case: str) -> None:
    cg = tree(tmp_path, "v1", CASES_V1[case])
    same(reader.sample([cg])[0], cg.sample(False))


def test_v2_equals_the_python_reader(reader: BatchReader, tmp_path: Path) -> None:
    cgs = [
        tree(tmp_path, "v2", {
            "cpu.stat": b"usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 0\n",
            "memory.stat": b"anon 4096\nfile 8192\n", "memory.current": b"16384\n",
            "memory.peak": b"32768\n"}),
        tree(tmp_path, "v2", {"cpu.stat": b"", "memory.stat": b"file 1\n",
                              "memory.current": b"max\n", "memory.peak": None}),
    ]
    for c, cg in zip(reader.sample(cgs), cgs, strict=True):
        same(c, cg.sample(False))


_LINE_KEYS = ("user", "system", "rss", "total_rss", "total_rss_huge", "cache", "usage_usec",
              "user_usec", "system_usec", "anon", "")
_VALUES = hs.one_of(hs.integers(0, 2**62).map(str), hs.sampled_from(["", "-3", "1x", " 7", "max"]))
_LINES = hs.lists(hs.tuples(hs.sampled_from(_LINE_KEYS), _VALUES), max_size=6).map(
    lambda kv: "".join(f"{k} {v}\n" for k, v in kv).encode())
_NUMBER = hs.one_of(hs.integers(-2**62, 2**62).map(lambda n: f"{n}\n"),
                    hs.sampled_from(["", "max\n", " 12 \n", "\n", "+5", "4 2\n", "--1\n"])
                    ).map(str.encode)
_FILE = hs.one_of(hs.none(), _LINES, _NUMBER)


@settings(max_examples=150, deadline=None)
@given(mode=hs.sampled_from(["v1", "v2"]), contents=hs.lists(_FILE, min_size=5, max_size=5))
def test_any_content_reads_as_the_python_reader_reads_it(
        reader: BatchReader, tmp_path_factory: pytest.TempPathFactory, mode: str,
        contents: list[bytes | None]) -> None:
    names = V1 if mode == "v1" else V2
    cg = tree(tmp_path_factory.mktemp("any"), mode, dict(zip(names, contents, strict=False)))
    same(reader.sample([cg])[0], cg.sample(False))


def test_a_failed_read_is_that_cgroups_none_only(reader: BatchReader, tmp_path: Path) -> None:
    files = CASES_V1["kernel-like"]
    good, stale = tree(tmp_path, "v1", files), tree(tmp_path, "v1", files)
    good.files.fds()  # open before the close below, or they could take the freed number
    fds = stale.files.fds()
    os.close(fds[2])  # as a cgroup removed and made again leaves a descriptor dead
    try:
        got = reader.sample([good, stale])
        assert got[1] is None
        same(got[0], good.sample(False))
    finally:
        os.dup2(fds[0], fds[2])  # the number is the OpenFiles' again, for its close
        stale.files.close()


def test_one_batch_is_one_mode(reader: BatchReader, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="one mode"):
        reader.sample([tree(tmp_path, "v1", {}), tree(tmp_path, "v2", {})])


# ---- LinuxRuntime.sample_many on real containers ----


@pytest.fixture
def running(linux_runtime_factory: Callable[[], object], busybox_rootfs: Path,
            tmp_path: Path) -> Iterator[tuple[LinuxRuntime, list[str]]]:
    rt = cast(LinuxRuntime, linux_runtime_factory())
    names: list[str] = []
    try:
        for i in range(3):
            spec = JailSpec(name=test_name(f"cgb{next(_N)}"), rootfs=busybox_rootfs,
                            argv=("/bin/sh", "-c", "x=1; while :; do x=$((x+1)); done"
                                  if i == 0 else "exec sleep 600"),
                            stdout_path=tmp_path / f"o{i}", stderr_path=tmp_path / f"e{i}")
            rt.start(spec)
            names.append(spec.name)
        yield rt, names
    finally:
        for name in names:
            rt.destroy(name)


@pytest.mark.root
def test_sample_many_is_sample_of_each(running: tuple[LinuxRuntime, list[str]]) -> None:
    rt, names = running
    got = rt.sample_many([*names, "xc-no-such-task"])
    assert rt._batch is not None  # the C reader was built and used
    assert isinstance(got["xc-no-such-task"], JailNotFound)
    for name in names:
        usage = got[name]
        assert isinstance(usage, Usage)
        one = rt.sample(name)
        assert usage.measured == one.measured
        assert usage.memory_usage_bytes > 0 and one.memory_usage_bytes > 0
        assert usage.cpu_total_ns <= one.cpu_total_ns  # cumulative, read first
        assert usage.memory_max_usage_bytes <= one.memory_max_usage_bytes
    busy = got[names[0]]
    assert isinstance(busy, Usage) and busy.cpu_total_ns > 0
