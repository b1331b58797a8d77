"""UserCache: users resolved once per root content (root_id), against real files."""

from __future__ import annotations

from pathlib import Path

import pytest

from jails.errors import SpecError
from jails.users import UserCache


def root(tmp_path: Path, name: str, passwd: str) -> Path:
    r = tmp_path / name
    (r / "etc").mkdir(parents=True)
    (r / "etc" / "passwd").write_text(passwd)
    (r / "etc" / "group").write_text("app:x:700:\nextra:x:800:app\n")
    return r


def test_one_lookup_per_root_id_and_none_across_ids(tmp_path: Path) -> None:
    a = root(tmp_path, "a", "app:x:1000:700::/home/app:/bin/sh\n")
    b = root(tmp_path, "b", "app:x:2000:700::/home/app:/bin/sh\n")
    cache = UserCache()
    assert cache.get("chain-a", "app", None) is None
    got = cache.resolve(a, "chain-a", "app", None)
    assert (got.uid, got.gid, got.additional_gids) == (1000, 700, (800,))
    (a / "etc" / "passwd").write_text("")  # not read again for chain-a
    assert cache.resolve(a, "chain-a", "app", None) == got == cache.get("chain-a", "app", None)
    assert cache.resolve(b, "chain-b", "app", None).uid == 2000  # another content
    assert cache.get("chain-a", "app", "extra") is None  # another question


def test_no_id_or_no_user_is_never_cached(tmp_path: Path) -> None:
    r = root(tmp_path, "r", "")
    cache = UserCache()
    with pytest.raises(SpecError):
        cache.resolve(r, "chain-r", "app", None)
    (r / "etc" / "passwd").write_text("app:x:1000:700::/:/bin/sh\n")
    assert cache.resolve(r, "chain-r", "app", None).uid == 1000  # the error was not kept
    assert cache.resolve(r, "", "app", None).uid == 1000
    assert cache.get("", "app", None) is None


def test_the_least_recently_used_go_first(tmp_path: Path) -> None:
    r = root(tmp_path, "r", "app:x:1000:700::/:/bin/sh\n")
    cache = UserCache(size=2)
    cache.resolve(r, "one", "app", None)
    cache.resolve(r, "two", "app", None)
    cache.get("one", "app", None)  # used again: "two" is now the oldest
    cache.resolve(r, "three", "app", None)
    assert cache.get("two", "app", None) is None
    assert cache.get("one", "app", None) is not None and cache.get("three", "app", None)
