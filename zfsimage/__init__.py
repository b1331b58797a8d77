"""OCI images on ZFS: verified registry pulls, secure layer extraction, clones per task.

Never imports grpc, plugin_proto or driver.
"""

from zfsimage.auth import RegistryAuth
from zfsimage.limits import LayerLimits
from zfsimage.manifest import ImageConfig
from zfsimage.platform import Platform
from zfsimage.probe import DatasetProbe, probe_dataset
from zfsimage.reference import Reference, parse_reference
from zfsimage.registry import RegistryOptions
from zfsimage.store import GcReport, Image, ImageStore, PullProgress, StoreConfig

__all__ = [
    "DatasetProbe",
    "GcReport",
    "Image",
    "ImageConfig",
    "ImageStore",
    "LayerLimits",
    "Platform",
    "PullProgress",
    "Reference",
    "RegistryAuth",
    "RegistryOptions",
    "StoreConfig",
    "parse_reference",
    "probe_dataset",
]
