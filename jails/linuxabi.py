"""A Linux image in a FreeBSD jail through the Linux ABI (linux64): jail parameters and file
systems (pure tables), and whether the host has the ABI loaded.

What Linux programs expect, as the FreeBSD Handbook's Linux jail setup and FreeBSD's own
``/etc/rc.d/linux`` (``linux_mounts_enable``) provide it: linprocfs on /proc, linsysfs on /sys,
devfs on /dev, fdescfs on /dev/fd with ``linrdlnk`` (its links read like Linux's /proc/self/fd),
tmpfs on /dev/shm (mode 1777: POSIX shared memory of Linux libc lives there). The jail gets its own
``linux.osname``/``linux.osrelease`` (jail(8) ``linux=new``), so what ``uname`` says inside is
set per task, not inherited from the host's ``compat.linux`` sysctls.

The parameters exist only while the linux64 module is loaded (``jail -c`` fails on an unknown
parameter), so a start is refused first, with what to do, on a host without it.
"""

from __future__ import annotations

from collections.abc import Mapping

from jails import _cmd
from jails.errors import JailError, SpecError
from jails.plans import MountStep
from jails.spec import JailSpec

LINUX_OSNAME = "Linux"
# What uname -r reports: the linux64 default of FreeBSD 14 (compat.linux.osrelease); glibc refuses
# to start below its configured minimum kernel, so a newer image may need more (jail_params).
LINUX_OSRELEASE = "5.15.0"
LINUX_MODULE = "linux64"
NOT_LOADED = (
    "the Linux ABI (linux64) is not loaded, so a Linux image cannot run: add linux_enable=\"YES\" "
    "to /etc/rc.conf and run 'service linux start' (or kldload linux64)"
)

# (fs, mount -o, mountpoint inside the jail), mounted in this order after devfs on /dev;
# teardown unmounts in reverse.
ABI_MOUNTS: tuple[tuple[str, str, str], ...] = (
    ("linprocfs", "rw", "/proc"),
    ("linsysfs", "rw", "/sys"),
    ("fdescfs", "linrdlnk", "/dev/fd"),
    ("tmpfs", "nosuid,mode=1777", "/dev/shm"),
)
ABI_TARGETS = frozenset(t for _, _, t in ABI_MOUNTS) | {"/dev"}


def abi_params(overrides: Mapping[str, str]) -> list[tuple[str, str]]:
    """The jail(8) parameters of a Linux ABI jail; ``overrides`` (operator-allowed jail_params)
    may set linux.osname / linux.osrelease."""
    return [
        ("linux", "new"),
        ("linux.osname", overrides.get("linux.osname", LINUX_OSNAME)),
        ("linux.osrelease", overrides.get("linux.osrelease", LINUX_OSRELEASE)),
    ]


def abi_mounts(jail_root: str) -> list[MountStep]:
    """The mount steps after devfs on /dev for a jail whose root is ``jail_root``; each source is
    the file system's name, as /etc/rc.d/linux mounts them."""
    return [MountStep(fs, opts, fs, jail_root + inner, inner, True)
            for fs, opts, inner in ABI_MOUNTS]


def check_abi_mounts(spec: JailSpec) -> None:
    """A Linux ABI task's own mounts must not cover (or hide under) what the ABI setup mounts."""
    if spec.abi != "linux":
        return
    clash = [m.target for m in spec.all_mounts() if m.target in ABI_TARGETS]
    if clash:
        raise SpecError(
            "mounts.target",
            f"{', '.join(clash)}: a Linux image on FreeBSD gets "
            f"{', '.join(sorted(ABI_TARGETS))} from the Linux ABI setup; mount elsewhere",
        )


def linux_abi_loaded(runner: _cmd.Runner | None = None, kldstat_bin: str = "/sbin/kldstat") -> bool:
    """``kldstat -q -m linux64`` exits 0 when the module is in the kernel (loaded or built in)."""
    run = runner if runner is not None else _cmd.run
    try:
        res = run([kldstat_bin, "-q", "-m", LINUX_MODULE], ok_codes=(0, 1), timeout_s=10)
    except JailError:  # no kldstat (not FreeBSD), or it timed out
        return False
    return res.returncode == 0
