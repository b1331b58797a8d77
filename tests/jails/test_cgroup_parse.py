"""Stat-file parsing and the held cgroup files used on every stats sample."""

from __future__ import annotations

import os
from pathlib import Path

from jails.cgroups import OpenFiles, _field, _int_of, _kv_of

MEMORY_STAT = (b"cache 4096\nrss 8192\nrss_huge 0\nshmem 0\nmapped_file 0\n"
               b"total_cache 12288\ntotal_rss 16384\ntotal_rss_huge 0\n")


def test_field_finds_whole_keys_only() -> None:
    assert _field(MEMORY_STAT, b"rss") == 8192          # not rss_huge, not total_rss
    assert _field(MEMORY_STAT, b"total_rss") == 16384
    assert _field(MEMORY_STAT, b"cache") == 4096        # first line
    assert _field(MEMORY_STAT, b"total_rss_huge") == 0  # last line
    assert _field(b"user 12\nsystem 7", b"system") == 7  # no trailing newline


def test_field_default_when_absent_or_not_a_number() -> None:
    assert _field(MEMORY_STAT, b"anon", 5) == 5
    assert _field(b"", b"user", 3) == 3
    assert _field(b"max max\n", b"max", 9) == 9


def test_kv_of_agrees_with_field() -> None:
    kv = _kv_of(MEMORY_STAT)
    for key in (b"cache", b"rss", b"total_rss", b"shmem"):
        assert kv[key.decode()] == _field(MEMORY_STAT, key)


def test_open_files_read_in_order_and_missing_is_empty(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"1\n")
    (tmp_path / "b").write_bytes(b"total_rss 7\n")
    files = OpenFiles(tuple(str(tmp_path / n) for n in ("b", "gone", "a")), (64, 64, 64))
    try:
        assert files.read_all() == [b"total_rss 7\n", b"", b"1\n"]
        (tmp_path / "a").write_bytes(b"22\n")  # the same file rewritten: read afresh each time
        assert files.read_all()[2] == b"22\n"
    finally:
        files.close()


def test_open_files_reopen_when_a_descriptor_goes_stale(tmp_path: Path) -> None:
    # A cgroup removed and made again under the same name: the held descriptors fail (kernfs
    # answers ENODEV; a closed descriptor, EBADF) and every file is opened again, once.
    a = tmp_path / "a"
    a.write_bytes(b"1\n")
    files = OpenFiles((str(a),), (64,))
    try:
        assert files.read_all() == [b"1\n"]
        a.unlink()
        a.write_bytes(b"2\n")
        assert files.read_all() == [b"1\n"]  # still the held, removed file
        held = files._fds
        assert held is not None
        os.close(held[0])
        assert files.read_all() == [b"2\n"]
    finally:
        files.close()
    assert files._fds is None


def test_int_of_takes_one_number_with_its_newline() -> None:
    assert _int_of(b"4096\n") == 4096
    assert _int_of(b"max\n") is None  # v2's unlimited
    assert _int_of(b"") is None
