"""OCI image layout (directory or tar archive of one) as an image source, for air-gapped hosts."""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from zfsimage.digest import hasher_for, hex_of
from zfsimage.errors import DigestMismatch, ImageError, ImageNotFound
from zfsimage.extract import LayerLimits, split_path
from zfsimage.manifest import (
    INDEX_TYPES,
    MAX_CONFIG_BYTES,
    MAX_MANIFEST_BYTES,
    Descriptor,
    Manifest,
    media_type_of,
    parse_descriptor,
    parse_manifest,
    select_platform,
)
from zfsimage.platform import Platform

_REF_ANNOTATION = "org.opencontainers.image.ref.name"


class OciLayout:
    def __init__(self, root: Path, tmp: Path | None = None) -> None:
        self.root = root
        self._tmp = tmp
        lay = root / "oci-layout"
        if not lay.is_file():
            raise ImageError(f"{root} is not an OCI image layout (no oci-layout file)")

    @classmethod
    def open(cls, path: Path) -> OciLayout:
        if path.is_dir():
            return cls(path)
        if not path.is_file():
            raise ImageNotFound(f"OCI layout {path} does not exist")
        tmp = Path(tempfile.mkdtemp(prefix="xc-import-"))
        try:
            with tarfile.open(path, "r:*") as tf:
                for m in tf:
                    comps = split_path(m.name, LayerLimits(), "archive entry")
                    if not comps or not (m.isfile() or m.isdir()):
                        continue  # layouts hold only directories and regular files
                    dest = tmp.joinpath(*comps)
                    if m.isdir():
                        dest.mkdir(parents=True, exist_ok=True)
                        continue
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    src = tf.extractfile(m)
                    assert src is not None
                    with open(dest, "wb") as out:
                        shutil.copyfileobj(src, out, 1024 * 1024)
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

    def resolve(self, name: str | None, plat: Platform) -> tuple[str, str, Manifest]:
        """-> (source digest, manifest digest, manifest) for the entry named ``name`` (the
        ref.name annotation) or the only/first entry of index.json."""
        try:
            index = json.loads((self.root / "index.json").read_text())
        except (OSError, ValueError) as exc:
            raise ImageError(f"{self.root}/index.json cannot be read: {exc}") from exc
        entries = [(parse_descriptor(m, f"index.json entry {i}"), m)
                   for i, m in enumerate(index.get("manifests", []))]
        if name is not None:
            entries = [e for e in entries
                       if (e[1].get("annotations") or {}).get(_REF_ANNOTATION) == name]
            if not entries:
                raise ImageNotFound(f"layout {self.root} has no image named {name!r}")
        if not entries:
            raise ImageNotFound(f"layout {self.root} holds no images")
        plat_entries = [e[0] for e in entries if e[0].platform is not None]
        desc = select_platform(plat_entries, plat) if plat_entries else entries[0][0]
        source = desc.digest
        for _ in range(4):
            data = self.read_blob(desc, "manifest", MAX_MANIFEST_BYTES)
            mt = media_type_of(data, desc.media_type)
            if mt not in INDEX_TYPES:
                return source, desc.digest, parse_manifest(data, mt)
            sub = [parse_descriptor(m, "index entry")
                   for m in json.loads(data).get("manifests", [])]
            desc = select_platform(sub, plat)
        raise ImageError(f"layout {self.root} nests indexes too deeply")
