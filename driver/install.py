"""``nomad-driver-xc install --plugin-dir DIR``: put an executable ``DIR/xc`` that starts us.

Nomad names a plugin after its file in plugin_dir and wants a ``plugin "xc" {}`` block of the
same name, and one dangling entry there stops the whole agent. So the entry is a regular file
(never a symlink), written atomically, that runs this installation's interpreter on this
installation's package, and it is run once before we report success.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from driver.version import DRIVER_NAME

_TEMPLATE = """\
#!{python} -IS
# Nomad task driver plugin "{name}", written by `nomad-driver-xc install`.
# It runs the nomad-driver-xc found in {root}.
# -S: Nomad waits for the handshake of every plugin process it starts, and importing site (its
# .pth files) is a sixth of that; the paths site would add are these.
import sys
sys.path.insert(0, {root!r})
sys.path.extend({site_dirs!r})
from driver.__main__ import main
sys.exit(main(sys.argv[1:]))
"""

_SITE_DIRS = "import json, site; print(json.dumps(site.getsitepackages()))"


class InstallError(Exception):
    pass


def launcher_text(python: str, root: str, site_dirs: list[str]) -> str:
    return _TEMPLATE.format(python=python, root=root, name=DRIVER_NAME, site_dirs=site_dirs)


def site_dirs(python: str) -> list[str]:
    """The site-packages directories ``python`` (e.g. a virtualenv's) puts on its path."""
    res = subprocess.run([python, "-I", "-c", _SITE_DIRS], capture_output=True, text=True,
                         timeout=30)
    try:
        dirs = json.loads(res.stdout) if res.returncode == 0 else None
    except ValueError:
        dirs = None
    if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
        raise InstallError(f"could not ask {python} for its site-packages "
                           f"({res.stderr.strip() or res.stdout.strip()}); run install with "
                           "the Python that has nomad-driver-xc installed")
    return dirs


def install(plugin_dir: Path, python: str = sys.executable) -> Path:
    plugin_dir = plugin_dir.expanduser().absolute()  # Nomad requires absolute plugin dirs
    if plugin_dir.exists() and not plugin_dir.is_dir():
        raise InstallError(f"--plugin-dir {plugin_dir} exists and is not a directory; "
                           "pass the directory Nomad's plugin_dir points at")
    if not os.access(python, os.X_OK):
        raise InstallError(f"interpreter {python} is not executable; run install with the "
                           "Python that has nomad-driver-xc installed")
    if len(python) + 4 > 250:
        raise InstallError(f"interpreter path {python} is too long for a #! line; "
                           "install into a virtualenv with a shorter path")
    plugin_dir.mkdir(parents=True, exist_ok=True)
    root = str(Path(__file__).resolve().parent.parent)
    target = plugin_dir / DRIVER_NAME
    fd, tmp = tempfile.mkstemp(prefix=f".{DRIVER_NAME}.", dir=plugin_dir)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(launcher_text(python, root, site_dirs(python)))
        os.chmod(tmp, 0o755)
        # Run it before it goes live: an entry that cannot start must not reach plugin_dir.
        res = subprocess.run([tmp, "version"], capture_output=True, text=True, timeout=30,
                             env={k: v for k, v in os.environ.items()
                                  if k != "NOMAD_PLUGIN_MAGIC_COOKIE"})
        if res.returncode != 0:
            raise InstallError(f"the plugin launcher failed its trial run ({res.stderr.strip()}); "
                               "nothing was installed")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
