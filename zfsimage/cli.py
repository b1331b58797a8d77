"""``nomad-driver-xc image pull|import|list|inspect|rm|gc``: the operator's view of the store.

Exit status 0 on success; on failure one clear sentence on stderr and status 1 (2 for usage).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from zfsimage.auth import RegistryAuth
from zfsimage.errors import ImageError
from zfsimage.limits import LayerLimits, limit_options, option_name, parse_size
from zfsimage.registry import RegistryOptions
from zfsimage.store import ImageStore, PullProgress, StoreConfig, config_json

DEFAULT_MOUNT_ROOT = "/var/lib/nomad-driver-xc"


def _read_plugin_config(path: Path) -> dict[str, Any]:
    """The plugin config file: JSON, or the HCL `config { ... }` block's simple assignments."""
    text = path.read_text()
    try:
        obj = json.loads(text)
        if isinstance(obj, dict):
            return obj
    except ValueError:
        pass
    out: dict[str, Any] = {}
    for m in re.finditer(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"([^"]*)"', text, re.M):
        out.setdefault(m.group(1), m.group(2))
    for m in re.finditer(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*\[([^\]]*)\]', text, re.M):
        out.setdefault(m.group(1), re.findall(r'"([^"]*)"', m.group(2)))
    return out


class _Progress:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.start = time.monotonic()
        self.last = 0.0
        self.phase = ""

    def __call__(self, p: PullProgress) -> None:
        now = time.monotonic()
        if p.phase == self.phase and p.phase == "download" and now - self.last < 0.5:
            return
        self.phase, self.last = p.phase, now
        rate = p.bytes_done / max(now - self.start, 1e-6)
        if p.phase == "download":
            msg = (f"layer {p.layer}/{p.layers_total}: downloading "
                   f"{_mib(p.bytes_done)}/{_mib(p.bytes_total)} ({_mib(rate)}/s)")
        elif p.phase == "extract":
            msg = f"layer {p.layer}/{p.layers_total}: extracting"
        elif p.phase == "cached":
            msg = f"layer {p.layer}/{p.layers_total}: already present"
        elif p.phase == "done":
            msg = (f"done: {p.layers_total} layers ({p.layers_cached} cached), "
                   f"{_mib(p.bytes_done)} downloaded in {now - self.start:.1f} s")
        else:
            msg = f"{p.phase} {p.reference}"
        print(msg, file=self.out, flush=True)


def _mib(n: float) -> str:
    return f"{n / 1048576:.1f} MiB"


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="nomad-driver-xc image",
                                 description="Manage the OCI image store on ZFS.")
    ap.add_argument("--dataset", help="ZFS dataset of the store (default: from --config)")
    ap.add_argument("--config", type=Path, help="plugin config file (JSON or HCL assignments)")
    ap.add_argument("--mount-root", help=f"mount root (default {DEFAULT_MOUNT_ROOT})")
    ap.add_argument("--insecure-registry", action="append", default=[],
                    help="registry host:port reached over plain HTTP (repeatable)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pull", help="pull an image from its registry")
    p.add_argument("reference")
    p.add_argument("--platform", help="os/arch[/variant], default the host's")
    p.add_argument("--username")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the registry password from stdin")
    p.add_argument("--docker-config", type=Path, help="Docker config.json with credentials")
    p.add_argument("-q", "--quiet", action="store_true")
    _limit_arguments(p)
    p = sub.add_parser("import", help="import an OCI image layout directory or archive")
    p.add_argument("path", type=Path)
    p.add_argument("reference", help="the name to give the image")
    p.add_argument("--name", help="ref.name annotation of the entry in index.json")
    p.add_argument("--platform")
    p.add_argument("-q", "--quiet", action="store_true")
    _limit_arguments(p)
    sub.add_parser("list", help="list images").add_argument("--json", action="store_true")
    p = sub.add_parser("inspect", help="show an image's config and layers")
    p.add_argument("reference")
    p = sub.add_parser("rm", help="untag an image; remove it when nothing uses it")
    p.add_argument("reference")
    p = sub.add_parser("gc", help="remove unused untagged images and layers")
    p.add_argument("--delay", type=float, help="seconds an untagged image is kept (default: "
                   "the configured delay)")
    return ap


def _limit_arguments(p: argparse.ArgumentParser) -> None:
    """One --max-... option per LayerLimits field; sizes take K/M/G/T suffixes."""
    g = p.add_argument_group("limits (raise them for images you trust)")
    for name, help_, size, typ in limit_options():
        conv = parse_size if size else typ
        g.add_argument(option_name(name), dest=f"limit_{name}", type=conv, help=help_,
                       metavar="SIZE" if size else ("N" if typ is not str else "WORD"))


