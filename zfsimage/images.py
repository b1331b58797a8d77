"""The store's value types: an image as the caller sees it, pull progress, GC reports."""

from __future__ import annotations

import json
from dataclasses import dataclass

from zfsimage.manifest import ImageConfig, parse_config
from zfsimage.records import ImageRecord


@dataclass(frozen=True)
class Image:
    reference: str
    manifest_digest: str
    chain_id: str | None        # None for an image without layers
    config: ImageConfig
    platform: str
    chain_ids: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    last_used: float = 0.0


@dataclass(frozen=True)
class PullProgress:
    reference: str
    phase: str                  # resolve | download | extract | cached | done
    layer: int = 0              # 1-based index of the current layer
    layers_total: int = 0
    layers_cached: int = 0
    bytes_done: int = 0         # compressed bytes downloaded so far in this pull
    bytes_total: int = 0        # compressed bytes of the layers this pull must download


@dataclass(frozen=True)
class GcReport:
    images_removed: tuple[str, ...]
    layers_removed: tuple[str, ...]


def image_from(rec: ImageRecord, reference: str) -> Image:
    return Image(reference=reference, manifest_digest=rec.manifest_digest,
                 chain_id=rec.chain_ids[-1] if rec.chain_ids else None,
                 config=parse_config(rec.config.encode()), platform=rec.platform,
                 chain_ids=rec.chain_ids, references=rec.references, last_used=rec.last_used)


def config_json(image: Image) -> str:
    """The image config as JSON text, for ``image inspect``."""
    c = image.config
    return json.dumps({"entrypoint": c.entrypoint, "cmd": c.cmd, "env": c.env,
                       "working_dir": c.working_dir, "user": c.user,
                       "exposed_ports": c.exposed_ports, "labels": c.labels,
                       "os": c.os, "architecture": c.architecture}, indent=2)
