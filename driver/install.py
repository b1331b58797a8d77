"""``nomad-driver-xc install --plugin-dir DIR``: put an executable ``DIR/xc`` that starts us.

Nomad names a plugin after its file in plugin_dir and wants a ``plugin "xc" {}`` block of the
same name, and one dangling entry there stops the whole agent. So the entry is a regular file
(never a symlink), written atomically, that runs this installation's interpreter on this
installation's package, and it is run once before we report success.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from driver.version import DRIVER_NAME

_TEMPLATE = """\
#!{python} -I
# Nomad task driver plugin "{name}", written by `nomad-driver-xc install`.
# It runs the nomad-driver-xc found in {root}.
import sys
sys.path.insert(0, {root!r})
from driver.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


class InstallError(Exception):
    pass


def launcher_text(python: str, root: str) -> str:
    return _TEMPLATE.format(python=python, root=root, name=DRIVER_NAME)


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
            f.write(launcher_text(python, root))
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