def _limits(args: argparse.Namespace) -> LayerLimits:
    given = {k[len("limit_"):]: v for k, v in vars(args).items()
             if k.startswith("limit_") and v is not None}
    try:
        return LayerLimits(**given)
    except ValueError as exc:
        raise ImageError(str(exc)) from exc


def _store(args: argparse.Namespace, docker_config: Path | None = None) -> ImageStore:
    conf: dict[str, Any] = {}
    if args.config is not None:
        try:
            conf = _read_plugin_config(args.config)
        except OSError as exc:
            raise ImageError(f"plugin config {args.config} cannot be read: {exc.strerror}") \
                from exc
    dataset = args.dataset or conf.get("dataset") or os.environ.get("NOMAD_DRIVER_XC_DATASET")
    if not dataset:
        raise ImageError("no dataset given; pass --dataset or --config with `dataset = ...`")
    mount_root = args.mount_root or conf.get("mount_root") or DEFAULT_MOUNT_ROOT
    insecure = tuple(args.insecure_registry) + tuple(conf.get("insecure_registries") or ())
    dc = docker_config or (Path(conf["config"]) if conf.get("config") else None)
    cfg = StoreConfig(dataset=str(dataset), mount_root=Path(mount_root),
                      registry=RegistryOptions(insecure_registries=insecure),
                      docker_config=dc, limits=_limits(args))
    if args.cmd == "gc" and args.delay is None and conf.get("image_gc_delay"):
        cfg = StoreConfig(**{**cfg.__dict__, "gc_delay_s": float(conf["image_gc_delay"])})
    return ImageStore(cfg)


def main(argv: list[str] | None = None, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int) else 2
    try:
        return _run(args, out, err)
    except ImageError as exc:
        print(f"error: {exc}", file=err)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=err)
        return 130
    except Exception as exc:  # a bug, not bad input: the traceback goes to the log
        logging.getLogger("nomad-driver-xc.image").debug("unexpected error", exc_info=True)
        print(f"error: internal error ({type(exc).__name__}: {str(exc)[:200]!r}); run with "
              "XC_DEBUG=1 for the traceback", file=err)
        if os.environ.get("XC_DEBUG"):
            logging.getLogger("nomad-driver-xc.image").error("traceback", exc_info=True)
        return 70


def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.cmd == "pull":
        auth = None
        if args.username:
            pw = sys.stdin.readline().rstrip("\n") if args.password_stdin else ""
            auth = RegistryAuth(args.username, pw)
        store = _store(args, args.docker_config)
        img = store.ensure_image(args.reference, auth=auth, platform=args.platform,
                                 progress=None if args.quiet else _Progress(err))
        print(f"{img.reference} {img.manifest_digest}", file=out)
        return 0
    store = _store(args)
    if args.cmd == "import":
        img = store.import_layout(args.path, args.reference, platform=args.platform,
                                  name=args.name,
                                  progress=None if args.quiet else _Progress(err))
        print(f"{img.reference} {img.manifest_digest}", file=out)
    elif args.cmd == "list":
        imgs = store.list_images()
        if args.json:
            print(json.dumps([{"references": list(i.references), "digest": i.manifest_digest,
                               "platform": i.platform, "layers": len(i.chain_ids),
                               "last_used": i.last_used} for i in imgs], indent=2), file=out)
        else:
            print(f"{'REFERENCE':60} {'DIGEST':20} {'PLATFORM':16} LAYERS", file=out)
            for i in imgs:
                for r in i.references or ("<none>",):
                    print(f"{r:60} {i.manifest_digest[7:19]:20} {i.platform:16} "
                          f"{len(i.chain_ids)}", file=out)
    elif args.cmd == "inspect":
        img, rec = store.inspect(args.reference)
        obj = json.loads(config_json(img))
        obj.update({"manifest_digest": rec.manifest_digest, "references": rec.references,
                    "platform": rec.platform, "chain_ids": rec.chain_ids,
                    "layers": rec.layers, "last_used": rec.last_used})
        print(json.dumps(obj, indent=2), file=out)
    elif args.cmd == "rm":
        removed = store.remove_image(args.reference)
        print(f"{'removed' if removed else 'untagged'} {args.reference}", file=out)
    elif args.cmd == "gc":
        rep = store.gc(delay_s=args.delay)
        print(f"removed {len(rep.images_removed)} images, {len(rep.layers_removed)} layers",
              file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
