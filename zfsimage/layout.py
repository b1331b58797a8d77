"""OCI image layout (directory or tar archive of one) as an image source, for air-gapped hosts."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from zfsimage.decompress import Limited, decompressor, sniff_compression
from zfsimage.digest import hasher_for, hex_of
from zfsimage.errors import DigestMismatch, ImageError, ImageNotFound, LimitExceeded
from zfsimage.extract import split_path
from zfsimage.limits import LayerLimits
from zfsimage.manifest import (
    INDEX_TYPES,
    MAX_CONFIG_BYTES,
    MAX_MANIFEST_BYTES,
    Descriptor,
    Manifest,
    media_type_of,
    parse_descriptor,
    parse_index,
    parse_manifest,
    select_platform,
)
from zfsimage.names import quote
from zfsimage.platform import Platform
from zfsimage.tarstream import TarReader

_REF_ANNOTATION = "org.opencontainers.image.ref.name"


class OciLayout:
    def __init__(self, root: Path, tmp: Path | None = None) -> None:
        self.root = root
        self._tmp = tmp
        lay = root / "oci-layout"
        if not lay.is_file():
            raise ImageError(f"{root} is not an OCI image layout (no oci-layout file)")

    @classmethod
    def open(cls, path: Path, limits: LayerLimits | None = None) -> OciLayout:
        if path.is_dir():
            return cls(path)
        if not path.is_file():
            raise ImageNotFound(f"OCI layout {path} does not exist")
        tmp = Path(tempfile.mkdtemp(prefix="xc-import-"))
        try:
            _unpack(path, tmp, limits or LayerLimits())
            return cls(tmp, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def __enter__(self) -> OciLayout:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def _blob_path(self, digest: str) -> Path:
        algo = digest.split(":", 1)[0]
        return self.root / "blobs" / algo / hex_of(digest)

    def read_blob(self, desc: Descriptor, what: str, cap: int = MAX_CONFIG_BYTES) -> bytes:
        p = self._blob_path(desc.digest)
        if not p.is_file():
            raise ImageNotFound(f"{what} {desc.digest} is missing from the layout {self.root}")
        if p.stat().st_size > cap:
            raise ImageError(f"{what} {desc.digest} is larger than {cap} bytes")
        data = p.read_bytes()
        h = hasher_for(desc.digest)
        h.update(data)
        if len(data) != desc.size or f"{desc.digest.split(':')[0]}:{h.hexdigest()}" != desc.digest:
            raise DigestMismatch(f"{what} {desc.digest} in {self.root} does not match its digest "
                                 "or size")
        return data

    def copy_blob(self, desc: Descriptor, dest: Path, cb: Callable[[int], None]) -> None:
        p = self._blob_path(desc.digest)
        if not p.is_file():
            raise ImageNotFound(f"layer {desc.digest} is missing from the layout {self.root}")
        h = hasher_for(desc.digest)
        n = 0
        with open(p, "rb") as src, open(dest, "wb") as out:
            while chunk := src.read(1024 * 1024):
                n += len(chunk)
                if n > desc.size:
                    break
                h.update(chunk)
                out.write(chunk)
                cb(len(chunk))
        if n != desc.size or f"{desc.digest.split(':')[0]}:{h.hexdigest()}" != desc.digest:
            dest.unlink(missing_ok=True)
            raise DigestMismatch(f"layer {desc.digest} in {self.root} does not match its digest "
                                 "or size")

    def resolve(self, name: str | None, plat: Platform, max_index_depth: int = 4
                ) -> tuple[str, str, Manifest]:
        """-> (source digest, manifest digest, manifest) for the entry named ``name`` (the
        ref.name annotation) or the only/first entry of index.json."""
        try:
            index = json.loads((self.root / "index.json").read_bytes())
        except (OSError, ValueError) as exc:
            raise ImageError(f"{self.root}/index.json cannot be read: "
                             f"{getattr(exc, 'strerror', None) or exc}") from exc
        raw = index.get("manifests") if isinstance(index, dict) else None
        if not isinstance(raw, list):
            raise ImageError(f"{self.root}/index.json is not an OCI image index (it needs a "
                             "\"manifests\" list)")
        entries = [(parse_descriptor(m, f"index.json entry {i}"), m) for i, m in enumerate(raw)]
        if name is not None:
            entries = [e for e in entries
                       if ((e[1].get("annotations") or {}) if isinstance(
                           e[1].get("annotations"), dict) else {}).get(_REF_ANNOTATION) == name]
            if not entries:
                raise ImageNotFound(f"layout {self.root} has no image named {quote(name)}")
        if not entries:
            raise ImageNotFound(f"layout {self.root} holds no images")
        plat_entries = [e[0] for e in entries if e[0].platform is not None]
        desc = select_platform(plat_entries, plat) if plat_entries else entries[0][0]
        source = desc.digest
        depth = 0
        while True:
            data = self.read_blob(desc, "manifest", MAX_MANIFEST_BYTES)
            mt = media_type_of(data, desc.media_type)
            if mt not in INDEX_TYPES:
                return source, desc.digest, parse_manifest(data, mt)
            depth += 1
            if depth > max_index_depth:
                raise LimitExceeded(f"layout {self.root} nests image indexes more than "
                                    f"{max_index_depth} deep (max_index_depth)",
                                    "max_index_depth")
            desc = select_platform(parse_index(data), plat)


def _unpack(archive: Path, dest: Path, limits: LayerLimits) -> None:
    """Unpack a layout archive (tar, gzip or zstd) into ``dest``: only directories and regular
    files, every name checked, at most ``max_temp_bytes`` (holes counted) and never more than
    the temp file system has free."""
    free = shutil.disk_usage(dest).free
    budget = min(limits.max_temp_bytes, free)
    written = 0
    name = None
    try:
        with open(archive, "rb") as raw:
            stream = Limited(decompressor(raw, sniff_compression(archive)),
                             limits.max_temp_bytes + 64 * 1024**2, f"layout archive {archive}",
                             "max_temp_bytes")
            reader = TarReader(stream, limits)
            for m in reader.members():
                name = m.name
                comps = split_path(m.name, limits, "archive entry")
                if not comps or m.kind not in ("dir", "reg"):
                    continue  # layouts hold only directories and regular files
                target = dest.joinpath(*comps)
                if m.kind == "dir":
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                written += m.size
                if written > budget:
                    raise LimitExceeded(
                        f"it unpacks to more than {budget} bytes (max_temp_bytes "
                        f"{limits.max_temp_bytes}, {free} free in the temp directory)",
                        "max_temp_bytes")
                target.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o600)
                try:
                    for off, data in reader.regions(m):
                        os.pwrite(fd, data, off)
                    os.ftruncate(fd, m.size)
                finally:
                    os.close(fd)
    except (ImageError, OSError, ValueError) as exc:
        where = f"layout archive {archive}" + (f", entry {quote(name)}" if name else "")
        reason = (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc))
        if isinstance(exc, LimitExceeded):
            raise LimitExceeded(f"{where}: {reason}", exc.limit) from exc
        raise ImageError(f"{where}: {reason}") from exc
