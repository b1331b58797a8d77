"""``nomad-driver-xc``: the plugin Nomad starts, plus a few commands for operators.

    nomad-driver-xc                         run by Nomad (refuses to run by hand)
    nomad-driver-xc install --plugin-dir D  write D/xc for Nomad's plugin_dir
    nomad-driver-xc image ...               manage the image store (zfsimage)
    nomad-driver-xc version

Imports stay lazy: Nomad starts the plugin up to three times at agent start and waits for the
handshake each time.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from driver import goplugin

COOKIE_KEY = "NOMAD_PLUGIN_MAGIC_COOKIE"
COOKIE_VALUE = "e4327c2e01eabfd75a8a67adb114fb34a757d57eee7728d857a8cec6e91a7255"
APP_PROTOCOL_VERSION = 2

NOT_A_PLUGIN = (
    "This is the xc task driver plugin for HashiCorp Nomad and Nomad starts it itself: run "
    "`nomad-driver-xc install --plugin-dir DIR` for Nomad's plugin_dir, add a plugin \"xc\" {} "
    "block to the agent config, and see `nomad-driver-xc --help` for the other commands."
)

USAGE = """usage: nomad-driver-xc [install --plugin-dir DIR | image ... | version | --help]

  install --plugin-dir DIR   write the executable DIR/xc that Nomad starts (plugin "xc" {})
  image ...                  pull, list and remove images in the ZFS image store
  version                    print the plugin version
Without arguments the program is the plugin itself and must be started by Nomad.
"""


def _services() -> goplugin.SyncRegister:
    # The driver's services, with the image store, runtimes and config schema behind them:
    # imported at the first RPC, after the handshake line.
    from driver import servicer

    return servicer.register


def _serve() -> int:
    from driver import goplugin, hclog

    hclog.setup("xc")
    hs = goplugin.Handshake(COOKIE_KEY, COOKIE_VALUE, APP_PROTOCOL_VERSION)
    return goplugin.serve(hs, goplugin.lazily(_services), not_a_plugin_message=NOT_A_PLUGIN)


def _install(args: list[str]) -> int:
    import argparse
    from pathlib import Path

    from driver.install import InstallError, install

    parser = argparse.ArgumentParser(prog="nomad-driver-xc install",
                                     description="write the executable DIR/xc for Nomad")
    parser.add_argument("--plugin-dir", required=True, type=Path,
                        help="Nomad's plugin_dir (absolute; created if missing)")
    opts = parser.parse_args(args)
    try:
        target = install(opts.plugin_dir)
    except InstallError as exc:
        print(f"nomad-driver-xc install: {exc}", file=sys.stderr)
        return 1
    print(f"installed {target}; add `plugin \"xc\" {{ config {{ ... }} }}` to the Nomad agent "
          f"config and set plugin_dir = \"{target.parent}\"")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if os.environ.get(COOKIE_KEY) is not None:
        # Started by a go-plugin host: serve, whatever `args` the plugin block passes.
        return _serve()
    if not args:
        # Run by hand: say so before importing anything heavy.
        print(NOT_A_PLUGIN, file=sys.stderr)
        return 1
    cmd, rest = args[0], args[1:]
    if cmd in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    if cmd in ("version", "--version"):
        from driver.version import version

        print(f"nomad-driver-xc {version()}")
        return 0
    if cmd == "install":
        return _install(rest)
    if cmd == "image":
        from zfsimage import cli  # type: ignore[attr-defined,unused-ignore]

        code: int = cli.main(rest)
        return code
    print(f"nomad-driver-xc: unknown command {cmd!r}\n{USAGE}", file=sys.stderr, end="")
    return 2


if __name__ == "__main__":
    sys.exit(main())
