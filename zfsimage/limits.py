"""``LayerLimits``: every bound the store puts on an image, each with a default an operator can
raise (``StoreConfig.limits``; ``nomad-driver-xc image pull|import --max-...``).

Each field's metadata carries its help text; the CLI options are derived from it, and every error
that hits a limit names the field (``LimitExceeded.limit``), so the message says what to raise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any

_GIB = 1024**3
_MIB = 1024**2


def _lim(default: Any, help_: str, size: bool = False) -> Any:
    return field(default=default, metadata={"help": help_, "size": size})


@dataclass(frozen=True)
class LayerLimits:
    max_bytes: int = _lim(64 * _GIB, "uncompressed bytes of one layer, and bytes its files "
                          "take with sparse holes counted", size=True)
    max_entries: int = _lim(1_000_000, "tar entries in one layer")
    max_file_size: int = _lim(32 * _GIB, "size of one file, holes included", size=True)
    max_path_len: int = _lim(4096, "bytes of one entry name or hardlink target")
    max_component_len: int = _lim(255, "bytes of one path component")
    max_depth: int = _lim(256, "directory depth of anything created, after resolving symlinks")
    max_link_len: int = _lim(4095, "bytes of one symlink target (Linux refuses longer)")
    max_meta_size: int = _lim(1 * _MIB, "bytes of one PAX or GNU long-name record", size=True)
    max_meta_total: int = _lim(64 * _MIB, "bytes of all PAX and GNU metadata records of one "
                               "layer", size=True)
    max_sparse_regions: int = _lim(65536, "regions in one sparse file's map")
    max_layers: int = _lim(256, "layers of one image")
    max_index_depth: int = _lim(4, "image indexes nested in one another")
    max_temp_bytes: int = _lim(16 * _GIB, "bytes an image layout archive may unpack to the "
                               "temp directory", size=True)
    max_apply_seconds: float = _lim(3600.0, "seconds one layer's application may take")
    device_nodes: str = _lim("skip", "'skip' or 'create' device nodes found in layers")

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name != "device_nodes" and (not isinstance(v, (int, float))
                                             or isinstance(v, bool) or v <= 0):
                raise ValueError(f"limit {f.name} must be a positive number, not {v!r}")
        if self.device_nodes not in ("skip", "create"):
            raise ValueError(f"limit device_nodes must be 'skip' or 'create', not "
                             f"{self.device_nodes!r}")


_SUFFIX = {"": 1, "k": 1024, "m": _MIB, "g": _GIB, "t": 1024 * _GIB}


def parse_size(text: str) -> int:
    """``123``, ``64K``, ``20M``, ``8G``, ``1T`` (binary units; a trailing B or iB is fine)."""
    m = re.fullmatch(r"\s*(\d+)\s*([kmgtKMGT]?)(?:i?[bB])?\s*", text)
    if not m:
        raise ValueError(f"{text!r} is not a size; use e.g. 512M or 20G")
    return int(m.group(1)) * _SUFFIX[m.group(2).lower()]


def human(v: object) -> str:
    """64G for 64 GiB; other values as they are."""
    if isinstance(v, int) and not isinstance(v, bool) and v >= _MIB:
        for unit, n in (("T", 1024 * _GIB), ("G", _GIB), ("M", _MIB)):
            if v % n == 0:
                return f"{v // n}{unit}"
    return f"{v:g}" if isinstance(v, float) else str(v)


def option_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def limit_options() -> list[tuple[str, str, bool, type]]:
    """(field, help, is_size, type) of every limit, for a CLI to offer as --max-... options."""
    out = []
    for f in fields(LayerLimits):
        typ = type(f.default)
        out.append((f.name, f"{f.metadata['help']} (default {human(f.default)})",
                    bool(f.metadata["size"]), typ))
    return out
