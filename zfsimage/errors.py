"""Typed errors of the image store.

Every error's ``str()`` is one sentence an operator can act on. ``transient`` tells the driver
whether retrying later can help (it maps to Nomad's RecoverableError).
"""

from __future__ import annotations

from collections.abc import Sequence


class ImageError(Exception):
    """Base of every error raised by ``zfsimage``."""

    transient: bool = False


class BadReference(ImageError):
    """An image reference string that cannot be parsed."""


class InvalidName(ImageError):
    """A task key, digest or other name that cannot be used as a ZFS or file name."""


class RegistryUnavailable(ImageError):
    """The registry could not be reached or answered 5xx/429; retrying later may succeed."""

    transient = True


class AuthError(ImageError):
    """The registry refused our credentials (401/403)."""


class ImageNotFound(ImageError):
    """The registry or local store has no such image, blob or matching platform."""


class ImageGone(ImageNotFound):
    """A cached image's layers went away between finding it and cloning it (removed by another
    process); starting again pulls it anew."""

    transient = True


class DigestMismatch(ImageError):
    """A manifest, config, blob or layer DiffID did not match the digest it was pinned to."""


class UnsafeLayer(ImageError):
    """A layer entry would have escaped the rootfs or broken a limit; extraction stopped."""


class CorruptLayer(UnsafeLayer):
    """The layer is not a valid (compressed) tar stream."""


class LimitExceeded(UnsafeLayer):
    """An image went over one of the operator's limits; ``limit`` names the option that
    raises it (a ``LayerLimits`` field, ``--max-...`` in the CLI)."""

    def __init__(self, message: str, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


class ImageInUse(ImageError):
    """An image or layer cannot be removed because a task rootfs still depends on it."""


class ZfsError(ImageError):
    """A ``zfs``/``zpool`` command failed; carries argv, exit status and stderr."""

    def __init__(self, argv: Sequence[str], rc: int, stderr: str, message: str | None = None):
        self.argv = list(argv)
        self.rc = rc
        self.stderr = stderr.strip()
        detail = self.stderr.splitlines()[-1] if self.stderr else f"exit status {rc}"
        super().__init__(message or f"`{' '.join(self.argv)}` failed: {detail}")


class ZfsNotFound(ZfsError):
    """The dataset or snapshot named in a zfs command does not exist."""


class ZfsBusy(ZfsError):
    """zfs reported the dataset busy even after retries."""


class ZfsIOError(ZfsError):
    """zfs answered "I/O error" even after retries. zfs-fuse's client library reports a closed
    ioctl connection to its daemon as EIO (lib/libzfscommon, zfsfuse_ioctl_read_loop), and the
    daemon closes connections it has no room for; on kernel ZFS it is a fault of the pool."""


class ZfsExists(ZfsError):
    """The dataset a create or clone names exists already."""


class ZfsNoSpace(ZfsError):
    """No room: the pool is full, or a quota is below what the dataset already holds."""


class QuotaTooSmall(ImageError):
    """A task's disk quota is below what its image already takes (``needed`` bytes)."""

    def __init__(self, message: str, quota: int, needed: int) -> None:
        super().__init__(message)
        self.quota = quota
        self.needed = needed


class ZfsHasDependents(ZfsError):
    """A destroy was refused because clones or children depend on the dataset."""
