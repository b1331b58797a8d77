"""OCI images on ZFS: verified registry pulls, secure layer extraction, clones per task."""

from zfsimage.probe import DatasetProbe, probe_dataset

__all__ = ["DatasetProbe", "probe_dataset"]
