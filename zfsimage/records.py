"""Image records: one JSON file per manifest digest in the store's ``meta`` dataset.

Layers describe themselves in ZFS user properties; an image record adds what ZFS cannot hold
well (the config blob, the references that name it). Writes are atomic (temp file, fsync,
rename) and serialised across processes with ``flock`` on ``meta/.lock``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zfsimage.digest import hex_of
from zfsimage.reference import check_digest


@dataclass(frozen=True)
class ImageRecord:
    manifest_digest: str
    references: tuple[str, ...]
    source_digests: dict[str, str]      # reference -> digest its tag resolved to
    platform: str
    chain_ids: tuple[str, ...]
    diff_ids: tuple[str, ...]
    layers: tuple[dict[str, Any], ...]  # {"digest", "size", "media_type"}
    config: str                         # the raw config JSON text, as verified
    created: float
    last_used: float

    def to_json(self) -> dict[str, Any]:
        return {
            "manifest_digest": self.manifest_digest, "references": list(self.references),
            "source_digests": self.source_digests, "platform": self.platform,
            "chain_ids": list(self.chain_ids), "diff_ids": list(self.diff_ids),
            "layers": list(self.layers), "config": self.config, "created": self.created,
            "last_used": self.last_used,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ImageRecord:
        return cls(
            manifest_digest=check_digest(str(obj["manifest_digest"])),
            references=tuple(obj.get("references", ())),
            source_digests=dict(obj.get("source_digests", {})),
            platform=str(obj.get("platform", "")),
            chain_ids=tuple(obj.get("chain_ids", ())),
            diff_ids=tuple(obj.get("diff_ids", ())),
            layers=tuple(obj.get("layers", ())),
            config=str(obj.get("config", "{}")),
            created=float(obj.get("created", 0)),
            last_used=float(obj.get("last_used", 0)),
        )


class RecordStore:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self._tlock = threading.RLock()
        self._depth = 0
        self._lock_fd: int | None = None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive across threads and processes (re-entrant within one thread)."""
        with self._tlock:
            if self._depth == 0:
                self._lock_fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                                        0o600)
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._lock_fd is not None:
                    os.close(self._lock_fd)
                    self._lock_fd = None

    def _path(self, manifest_digest: str) -> Path:
        return self.dir / f"{hex_of(manifest_digest)}.json"

    def get(self, manifest_digest: str) -> ImageRecord | None:
        try:
            return ImageRecord.from_json(json.loads(self._path(manifest_digest).read_text()))
        except FileNotFoundError:
            return None

    def all(self) -> list[ImageRecord]:
        out = []
        for p in sorted(self.dir.glob("*.json")):
            try:
                out.append(ImageRecord.from_json(json.loads(p.read_text())))
            except (ValueError, KeyError, OSError):
                continue  # a torn file cannot exist (atomic rename); skip foreign files
        return out

    def put(self, rec: ImageRecord) -> None:
        path = self._path(rec.manifest_digest)
        tmp = path.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
        data = json.dumps(rec.to_json(), sort_keys=True).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def delete(self, manifest_digest: str) -> None:
        self._path(manifest_digest).unlink(missing_ok=True)

    def clean_temp(self) -> None:
        for p in self.dir.glob("*.tmp*"):
            p.unlink(missing_ok=True)
