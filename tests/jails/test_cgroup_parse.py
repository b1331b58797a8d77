"""Stat-file parsing used on every stats sample."""

from __future__ import annotations

from jails.cgroups import _field, _kv_of

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
