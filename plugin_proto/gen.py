"""Regenerate the Python modules from the .proto files in this folder.

    python -m plugin_proto.gen            # rewrite *_pb2.py, *_pb2_grpc.py, *.pyi
    python -m plugin_proto.gen --check    # exit 1 when the committed files are stale

Generation runs protoc from grpcio-tools with the repository root as the include path, so every
proto is imported as ``plugin_proto/<name>.proto`` and the Python modules import each other as
``plugin_proto.<name>_pb2``. Type stubs come from mypy-protobuf. The output depends on the
generator versions, which is why the check prints them when it fails.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import sys
import tempfile
from pathlib import Path

PKG_DIR = Path(__file__).resolve().parent
ROOT = PKG_DIR.parent
PKG = PKG_DIR.name
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
TOOLS = ("grpcio-tools", "protobuf", "mypy-protobuf")


def proto_files() -> list[Path]:
    return sorted(PKG_DIR.glob("*.proto"))


def generated_files(folder: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes()
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name.endswith(GENERATED_SUFFIXES)
    }


def tool_versions() -> str:
    found = []
    for name in TOOLS:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def _plugin(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SystemExit(
            f"{name} not found on PATH; install the generator with `pip install mypy-protobuf`"
        )
    return path


def generate(out_root: Path) -> None:
    """Write the generated modules of every proto into ``out_root/plugin_proto/``."""
    from grpc_tools import protoc  # heavy, only needed here

    well_known = Path(protoc.__file__).resolve().parent / "_proto"
    (out_root / PKG).mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"--proto_path={ROOT}",
        f"--proto_path={well_known}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *(f"{PKG}/{p.name}" for p in proto_files()),
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise SystemExit(f"protoc failed with status {rc}; see the messages above")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m plugin_proto.gen", description="regenerate the protobuf modules"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if generated files are stale")
    opts = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="plugin_proto-gen-") as tmp:
        generate(Path(tmp))
        fresh = generated_files(Path(tmp) / PKG)
        current = generated_files(PKG_DIR)
        if opts.check:
            stale = sorted(
                n for n in fresh.keys() | current.keys() if fresh.get(n) != current.get(n)
            )
            if stale:
                print(
                    f"plugin_proto: generated files are stale: {', '.join(stale)}; "
                    f"run `python -m plugin_proto.gen` and commit the result "
                    f"(generators here: {tool_versions()})",
                    file=sys.stderr,
                )
                return 1
            print(f"plugin_proto: {len(fresh)} generated files are up to date")
            return 0
        for name in current.keys() - fresh.keys():
            (PKG_DIR / name).unlink()
        for name, data in fresh.items():
            if current.get(name) != data:
                (PKG_DIR / name).write_bytes(data)
        print(f"plugin_proto: wrote {len(fresh)} files ({tool_versions()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
