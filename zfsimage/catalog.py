"""The image catalog: image records (references, platform, chain ids) and how names find them."""

from __future__ import annotations

import time
from dataclasses import replace

from zfsimage.errors import ImageNotFound
from zfsimage.layers import LayerStore
from zfsimage.manifest import ImageConfig, Manifest
from zfsimage.platform import Platform
from zfsimage.records import ImageRecord, RecordStore
from zfsimage.reference import Reference, parse_reference

_PROP_REFRESH_S = 600.0          # how stale xc:lastused on a top layer may get
_TOUCH_REFRESH_S = 60.0          # how stale an image record's last use may get


class Catalog:
    def __init__(self, records: RecordStore, layers: LayerStore) -> None:
        self.records = records
        self.layers = layers

    def find_local(self, ref: Reference, plat: Platform) -> ImageRecord | None:
        key = str(ref)
        for rec in self.records.all():
            if rec.platform != str(plat) and not (ref.digest and rec.manifest_digest == ref.digest):
                continue
            if ref.digest and (rec.manifest_digest == ref.digest
                               or ref.digest in rec.source_digests.values()):
                return rec
            if not ref.digest and key in rec.references:
                return rec
        return None

    def complete(self, rec: ImageRecord) -> bool:
        return not rec.chain_ids or self.layers.is_committed(rec.chain_ids[-1], cached=True)

    def lookup(self, reference: str) -> ImageRecord:
        recs = self.records.all()
        if reference.startswith(("sha256:", "sha512:")):
            for r in recs:
                if r.manifest_digest == reference or r.manifest_digest.startswith(reference):
                    return r
        else:
            ref = str(parse_reference(reference))
            for r in recs:
                if ref in r.references:
                    return r
                if "@" in ref and ref.split("@", 1)[1] == r.manifest_digest:
                    return r
        raise ImageNotFound(f"image {reference} is not in the local store")

    def touch(self, rec: ImageRecord, ref: str, source_digest: str | None) -> ImageRecord:
        """Tag ``rec`` with ``ref`` (taking the tag off other records of the platform) and
        note its use."""
        with self.records.locked():
            cur = self.records.get(rec.manifest_digest) or rec
            refs = tuple(dict.fromkeys((*cur.references, ref)))
            sources = dict(cur.source_digests)
            if source_digest:
                sources[ref] = source_digest
            now = time.time()
            if refs == cur.references and sources == cur.source_digests \
                    and now - cur.last_used < _TOUCH_REFRESH_S:
                # Nothing changed and last use is fresh enough for GC's delay: a task start
                # on a cached image then writes (and fsyncs) nothing.
                return cur
            new = replace(cur, references=refs, source_digests=sources, last_used=now)
            for other in self.records.all():
                if other.manifest_digest != new.manifest_digest and ref in other.references \
                        and other.platform == new.platform:
                    self.records.put(replace(
                        other, references=tuple(r for r in other.references if r != ref),
                        source_digests={k: v for k, v in other.source_digests.items()
                                        if k != ref}))
            self.records.put(new)
        if new.chain_ids and (refs != cur.references or now - cur.last_used > _PROP_REFRESH_S):
            self.layers.mirror_use(new.chain_ids[-1], refs, now)
        return new

    def record(self, ref: Reference, plat: Platform, mdigest: str, source: str,
               manifest: Manifest, config: ImageConfig, cfg_bytes: bytes,
               cids: list[str]) -> ImageRecord:
        rec = ImageRecord(manifest_digest=mdigest, references=(), source_digests={},
                          platform=str(plat), chain_ids=tuple(cids), diff_ids=config.diff_ids,
                          layers=tuple({"digest": d.digest, "size": d.size,
                                        "media_type": d.media_type} for d in manifest.layers),
                          config=cfg_bytes.decode("utf-8", "replace"), created=time.time(),
                          last_used=time.time())
        with self.records.locked():
            if self.records.get(mdigest) is None:
                self.records.put(rec)
            return self.touch(rec, str(ref), source)
