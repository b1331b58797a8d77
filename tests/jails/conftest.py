from tests.fixtures.rootfs import busybox_rootfs
from tests.fixtures.runc import linux_runtime_factory

__all__ = ["busybox_rootfs", "linux_runtime_factory"]
