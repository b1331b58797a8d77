"""The plugin's version: the installed distribution's, or pyproject.toml's in a source checkout."""

from __future__ import annotations

import functools
import re
from pathlib import Path

DISTRIBUTION = "nomad-driver-xc"
DRIVER_NAME = "xc"
API_VERSION = "v0.1.0"  # the only driver API version Nomad knows


@functools.cache
def version() -> str:
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    # A checkout's pyproject.toml wins over an older installed copy of the same tree.
    if pyproject.is_file():
        m = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(), re.MULTILINE)
        if m:
            return m.group(1)
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version(DISTRIBUTION)
    except PackageNotFoundError:
        return "0.0.0+unknown"
