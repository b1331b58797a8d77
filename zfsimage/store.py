"""The image store: OCI images as ZFS layer chains, one clone per task.

Layout under the operator's dataset ``D`` (all parents ``mountpoint=none``)::

    D/layers/<chainid hex>   one dataset per layer chain, a clone of its parent chain's
                             ``@layer`` snapshot; user properties xc:chainid, xc:diffid,
                             xc:parent, xc:blob, xc:lastused
    D/layers/<hex>@layer     the commit marker, taken only after extraction and DiffID checks
    D/tasks/<task_key>       a task rootfs: clone of the image's top ``@layer`` snapshot
    D/meta                   image records (config, references), see records.py

Why one dataset per ChainID rather than one dataset per linear chain with a snapshot per layer
(oci-zfs-jails.md §2.7): a chain's existence and completeness are then a single name check
(``D/layers/<hex>@layer`` exists or not), two images sharing a base share the very same datasets
without any promote/branch bookkeeping, a half-done layer is a dataset without the marker that is
simply destroyed (no rollback of a dataset other images already use), and GC can destroy a leaf
chain the moment nothing needs it. The cost, one dataset per layer, is cheap on ZFS (clones
share blocks) and layer counts are small.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from zfsimage import zfs
from zfsimage.auth import RegistryAuth, credentials_from_helper, from_docker_config
from zfsimage.digest import chain_ids, hex_of
from zfsimage.errors import (
    ImageGone,
    ImageInUse,
    ImageNotFound,
    InvalidName,
    RegistryUnavailable,
    ZfsError,
    ZfsNotFound,
)
from zfsimage.extract import LayerLimits, apply_layer
from zfsimage.manifest import (
    INDEX_TYPES,
    Descriptor,
    ImageConfig,
    Manifest,
    check_layers_match,
    media_type_of,
    parse_config,
    parse_index,
    parse_manifest,
    select_platform,
)
from zfsimage.platform import Platform
from zfsimage.probe import valid_dataset_name
from zfsimage.records import ImageRecord, RecordStore
from zfsimage.reference import Reference, parse_reference
from zfsimage.registry import RegistryClient, RegistryOptions

PROP = "xc"                       # user property namespace: xc:chainid, ...
SNAP = "layer"                    # the commit-marker snapshot name
_PROP_REFRESH_S = 600.0          # how stale xc:lastused on a top layer may get
_TOUCH_REFRESH_S = 60.0          # how stale an image record's last use may get
_TASK_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


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


def _image_from(rec: ImageRecord, reference: str) -> Image:
    return Image(reference=reference, manifest_digest=rec.manifest_digest,
                 chain_id=rec.chain_ids[-1] if rec.chain_ids else None,
                 config=parse_config(rec.config.encode()), platform=rec.platform,
                 chain_ids=rec.chain_ids, references=rec.references, last_used=rec.last_used)


class ImageStore:
    """Thread-safe; blocking. Several processes may share one store (flock-serialised)."""

    def __init__(self, config: StoreConfig) -> None:
        if not valid_dataset_name(config.dataset):
            raise InvalidName(f"dataset {config.dataset!r} is not a valid ZFS dataset name")
        self.cfg = config
        self.ds = config.dataset
        self.mount_root = Path(config.mount_root)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._clients: dict[tuple[str, RegistryAuth | None], RegistryClient] = {}
        # Top snapshots this store has seen committed. A start on a cached image then runs no
        # `zfs` command before its clone; if one vanished behind our back (another process's
        # `image rm`), the clone says so and the next ensure_image looks again.
        self._committed: set[str] = set()
        for sub in ("spool", "locks", "tasks", "layers"):
            (self.mount_root / sub).mkdir(parents=True, exist_ok=True)
        self._setup_datasets()
        self.records = RecordStore(self.mount_root / "meta" / "images")
        self.recover()

    # -- setup and crash recovery -----------------------------------------------------------

    def _setup_datasets(self) -> None:
        if not zfs.exists(self.ds):
            zfs.create(self.ds, {"mountpoint": "none"}, parents=True)
        for sub in ("layers", "tasks"):
            if not zfs.exists(f"{self.ds}/{sub}"):
                with contextlib.suppress(ZfsError):
                    zfs.create(f"{self.ds}/{sub}", {"mountpoint": "none"})
        meta = f"{self.ds}/meta"
        mp = str(self.mount_root / "meta")
        if not zfs.exists(meta):
            try:
                zfs.create(meta, {"mountpoint": mp})
            except ZfsError:
                if not zfs.exists(meta):
                    raise
        props = zfs.get([meta], ["mountpoint", "mounted"]).get(meta, {})
        if props.get("mountpoint") != mp:
            zfs.set_props(meta, {"mountpoint": mp})
        if props.get("mounted") != "yes":
            zfs.mount(meta)

    def recover(self) -> list[str]:
        """Remove what a crash left half-done: layer datasets without their commit snapshot
        (unless another live pull holds their lock), spool files and temp records."""
        removed = []
        for name, props in self._layer_datasets().items():
            if props.get("committed"):
                continue
            hexid = name.rsplit("/", 1)[1]
            with self._try_chain_flock(hexid) as got:
                if not got:
                    continue
                if zfs.exists(f"{name}@{SNAP}"):
                    continue
                zfs.destroy(name, recursive=True)
                removed.append(name)
        for p in (self.mount_root / "spool").iterdir():
            with contextlib.suppress(OSError):
                if p.is_file() and not self._spool_owner_alive(p.name):
                    p.unlink()
        self.records.clean_temp()
        return removed

    @staticmethod
    def _spool_owner_alive(name: str) -> bool:
        m = re.match(r"^p(\d+)-", name)
        if not m:
            return False
        pid = int(m.group(1))
        if pid == os.getpid():
            return True
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def _layer_datasets(self) -> dict[str, dict[str, str]]:
        """{dataset: {chainid, parent, origin, committed, lastused}} for every layer dataset."""
        root = f"{self.ds}/layers"
        raw = zfs.get([root], ["type", "origin", f"{PROP}:chainid", f"{PROP}:parent",
                               f"{PROP}:lastused"], recursive=True)
        out: dict[str, dict[str, str]] = {}
        snaps = set()
        for name, props in raw.items():
            if name == root:
                continue
            if "@" in name:
                if name.endswith(f"@{SNAP}"):
                    snaps.add(name.split("@", 1)[0])
                continue
            out[name] = {"chainid": props.get(f"{PROP}:chainid", "-"),
                         "parent": props.get(f"{PROP}:parent", "-"),
                         "origin": props.get("origin", "-"),
                         "lastused": props.get(f"{PROP}:lastused", "-")}
        for name in out:
            if name in snaps:
                out[name]["committed"] = "yes"
        return out

    # -- locks ------------------------------------------------------------------------------

    def _tlock(self, key: str) -> threading.Lock:
        with self._locks_guard:
            lk = self._locks.get(key)
            if lk is None:
                lk = self._locks[key] = threading.Lock()
            return lk

    @contextlib.contextmanager
    def _chain_lock(self, hexid: str) -> Iterator[None]:
        with self._tlock("chain:" + hexid):
            fd = os.open(self.mount_root / "locks" / f"{hexid}.lock",
                         os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    @contextlib.contextmanager
    def _gc_lock(self, exclusive: bool) -> Iterator[None]:
        """Pulls hold it shared from the first layer to the image record; gc exclusively, so
        gc never sees committed layers whose image record is not written yet."""
        fd = os.open(self.mount_root / "locks" / "gc.lock",
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _try_chain_flock(self, hexid: str) -> Iterator[bool]:
        lk = self._tlock("chain:" + hexid)
        if not lk.acquire(blocking=False):
            yield False
            return
        try:
            fd = os.open(self.mount_root / "locks" / f"{hexid}.lock",
                         os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    yield False
                    return
                yield True
            finally:
                os.close(fd)
        finally:
            lk.release()

    # -- registry plumbing --------------------------------------------------------------------

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

    def _client(self, ref: Reference, auth: RegistryAuth | None) -> RegistryClient:
        creds = self._auth_for(ref.registry, auth)
        key = (ref.api_host, creds)
        with self._locks_guard:
            c = self._clients.get(key)
            if c is None:
                c = self._clients[key] = RegistryClient(ref.api_host, creds, self.cfg.registry)
            return c

    # -- names ------------------------------------------------------------------------------

    def layer_dataset(self, chain_id: str) -> str:
        return f"{self.ds}/layers/{hex_of(chain_id)}"

    def task_dataset(self, task_key: str) -> str:
        if not isinstance(task_key, str) or not _TASK_KEY_RE.match(task_key):
            raise InvalidName(f"task key {task_key!r} must be 1-128 characters of letters, "
                              "digits, '_', '.', ':' or '-', starting with a letter or digit")
        return f"{self.ds}/tasks/{task_key}"

    # -- images -----------------------------------------------------------------------------

    def _find_local(self, ref: Reference, plat: Platform) -> ImageRecord | None:
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

    def _complete(self, rec: ImageRecord) -> bool:
        if not rec.chain_ids:
            return True
        snap = f"{self.layer_dataset(rec.chain_ids[-1])}@{SNAP}"
        if snap in self._committed:
            return True
        if zfs.exists(snap):
            self._committed.add(snap)
            return True
        return False

    def _touch(self, rec: ImageRecord, ref: str, source_digest: str | None) -> ImageRecord:
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
            # a tag names one image per platform: take it off any other record
            for other in self.records.all():
                if other.manifest_digest != new.manifest_digest and ref in other.references \
                        and other.platform == new.platform:
                    self.records.put(replace(
                        other, references=tuple(r for r in other.references if r != ref),
                        source_digests={k: v for k, v in other.source_digests.items()
                                        if k != ref}))
            self.records.put(new)
        if new.chain_ids and (refs != cur.references or now - cur.last_used > _PROP_REFRESH_S):
            # mirror references and last use onto the top layer dataset for `zfs get`
            with contextlib.suppress(ZfsError):
                zfs.set_props(self.layer_dataset(new.chain_ids[-1]), {
                    f"{PROP}:refs": ",".join(refs)[:1000] or "-",
                    f"{PROP}:lastused": str(int(now))})
        return new

    def ensure_image(self, reference: str, auth: RegistryAuth | None = None,
                     platform: Platform | str | None = None,
                     progress: Callable[[PullProgress], None] | None = None,
                     revalidate: bool | None = None) -> Image:
        """Make the image available locally (pulling what is missing) and return it.

        ``revalidate``: ask the registry whether a locally present tag moved (Nomad's
        ``force_pull``); ``None`` takes the store's ``revalidate_tags``.
        """
        recheck = self.cfg.revalidate_tags if revalidate is None else revalidate
        ref = parse_reference(reference)
        plat = Platform.parse(platform) if isinstance(platform, str) else \
            (platform or self.cfg.platform or Platform.host())
        with self._tlock(f"image:{ref}:{plat}"):
            local = self._find_local(ref, plat)
            if local is not None and self._complete(local):
                if ref.digest or not recheck:
                    return _image_from(self._touch(local, str(ref), None), str(ref))
                try:
                    head = self._client(ref, auth).head_manifest(ref)
                except RegistryUnavailable:
                    head = None  # offline: the local copy of the tag is the best we have
                if head is None or head == local.source_digests.get(str(ref)) \
                        or head == local.manifest_digest:
                    return _image_from(self._touch(local, str(ref), None), str(ref))
            return self._pull(ref, plat, auth, progress)

    def _resolve(self, client: RegistryClient, ref: Reference, plat: Platform
                 ) -> tuple[str, str, Manifest]:
        """-> (source digest, manifest digest, manifest) following an index to ``plat``."""
        fm = client.get_manifest(ref)
        source = fm.digest
        data, mt, digest = fm.data, media_type_of(fm.data, fm.content_type), fm.digest
        for _ in range(4):  # nested indexes are allowed; bound the depth
            if mt not in INDEX_TYPES:
                break
            desc = select_platform(parse_index(data), plat)
            fm = client.get_manifest(ref, desc.digest)
            data, digest = fm.data, fm.digest
            mt = media_type_of(data, fm.content_type or desc.media_type)
        return source, digest, parse_manifest(data, mt)

    def _pull(self, ref: Reference, plat: Platform, auth: RegistryAuth | None,
              progress: Callable[[PullProgress], None] | None) -> Image:
        client = self._client(ref, auth)
        emit = progress or (lambda p: None)
        emit(PullProgress(str(ref), "resolve"))
        source, mdigest, manifest = self._resolve(client, ref, plat)
        cfg_bytes = client.get_blob_bytes(ref, manifest.config, "image config")
        config = parse_config(cfg_bytes)
        check_layers_match(manifest, config)
        cids = chain_ids(list(config.diff_ids))

        def fetch(desc: Descriptor, dest: Path, cb: Callable[[int], None]) -> None:
            client.download_blob(ref, desc, dest, cb)

        with self._gc_lock(exclusive=False):
            final = self._materialise(str(ref), manifest.layers, config.diff_ids, cids, fetch,
                                      emit)
            rec = self._record(ref, plat, mdigest, source, manifest, config, cfg_bytes, cids)
        emit(final)
        return _image_from(rec, str(ref))

    def _record(self, ref: Reference, plat: Platform, mdigest: str, source: str,
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
            return self._touch(rec, str(ref), source)

    def _materialise(self, refname: str, layers: tuple[Descriptor, ...],
                     diff_ids: tuple[str, ...], cids: list[str],
                     fetch: Callable[[Descriptor, Path, Callable[[int], None]], None],
                     emit: Callable[[PullProgress], None]) -> PullProgress:
        """Create every missing layer chain, in order, each committed only when verified.
        Returns the final progress (phase "done")."""
        total = len(layers)
        missing = [i for i, c in enumerate(cids)
                   if not zfs.exists(f"{self.layer_dataset(c)}@{SNAP}")]
        bytes_total = sum(layers[i].size for i in missing)
        done = [0]
        cached = 0
        for i, desc in enumerate(layers):
            cid = cids[i]
            parent = cids[i - 1] if i else None
            with self._chain_lock(hex_of(cid)):
                if zfs.exists(f"{self.layer_dataset(cid)}@{SNAP}"):
                    cached += 1
                    emit(PullProgress(refname, "cached", i + 1, total, cached, done[0],
                                      bytes_total))
                    continue

                def cb(n: int, i: int = i, cached: int = cached) -> None:
                    done[0] += n
                    emit(PullProgress(refname, "download", i + 1, total, cached, done[0],
                                      bytes_total))

                spool = self.mount_root / "spool" / f"p{os.getpid()}-{uuid.uuid4().hex}"
                try:
                    fetch(desc, spool, cb)
                    emit(PullProgress(refname, "extract", i + 1, total, cached, done[0],
                                      bytes_total))
                    self._build_chain(cid, parent, diff_ids[i], desc, spool)
                finally:
                    spool.unlink(missing_ok=True)
        return PullProgress(refname, "done", total, total, cached, done[0], bytes_total)

    def _build_chain(self, cid: str, parent: str | None, diff_id: str, desc: Descriptor,
                     blob: Path) -> None:
        """Create D/layers/<cid>, apply the verified blob, snapshot. Caller holds the lock."""
        ds = self.layer_dataset(cid)
        if zfs.exists(ds):
            zfs.destroy(ds, recursive=True)   # a half-done leftover from a crash
        mp = self.mount_root / "layers" / hex_of(cid)
        props = {"mountpoint": str(mp)}
        if self.cfg.max_image_size:
            props["refquota"] = self.cfg.max_image_size  # backstop against tar bombs
        if parent is None:
            zfs.create(ds, props)
        else:
            zfs.clone(f"{self.layer_dataset(parent)}@{SNAP}", ds, props)
        try:
            apply_layer(blob, desc.compression, mp, diff_id, self.cfg.limits,
                        what=f"layer {desc.digest}")
            zfs.set_props(ds, {f"{PROP}:chainid": cid, f"{PROP}:diffid": diff_id,
                               f"{PROP}:parent": parent or "-", f"{PROP}:blob": desc.digest,
                               f"{PROP}:lastused": str(int(time.time()))})
            zfs.snapshot(f"{ds}@{SNAP}")      # commit marker, last
        except BaseException:
            with contextlib.suppress(ZfsError):
                zfs.destroy(ds, recursive=True)
            with contextlib.suppress(OSError):
                mp.rmdir()
            raise
        # tidy after commit: layer datasets stay unmounted (fewer FUSE mounts)
        with contextlib.suppress(ZfsError):
            zfs.set_props(ds, {"mountpoint": "none"})
        with contextlib.suppress(OSError):
            mp.rmdir()

    # -- local import -------------------------------------------------------------------------

    def import_layout(self, layout: Path, reference: str, platform: Platform | str | None = None,
                      name: str | None = None,
                      progress: Callable[[PullProgress], None] | None = None) -> Image:
        """Import an image from an OCI image layout directory or a tar archive of one."""
        from zfsimage.layout import OciLayout  # local: only the importer needs it

        ref = parse_reference(reference)
        plat = Platform.parse(platform) if isinstance(platform, str) else \
            (platform or self.cfg.platform or Platform.host())
        emit = progress or (lambda p: None)
        with OciLayout.open(Path(layout)) as lay:
            source, mdigest, manifest = lay.resolve(name, plat)
            cfg_bytes = lay.read_blob(manifest.config, "image config")
            config = parse_config(cfg_bytes)
            check_layers_match(manifest, config)
            cids = chain_ids(list(config.diff_ids))
            with self._tlock(f"image:{ref}:{plat}"), self._gc_lock(exclusive=False):
                final = self._materialise(str(ref), manifest.layers, config.diff_ids, cids,
                                          lay.copy_blob, emit)
                rec = self._record(ref, plat, mdigest, source, manifest, config, cfg_bytes,
                                   cids)
        emit(final)
        return _image_from(rec, str(ref))

    # -- task rootfs ------------------------------------------------------------------------

    def clone_rootfs(self, image: Image, task_key: str) -> Path:
        """Clone the image's top snapshot as ``D/tasks/<task_key>``, mounted; idempotent."""
        ds = self.task_dataset(task_key)
        mp = self.mount_root / "tasks" / task_key
        props = {"mountpoint": str(mp), f"{PROP}:image": image.manifest_digest,
                 **self.cfg.task_props}
        try:
            if image.chain_id is None:
                zfs.create(ds, props)
            else:
                zfs.clone(f"{self.layer_dataset(image.chain_id)}@{SNAP}", ds, props)
        except ZfsError as exc:
            if "already exists" not in exc.stderr:
                if "does not exist" in exc.stderr or isinstance(exc, ZfsNotFound):
                    self._committed.discard(f"{self.layer_dataset(image.chain_id)}@{SNAP}"
                                            if image.chain_id else "")
                    raise ImageGone(f"image {image.reference} is not in the store any more; "
                                    "pull it again") from exc
                raise
            cur = zfs.get([ds], ["origin", "mounted", "mountpoint"]).get(ds, {})
            want = f"{self.layer_dataset(image.chain_id)}@{SNAP}" if image.chain_id else "-"
            if cur.get("origin") != want:
                raise ImageInUse(f"task rootfs {ds} exists but was cloned from another image "
                                 f"({cur.get('origin')}); destroy it first") from exc
            if cur.get("mounted") != "yes":
                zfs.mount(ds)
            return Path(cur.get("mountpoint") or mp)
        return mp

    def destroy_rootfs(self, task_key: str) -> None:
        """Destroy the task clone; success if it is already gone."""
        ds = self.task_dataset(task_key)
        zfs.destroy(ds, recursive=True)
        with contextlib.suppress(OSError):
            (self.mount_root / "tasks" / task_key).rmdir()

    def rootfs_path(self, task_key: str) -> Path | None:
        ds = self.task_dataset(task_key)
        try:
            props = zfs.get([ds], ["mountpoint", "mounted"]).get(ds, {})
        except ZfsNotFound:
            return None
        if props.get("mounted") != "yes" or props.get("mountpoint") in (None, "none", "-"):
            return None
        return Path(props["mountpoint"])

    def task_rootfs(self) -> dict[str, str]:
        """{task_key: origin snapshot} of every task clone."""
        root = f"{self.ds}/tasks"
        raw = zfs.get([root], ["origin"], recursive=True)
        return {n.rsplit("/", 1)[1]: p.get("origin", "-") for n, p in raw.items()
                if n != root and "@" not in n}

    # -- inventory and removal ------------------------------------------------------------------

    def list_images(self) -> list[Image]:
        return [_image_from(r, r.references[0] if r.references else r.manifest_digest)
                for r in self.records.all()]

    def inspect(self, reference: str) -> tuple[Image, ImageRecord]:
        rec = self._lookup(reference)
        return _image_from(rec, reference), rec

    def _lookup(self, reference: str) -> ImageRecord:
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

    def _in_use_chains(self) -> set[str]:
        out = set()
        for origin in self.task_rootfs().values():
            if "@" in origin:
                out.add(origin.split("@", 1)[0].rsplit("/", 1)[1])
        return out

    def remove_image(self, reference: str, force_untag: bool = False) -> bool:
        """Untag ``reference``; drop the image (and layers nothing else needs) when it has no
        references left and no task uses it. Returns True when the image record was removed."""
        with self.records.locked():
            rec = self._lookup(reference)
            ref = reference if reference.startswith("sha") else str(parse_reference(reference))
            refs = tuple(r for r in rec.references if r != ref)
            if reference.startswith("sha"):
                refs = ()
            top = hex_of(rec.chain_ids[-1]) if rec.chain_ids else None
            if not refs and top is not None and top in self._in_use_chains() \
                    and not force_untag:
                raise ImageInUse(f"image {reference} is used by a running task rootfs; "
                                     "stop the task first")
            if refs or (top is not None and top in self._in_use_chains()):
                self.records.put(replace(rec, references=refs, source_digests={
                    k: v for k, v in rec.source_digests.items() if k in refs}))
                return False
            self.records.delete(rec.manifest_digest)
        self.gc(delay_s=float("inf"))
        return True

    def gc(self, delay_s: float | None = None, now: float | None = None) -> GcReport:
        """Remove untagged images unused for ``delay_s`` (default the configured delay), then
        every layer chain no image record or task needs. Never touches what a task uses."""
        delay = self.cfg.gc_delay_s if delay_s is None else delay_s
        now = time.time() if now is None else now
        removed_images: list[str] = []
        removed_layers: list[str] = []
        with self._gc_lock(exclusive=True), self.records.locked():
            in_use = self._in_use_chains()
            needed: set[str] = set()
            for rec in self.records.all():
                top = hex_of(rec.chain_ids[-1]) if rec.chain_ids else None
                keep = bool(rec.references) or (top is not None and top in in_use) or \
                    (delay != float("inf") and now - rec.last_used < delay)
                if keep:
                    needed.update(hex_of(c) for c in rec.chain_ids)
                else:
                    self.records.delete(rec.manifest_digest)
                    removed_images.append(rec.manifest_digest)
            needed |= in_use
            progress = True
            while progress:
                progress = False
                layers = self._layer_datasets()
                origins = {p["origin"].split("@", 1)[0] for p in layers.values()
                           if p["origin"] not in ("-", "")}
                origins |= {o.split("@", 1)[0] for o in self.task_rootfs().values() if "@" in o}
                for name in layers:
                    hexid = name.rsplit("/", 1)[1]
                    if hexid in needed or name in origins:
                        continue
                    with self._try_chain_flock(hexid) as got:
                        if not got:
                            continue
                        try:
                            zfs.destroy(name, recursive=True)
                        except ZfsError as exc:
                            if "dependent clones" in exc.stderr or "has children" in exc.stderr:
                                continue
                            raise
                        self._committed.discard(f"{name}@{SNAP}")
                        removed_layers.append(name)
                        progress = True
        return GcReport(tuple(removed_images), tuple(removed_layers))


def config_json(image: Image) -> str:
    """The image config as JSON text, for ``image inspect``."""
    c = image.config
    return json.dumps({"entrypoint": c.entrypoint, "cmd": c.cmd, "env": c.env,
                       "working_dir": c.working_dir, "user": c.user,
                       "exposed_ports": c.exposed_ports, "labels": c.labels,
                       "os": c.os, "architecture": c.architecture}, indent=2)

