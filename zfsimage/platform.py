"""Platforms (os/architecture/variant) and selection of a manifest from an index."""

from __future__ import annotations

import platform as _platform
from dataclasses import dataclass

from zfsimage.errors import ImageError

_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "i386": "386",
                 "i686": "386", "armv7l": "arm", "armv6l": "arm", "ppc64le": "ppc64le",
                 "riscv64": "riscv64", "s390x": "s390x"}

# FreeBSD's linux64 ABI module exists on these architectures (the 32-bit linux module is not
# offered: images for it are rare and it needs a module of its own).
LINUX_ABI_ARCHES = ("amd64", "arm64")


class PlatformError(ImageError):
    pass


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``os/arch[/variant]``, e.g. ``freebsd/amd64`` or ``linux/arm64/v8``."""
        parts = [p.strip().lower() for p in text.split("/")]
        if len(parts) not in (2, 3) or not all(parts):
            raise PlatformError(f"platform {text!r} is not of the form os/architecture[/variant], "
                                "e.g. freebsd/amd64")
        arch = _ARCH_ALIASES.get(parts[1], parts[1])
        return cls(parts[0], arch, parts[2] if len(parts) == 3 else None)

    @classmethod
    def host(cls) -> Platform:
        osname = _platform.system().lower() or "linux"
        machine = _platform.machine().lower()
        variant = None
        if machine.startswith("armv7"):
            variant = "v7"
        elif machine.startswith("armv6"):
            variant = "v6"
        return cls(osname, _ARCH_ALIASES.get(machine, machine), variant)

    def matches(self, os_: str, arch: str, variant: str | None) -> bool:
        if os_.lower() != self.os or _ARCH_ALIASES.get(arch.lower(), arch.lower()) \
                != self.architecture:
            return False
        if self.variant is None or variant is None:
            return True
        return variant.lower() == self.variant

    def linux_fallback(self) -> Platform | None:
        """The Linux platform FreeBSD's Linux ABI runs on this FreeBSD platform (linux64 on
        amd64 and arm64), or None where there is none."""
        if self.os == "freebsd" and self.architecture in LINUX_ABI_ARCHES:
            return Platform("linux", self.architecture, self.variant)
        return None

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")
