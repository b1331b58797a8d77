"""Build the demo image from the host's busybox-static and push it to a registry.

    python scripts/demo_image.py 127.0.0.1:5000            # prints the pushed reference

The image (``xc-demo/busybox:1.0``) is the test suite's busybox base layer plus a layer with
``/etc/motd``; its default command prints the motd. The layers are built in code by
``tests/fixtures/images.py`` (the same builder the tests use), so the demo needs no Docker.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fixtures import images  # noqa: E402 - after the path set-up above

REPO, TAG = "xc-demo/busybox", "1.0"
MOTD = "Welcome to nomad-driver-xc: this file comes from an OCI image layer.\n"


class PlainRegistry:
    """What the image builder needs of a registry: a plain-HTTP one without auth."""

    def __init__(self, host: str) -> None:
        self.host = host

    @property
    def base(self) -> str:
        return f"http://{self.host}"

    def push_session(self) -> requests.Session:
        s = requests.Session()
        s.trust_env = False
        return s

    def push_headers(self, repo: str) -> dict[str, str]:
        return {}


def demo_built() -> images.Built:
    base = images.tar_bytes(images.busybox_base())
    app = images.tar_bytes([images.f("etc/motd", MOTD), images.d("srv")])
    return images.build_image([base, app], "gzip", cmd=["/bin/cat", "/etc/motd"])


def push_demo(host: str, repo: str = REPO, tag: str = TAG) -> str:
    """Push the demo image to the registry at ``host``; return its reference."""
    reg: Any = PlainRegistry(host)
    return images.push_image(reg, repo, tag, demo_built())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("registry", help="host:port of a plain-HTTP registry, e.g. 127.0.0.1:5000")
    p.add_argument("--repo", default=REPO)
    p.add_argument("--tag", default=TAG)
    a = p.parse_args(argv)
    print(push_demo(a.registry, a.repo, a.tag))
    return 0


if __name__ == "__main__":
    sys.exit(main())
