"""Platform selection from an image index (pure): FreeBSD preferred, a Linux variant only as
FreeBSD's fallback and only when ``linux_images`` allows it."""

from __future__ import annotations

import pytest

from zfsimage.errors import ImageNotFound
from zfsimage.manifest import OCI_MANIFEST, Descriptor, select_platform
from zfsimage.platform import Platform


def _entry(plat: str) -> Descriptor:
    os_, arch, *variant = plat.split("/")
    n = str(abs(hash(plat)) % 10**9).zfill(64)
    return Descriptor(OCI_MANIFEST, "sha256:" + n, 1, (os_, arch, variant[0] if variant else None))


ATTEST = "unknown/unknown"

# (index platforms, wanted, linux_images) -> chosen platform
CHOSEN = [
    (["linux/amd64", "freebsd/amd64"], "freebsd/amd64", False, "freebsd/amd64"),
    (["linux/amd64", "freebsd/amd64"], "freebsd/amd64", True, "freebsd/amd64"),
    (["freebsd/amd64", "linux/amd64"], "freebsd/amd64", True, "freebsd/amd64"),
    ([ATTEST, "linux/arm64", "linux/amd64"], "freebsd/amd64", True, "linux/amd64"),
    (["linux/amd64", "linux/arm64/v8"], "freebsd/arm64", True, "linux/arm64/v8"),
    (["linux/amd64", "freebsd/amd64"], "linux/amd64", False, "linux/amd64"),
    (["linux/amd64", "freebsd/amd64"], "linux/amd64", True, "linux/amd64"),
]


@pytest.mark.parametrize(("index", "want", "allowed", "chosen"), CHOSEN)
def test_chosen(index: list[str], want: str, allowed: bool, chosen: str) -> None:
    entries = [_entry(p) for p in index]
    got = select_platform(entries, Platform.parse(want), linux_images=allowed)
    assert got is entries[index.index(chosen)]


# (index platforms, wanted, linux_images) -> words the error must contain
REFUSED = [
    # Linux only, not allowed: the error names the option and the variant it would run
    (["linux/amd64", ATTEST], "freebsd/amd64", False,
     ["freebsd/amd64", "linux_images = true", "linux/amd64", "Linux ABI"]),
    (["linux/arm64"], "freebsd/arm64", False, ["linux_images = true", "linux/arm64"]),
    # no Linux ABI variant for this host: no hint about linux_images
    (["linux/arm64"], "freebsd/amd64", True, ["available: linux/arm64"]),
    (["linux/arm64"], "freebsd/amd64", False, ["available: linux/arm64"]),
    (["linux/386"], "freebsd/amd64", True, ["available: linux/386"]),
    (["linux/riscv64"], "freebsd/riscv64", True, ["available: linux/riscv64"]),
    # the fallback is FreeBSD's only: a Linux host never takes a FreeBSD variant
    (["freebsd/amd64"], "linux/amd64", True, ["available: freebsd/amd64"]),
    ([ATTEST], "freebsd/amd64", True, ["available: none"]),
]


@pytest.mark.parametrize(("index", "want", "allowed", "words"), REFUSED)
def test_refused(index: list[str], want: str, allowed: bool, words: list[str]) -> None:
    with pytest.raises(ImageNotFound) as ei:
        select_platform([_entry(p) for p in index], Platform.parse(want), linux_images=allowed)
    for w in words:
        assert w in str(ei.value)
    assert ("linux_images" in str(ei.value)) == ("linux_images = true" in words)
    assert ATTEST not in str(ei.value)


def test_linux_fallback_of_each_platform() -> None:
    assert Platform.parse("freebsd/amd64").linux_fallback() == Platform("linux", "amd64")
    assert Platform.parse("freebsd/aarch64").linux_fallback() == Platform("linux", "arm64")
    assert Platform.parse("freebsd/riscv64").linux_fallback() is None
    assert Platform.parse("freebsd/386").linux_fallback() is None
    assert Platform.parse("linux/amd64").linux_fallback() is None
