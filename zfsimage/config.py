"""``StoreConfig``: everything an ``ImageStore`` is built from, parsed once at the edge."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from zfsimage.auth import RegistryAuth
from zfsimage.limits import LayerLimits
from zfsimage.platform import Platform
from zfsimage.registry import RegistryOptions


@dataclass(frozen=True)
class StoreConfig:
    dataset: str
    mount_root: Path = Path("/var/lib/nomad-driver-xc")
    platform: Platform | None = None              # default platform; None = the host's
    auth: dict[str, RegistryAuth] = field(default_factory=dict)   # host -> credentials
    docker_config: Path | None = None             # Docker-style config.json with auths
    credential_helper: str = ""                   # docker-credential-<name> for any registry
    registry: RegistryOptions = field(default_factory=RegistryOptions)
    limits: LayerLimits = field(default_factory=LayerLimits)
    gc_delay_s: float = 3600.0                    # untagged images older than this go in gc()
    revalidate_tags: bool = True                  # HEAD the tag on each ensure_image
    task_props: dict[str, str] = field(default_factory=dict)  # e.g. {"setuid": "off"}
    max_image_size: str | None = None             # refquota on layer datasets, e.g. "20G"
