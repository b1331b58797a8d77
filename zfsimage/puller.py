"""Getting images in: from a registry (auth, client cache, index resolution) or from an OCI
image layout, into verified layer chains and an image record."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from zfsimage.auth import RegistryAuth, credentials_from_helper, from_docker_config
from zfsimage.catalog import Catalog
from zfsimage.config import StoreConfig
from zfsimage.digest import chain_ids
from zfsimage.errors import LimitExceeded
from zfsimage.images import Image, PullProgress, image_from
from zfsimage.layers import Fetch, LayerStore
from zfsimage.locks import StoreLocks
from zfsimage.manifest import (
    INDEX_TYPES,
    Descriptor,
    Manifest,
    check_layers_match,
    media_type_of,
    parse_config,
    parse_index,
    parse_manifest,
    select_platform,
)
from zfsimage.platform import Platform
from zfsimage.reference import Reference
from zfsimage.registry import RegistryClient

Emit = Callable[[PullProgress], None]


def _no_progress(p: PullProgress) -> None:
    pass


class Puller:
    def __init__(self, cfg: StoreConfig, catalog: Catalog, layers: LayerStore,
                 locks: StoreLocks) -> None:
        self.cfg = cfg
        self.catalog = catalog
        self.layers = layers
        self.locks = locks
        self._clients: dict[tuple[str, RegistryAuth | None], RegistryClient] = {}

    def _auth_for(self, host: str, explicit: RegistryAuth | None) -> RegistryAuth | None:
        if explicit is not None and not explicit.empty:
            return explicit
        if host in self.cfg.auth:
            return self.cfg.auth[host]
        if self.cfg.docker_config is not None:
            found = from_docker_config(self.cfg.docker_config, host)
            if found is not None:
                return found
        if self.cfg.credential_helper:
            return credentials_from_helper(self.cfg.credential_helper, host)
        return None

    def client(self, ref: Reference, auth: RegistryAuth | None) -> RegistryClient:
        creds = self._auth_for(ref.registry, auth)
        key = (ref.api_host, creds)
        with self.locks.guard:
            c = self._clients.get(key)
            if c is None:
                c = self._clients[key] = RegistryClient(ref.api_host, creds, self.cfg.registry)
            return c

    def _resolve(self, client: RegistryClient, ref: Reference, plat: Platform
                 ) -> tuple[str, str, Manifest]:
        """-> (source digest, manifest digest, manifest) following indexes to ``plat``."""
        fm = client.get_manifest(ref)
        source = fm.digest
        data, mt, digest = fm.data, media_type_of(fm.data, fm.content_type), fm.digest
        depth = 0
        while mt in INDEX_TYPES:
            depth += 1
            check_index_depth(depth, self.cfg.limits.max_index_depth, str(ref))
            desc = select_platform(parse_index(data), plat)
            fm = client.get_manifest(ref, desc.digest)
            data, digest = fm.data, fm.digest
            mt = media_type_of(data, fm.content_type or desc.media_type)
        return source, digest, parse_manifest(data, mt)

    def pull(self, ref: Reference, plat: Platform, auth: RegistryAuth | None,
             progress: Emit | None) -> Image:
        client = self.client(ref, auth)
        emit = progress or _no_progress
        emit(PullProgress(str(ref), "resolve"))
        source, mdigest, manifest = self._resolve(client, ref, plat)

        def fetch(desc: Descriptor, dest: Path, cb: Callable[[int], None]) -> None:
            client.download_blob(ref, desc, dest, cb)

        return self._store(ref, plat, source, mdigest, manifest,
                           lambda d: client.get_blob_bytes(ref, d, "image config"), fetch, emit)

    def _store(self, ref: Reference, plat: Platform, source: str, mdigest: str,
               manifest: Manifest, read_config: Callable[[Descriptor], bytes], fetch: Fetch,
               emit: Emit) -> Image:
        check_layer_count(len(manifest.layers), self.cfg.limits.max_layers, str(ref))
        cfg_bytes = read_config(manifest.config)
        config = parse_config(cfg_bytes)
        check_layers_match(manifest, config)
        cids = chain_ids(list(config.diff_ids))
        with self.locks.gc(exclusive=False):
            final = self.layers.materialise(str(ref), manifest.layers, config.diff_ids, cids,
                                            fetch, emit)
            rec = self.catalog.record(ref, plat, mdigest, source, manifest, config, cfg_bytes,
                                      cids)
        emit(final)
        return image_from(rec, str(ref))

    def import_layout(self, layout: Path, ref: Reference, plat: Platform, name: str | None,
                      progress: Emit | None) -> Image:
        from zfsimage.layout import OciLayout  # local: only the importer needs it

        emit = progress or _no_progress
        with OciLayout.open(Path(layout), self.cfg.limits) as lay:
            source, mdigest, manifest = lay.resolve(name, plat,
                                                     self.cfg.limits.max_index_depth)
            with self.locks.thread_lock(f"image:{ref}:{plat}"):
                return self._store(ref, plat, source, mdigest, manifest,
                                   lambda d: lay.read_blob(d, "image config"), lay.copy_blob,
                                   emit)


def check_index_depth(depth: int, limit: int, what: str) -> None:
    if depth > limit:
        raise LimitExceeded(f"image {what} nests image indexes more than {limit} deep "
                            "(max_index_depth); a loop or a broken index", "max_index_depth")


def check_layer_count(n: int, limit: int, what: str) -> None:
    if n > limit:
        raise LimitExceeded(f"image {what} has {n} layers, over the limit of {limit} "
                            "(max_layers)", "max_layers")
