"""Pure parsers for OCI/Docker manifests, indexes and image configs (no I/O)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from zfsimage.errors import DigestMismatch, ImageError, ImageNotFound
from zfsimage.names import printable
from zfsimage.platform import Platform
from zfsimage.reference import check_digest

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v1+prettyjws")
ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST])
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)

LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar": "none",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "none",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.diff.tar": "none",
}

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_CONFIG_BYTES = 8 * 1024 * 1024


class ManifestError(ImageError):
    pass


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: tuple[str, str, str | None] | None = None  # (os, architecture, variant)
    urls: tuple[str, ...] = ()

    @property
    def compression(self) -> str:
        try:
            return LAYER_TYPES[self.media_type]
        except KeyError:
            raise ManifestError(f"layer {self.digest} has unsupported media type "
                                f"{self.media_type!r}") from None


@dataclass(frozen=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an image config a task needs; keys are read case-insensitively like Go."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    exposed_ports: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    os: str = ""
    architecture: str = ""
    variant: str | None = None
    diff_ids: tuple[str, ...] = ()
    stop_signal: str = ""


def _loads(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ManifestError(f"{what} is not a JSON object")
    return obj


def _ci(obj: dict[str, Any], key: str) -> Any:
    """Case-insensitive key lookup (Go's encoding/json semantics; FreeBSD writes ``cmd``)."""
    if key in obj:
        return obj[key]
    low = key.lower()
    for k, v in obj.items():
        if isinstance(k, str) and k.lower() == low:
            return v
    return None


def parse_descriptor(obj: Any, what: str) -> Descriptor:
    if not isinstance(obj, dict):
        raise ManifestError(f"{what} is not a descriptor object")
    digest = obj.get("digest")
    size = obj.get("size")
    mt = obj.get("mediaType", "")
    if not isinstance(size, int) or size < 0 or isinstance(size, bool):
        raise ManifestError(f"{what} has an invalid size {size!r}")
    check_digest(str(digest), f"{what} digest")
    plat = None
    p = obj.get("platform")
    if isinstance(p, dict):
        plat = (str(p.get("os", "")), str(p.get("architecture", "")),
                str(p["variant"]) if p.get("variant") else None)
    urls = obj.get("urls")
    return Descriptor(str(mt), str(digest), size, plat,
                      tuple(str(u) for u in urls) if isinstance(urls, list) else ())


def media_type_of(data: bytes, content_type: str | None) -> str:
    """The manifest's media type: the body's ``mediaType`` or the header (params ignored)."""
    ct = (content_type or "").split(";")[0].strip()
    obj = _loads(data, "manifest")
    body_mt = obj.get("mediaType")
    if isinstance(body_mt, str) and body_mt:
        if ct and ct in (*INDEX_TYPES, *MANIFEST_TYPES) and ct != body_mt:
            raise ManifestError(f"manifest mediaType {body_mt!r} does not match "
                                f"Content-Type {ct!r}")
        return body_mt
    if ct in (*INDEX_TYPES, *MANIFEST_TYPES):
        return ct
    if "manifests" in obj:
        return OCI_INDEX
    if "layers" in obj:
        return OCI_MANIFEST
    return ct


def parse_index(data: bytes) -> list[Descriptor]:
    obj = _loads(data, "image index")
    ms = obj.get("manifests")
    if not isinstance(ms, list):
        raise ManifestError("image index has no manifests list")
    return [parse_descriptor(m, f"index entry {i}") for i, m in enumerate(ms)]


def select_platform(entries: list[Descriptor], want: Platform) -> Descriptor:
    """First entry matching ``want``; attestation (unknown/unknown) and unknown types skipped."""
    seen = []
    for d in entries:
        if d.media_type and d.media_type not in (*INDEX_TYPES, *MANIFEST_TYPES):
            continue
        if d.platform is None:
            continue
        os_, arch, variant = d.platform
        if os_ == "unknown" and arch == "unknown":
            continue
        seen.append(printable(f"{os_}/{arch}" + (f"/{variant}" if variant else "")))
        if want.matches(os_, arch, variant):
            return d
    raise ImageNotFound(f"image has no manifest for platform {want}; available: "
                        f"{', '.join(seen) or 'none'} (set `platform` to one of them)")


def parse_manifest(data: bytes, media_type: str) -> Manifest:
    if media_type in DOCKER_SCHEMA1:
        raise ManifestError("image uses the deprecated Docker schema 1 manifest; re-push it "
                            "with a current client")
    obj = _loads(data, "manifest")
    config = parse_descriptor(obj.get("config"), "manifest config")
    layers_raw = obj.get("layers")
    if not isinstance(layers_raw, list):
        raise ManifestError("manifest has no layers list")
    layers = tuple(parse_descriptor(x, f"layer {i}") for i, x in enumerate(layers_raw))
    for layer in layers:
        _ = layer.compression  # unsupported media types fail here, before any download
    return Manifest(media_type, config, layers)


def _str_tuple(v: Any) -> tuple[str, ...]:
    if v is None:
        return ()
    if isinstance(v, str):
        return (v,)
    if isinstance(v, list):
        return tuple(str(x) for x in v)
    return ()


def parse_config(data: bytes) -> ImageConfig:
    obj = _loads(data, "image config")
    cfg = _ci(obj, "config") or {}
    if not isinstance(cfg, dict):
        cfg = {}
    rootfs = _ci(obj, "rootfs") or {}
    diff_ids = _str_tuple(_ci(rootfs, "diff_ids") if isinstance(rootfs, dict) else None)
    for d in diff_ids:
        check_digest(d, "config diff_id")
    labels = _ci(cfg, "Labels") or {}
    ports = _ci(cfg, "ExposedPorts") or {}
    return ImageConfig(
        entrypoint=_str_tuple(_ci(cfg, "Entrypoint")),
        cmd=_str_tuple(_ci(cfg, "Cmd")),
        env=_str_tuple(_ci(cfg, "Env")),
        working_dir=str(_ci(cfg, "WorkingDir") or ""),
        user=str(_ci(cfg, "User") or ""),
        exposed_ports=tuple(sorted(ports)) if isinstance(ports, dict) else (),
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
        os=str(_ci(obj, "os") or ""),
        architecture=str(_ci(obj, "architecture") or ""),
        variant=str(_ci(obj, "variant")) if _ci(obj, "variant") else None,
        diff_ids=diff_ids,
        stop_signal=str(_ci(cfg, "StopSignal") or ""),
    )


def check_layers_match(manifest: Manifest, config: ImageConfig) -> None:
    if len(manifest.layers) != len(config.diff_ids):
        raise DigestMismatch(f"image config lists {len(config.diff_ids)} diff_ids but the "
                             f"manifest has {len(manifest.layers)} layers; the image is corrupt")
