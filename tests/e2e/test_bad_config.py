"""Bad task configs: each gives one clear error naming what to fix, and leaves nothing behind.

Schema-level mistakes (missing image, wrong type, unknown key) are caught by Nomad's own hcldec
validation against the driver's TaskConfigSchema, as the rig does it; the rest reach StartTask.
"""

from __future__ import annotations

import pytest

from tests.fixtures.nomad import Nomad
from tests.fixtures.registry import free_port

pytestmark = [pytest.mark.root, pytest.mark.slow]


def clean(nomad: Nomad, before: dict[str, list[str]]) -> None:
    after = nomad.leftovers()
    assert after == before, after


@pytest.mark.parametrize(
    ("body", "with_image", "stage", "needle"),
    [
        ('command = "/bin/sh"', False, "decode", '"image" is required'),
        ("args = 3", True, "decode", "args"),
        ('imag = "x"', True, "decode", 'No argument or block type is named "imag"'),
    ],
    ids=["missing-image", "wrong-type", "unknown-key"],
)
def test_schema_errors_are_caught_before_start(nomad: Nomad, body: str, with_image: bool,
                                               stage: str, needle: str) -> None:
    before = nomad.leftovers()
    reply = nomad.start_raw(body, with_image=with_image)
    assert not reply["ok"]
    assert reply["stage"] in ("decode", "parse", "validate"), reply
    assert needle in reply["error"], reply["error"]
    clean(nomad, before)


@pytest.mark.parametrize(
    ("body", "code", "needle"),
    [
        ('work_dir = "srv"', "InvalidArgument", "config.work_dir: 'srv' is not an absolute path"),
        ('volumes = ["/etc:/host-etc"]', "InvalidArgument",
         "config.volumes[0]: host path /etc is outside the allowed host paths"),
        ('mount {\n type = "tmpfs"\n target = "/alloc"\n}', "InvalidArgument",
         "config.mount[0]: /alloc is where Nomad's directory is mounted"),
        ('command = "/no/such/binary"', "FailedPrecondition", "/no/such/binary"),
    ],
    ids=["relative-work-dir", "volume-not-allowed", "tmpfs-over-alloc", "missing-binary"],
)
def test_driver_refusals_name_the_field(nomad: Nomad, body: str, code: str, needle: str) -> None:
    before = nomad.leftovers()
    reply = nomad.start_raw(body)
    assert not reply["ok"] and reply["stage"] == "rpc", reply
    assert reply["code"] == code
    assert needle in reply["message"], reply["message"]
    assert reply.get("recoverable") in (None, False)
    clean(nomad, before)


def test_an_image_that_does_not_exist_is_not_recoverable(nomad: Nomad) -> None:
    before = nomad.leftovers()
    reply = nomad.start_raw(image=f"{nomad.registry.host}/ci/no-such-image:1")
    assert not reply["ok"] and reply["code"] == "FailedPrecondition", reply
    assert "no-such-image" in reply["message"]
    assert reply["recoverable"] is False
    clean(nomad, before)


def test_a_registry_that_refuses_connections_is_recoverable(nomad: Nomad) -> None:
    before = nomad.leftovers()
    reply = nomad.start_raw(image=f"127.0.0.1:{free_port()}/ci/busybox:1", timeout=180)
    assert not reply["ok"] and reply["code"] == "FailedPrecondition", reply
    assert reply["recoverable"] is True  # Nomad's restart policy retries
    assert "127.0.0.1" in reply["message"]
    clean(nomad, before)


def test_a_symlink_planted_in_an_allowed_host_dir_cannot_redirect_a_mount(nomad: Nomad) -> None:
    import os

    planted = nomad.volume_root / "planted-evil"
    os.symlink("/etc", planted)
    try:
        before = nomad.leftovers()
        reply = nomad.start_raw(f'volumes = ["{planted}:/host"]')
        assert not reply["ok"] and reply["code"] == "InvalidArgument", reply
        assert "config.volumes[0]" in reply["message"]
        assert "resolves to /etc, outside the allowed host paths" in reply["message"]
        clean(nomad, before)
    finally:
        planted.unlink()
