"""A task's image pull: progress as task events, ``image_pull_timeout``, ``auth_soft_fail``.

The pull itself runs on a worker thread (``zfsimage`` is blocking); progress is reported from
that thread and published on the event loop, at most one progress event per PROGRESS_EVERY_S.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import zfsimage
from driver.config import TaskConfig
from driver.errors import StartFailed
from driver.ports import Images
from zfsimage.errors import AuthError, ImageError

PROGRESS_EVERY_S = 2.0  # at most one pull-progress event per task this often

Publish = Callable[[str, dict[str, str]], None]  # (message, annotations), on the event loop
RunBlocking = Callable[[Callable[[], zfsimage.Image]], Awaitable[zfsimage.Image]]


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


def progress_reporter(image: str, publish: Publish) -> Callable[[zfsimage.PullProgress], None]:
    """A progress callback for a pool thread that publishes on the running loop."""
    loop = asyncio.get_running_loop()
    reported = {"started": False, "last": 0.0}

    def progress(p: zfsimage.PullProgress) -> None:
        now = time.monotonic()
        if not reported["started"]:
            reported["started"] = True
            reported["last"] = now
            loop.call_soon_threadsafe(publish, "Downloading image", {"image": image})
            return
        if p.phase == "done":
            msg = f"Downloaded image {image}"
        elif now - reported["last"] >= PROGRESS_EVERY_S and p.phase in ("download", "extract"):
            msg = (f"Image {image} pull progress: {_mib(p.bytes_done)} of "
                   f"{_mib(p.bytes_total)}, layer {p.layer}/{p.layers_total}")
        else:
            return
        reported["last"] = now
        loop.call_soon_threadsafe(publish, msg, {
            "image": image, "phase": p.phase, "bytes_done": str(p.bytes_done),
            "bytes_total": str(p.bytes_total), "layer": str(p.layer),
            "layers_total": str(p.layers_total)})

    return progress


async def pull_image(images: Callable[[], Images], cfg: TaskConfig, default_platform: str,
                     publish: Publish, run: RunBlocking) -> zfsimage.Image:
    """The task's image, pulled if missing; StartFailed (recoverable when transient)."""
    progress = progress_reporter(cfg.image, publish)

    def pull() -> zfsimage.Image:
        store = images()
        auth = (zfsimage.RegistryAuth(cfg.auth.username, cfg.auth.password)
                if cfg.auth is not None else None)
        platform = cfg.platform or default_platform or None
        try:
            return store.ensure_image(cfg.image, auth=auth, platform=platform,
                                      progress=progress, revalidate=cfg.force_pull)
        except AuthError:
            if not (cfg.auth_soft_fail and auth is not None):
                raise
            return store.ensure_image(cfg.image, auth=None, platform=platform,
                                      progress=progress, revalidate=cfg.force_pull)

    timeout = cfg.image_pull_timeout.total_seconds()
    try:
        # The pull keeps going after a timeout (threads cannot be cancelled); the store dedups,
        # so the restart that follows joins it.
        return await asyncio.wait_for(asyncio.shield(run(pull)), timeout)
    except TimeoutError:
        raise StartFailed(f"pulling image {cfg.image} took longer than image_pull_timeout "
                          f"({timeout:g}s); raise image_pull_timeout in the task config",
                          recoverable=True) from None
    except ImageError as exc:
        raise StartFailed(f"image {cfg.image}: {exc}", recoverable=exc.transient) from exc
