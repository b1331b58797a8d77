"""Registry faults, auth flows, redirects and platform selection against real registries."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures import images as im
from tests.fixtures.registry import PASSWORD, USER, Registry, free_port
from tests.zfsimage.faultproxy import FaultProxy
from zfsimage import RegistryAuth, zfs
from zfsimage.errors import (
    AuthError,
    BadReference,
    DigestMismatch,
    ImageNotFound,
    RegistryUnavailable,
)


@pytest.fixture
def proxy(registry: Registry) -> Iterator[FaultProxy]:
    p = FaultProxy(registry.base)
    yield p
    p.stop()


def _committed_layers(store) -> list[str]:
    raw = zfs.get([f"{store.ds}/layers"], ["type"], recursive=True)
    return sorted(n for n in raw if n != f"{store.ds}/layers")


def _push(registry: Registry, repo: str) -> tuple[str, im.Built]:
    built = im.build_image([im.tar_bytes(im.busybox_base()),
                            im.tar_bytes([im.f("etc/hello", repo)])])
    im.push_image(registry, repo, "1", built)
    return repo, built


def test_wrong_blob_digest_then_retry(make_store, registry, proxy) -> None:
    repo, built = _push(registry, "fault/digest")
    layer2 = json.loads(built.manifest)["layers"][1]["digest"]
    proxy.corrupt_blob = layer2
    store = make_store(insecure=[proxy.host])
    with pytest.raises(DigestMismatch) as ei:
        store.ensure_image(f"{proxy.host}/{repo}:1")
    assert layer2 in str(ei.value)
    # layer 1 committed (dataset + @layer), layer 2 left no dataset at all
    names = _committed_layers(store)
    assert len([n for n in names if "@" not in n]) == 1
    assert len([n for n in names if n.endswith("@layer")]) == 1
    assert store.list_images() == []
    assert list((store.mount_root / "spool").iterdir()) == []
    proxy.corrupt_blob = None
    img = store.ensure_image(f"{proxy.host}/{repo}:1")
    assert (store.clone_rootfs(img, "xctest-dg") / "etc/hello").read_text() == repo
    store.destroy_rootfs("xctest-dg")


def test_connection_cut_mid_blob_resumes(make_store, registry, proxy) -> None:
    repo, built = _push(registry, "fault/cut")
    proxy.cut_match = json.loads(built.manifest)["layers"][0]["digest"]
    proxy.cut_blobs = 1
    store = make_store(insecure=[proxy.host])
    store.ensure_image(f"{proxy.host}/{repo}:1")
    assert any(s["range"].startswith("bytes=") for s in proxy.seen)


def test_connection_cut_every_time_is_transient_and_clean(make_store, registry, proxy) -> None:
    repo, _ = _push(registry, "fault/cutall")
    proxy.cut_blobs = 1000
    store = make_store(insecure=[proxy.host])
    with pytest.raises(RegistryUnavailable) as ei:
        store.ensure_image(f"{proxy.host}/{repo}:1")
    assert ei.value.transient
    assert _committed_layers(store) == []
    assert list((store.mount_root / "spool").iterdir()) == []
    proxy.cut_blobs = 0
    store.ensure_image(f"{proxy.host}/{repo}:1")


def test_500_then_success(make_store, registry, proxy) -> None:
    repo, _ = _push(registry, "fault/five")
    proxy.fail_5xx = 2
    store = make_store(insecure=[proxy.host])
    img = store.ensure_image(f"{proxy.host}/{repo}:1")
    assert img.chain_id is not None


def test_registry_down_is_transient(make_store) -> None:
    host = f"127.0.0.1:{free_port()}"
    store = make_store(insecure=[host])
    with pytest.raises(RegistryUnavailable) as ei:
        store.ensure_image(f"{host}/nothing/here:1")
    assert ei.value.transient and host in str(ei.value)


def test_not_found_and_bad_reference(make_store, registry) -> None:
    store = make_store(insecure=[registry.host])
    with pytest.raises(ImageNotFound):
        store.ensure_image(f"{registry.host}/no/such:tag")
    with pytest.raises(BadReference) as ei:
        store.ensure_image("Bad/Upper:tag")
    assert "Bad/Upper" in str(ei.value)


def test_plain_http_only_when_allowed(make_store, registry) -> None:
    repo, _ = _push(registry, "fault/https")
    store = make_store()   # registry not in insecure_registries: https is used and fails
    with pytest.raises(RegistryUnavailable):
        store.ensure_image(f"{registry.host}/{repo}:1")


def test_basic_auth(make_store, basic_registry) -> None:
    repo, _ = _push(basic_registry, "auth/basic")
    ref = f"{basic_registry.host}/{repo}:1"
    store = make_store(insecure=[basic_registry.host])
    with pytest.raises(AuthError) as ei:
        store.ensure_image(ref)
    assert not ei.value.transient
    with pytest.raises(AuthError):
        store.ensure_image(ref, auth=RegistryAuth(USER, "wrong"))
    img = store.ensure_image(ref, auth=RegistryAuth(USER, PASSWORD))
    assert img.chain_id


def test_plugin_wide_credential_helper(make_store, basic_registry, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator's default helper (docker driver's auth { helper }) serves any registry."""
    import stat

    repo, _ = _push(basic_registry, "auth/helper")
    ref = f"{basic_registry.host}/{repo}:1"
    asked = tmp_path / "asked"
    helper = tmp_path / "docker-credential-xctest-ops"
    helper.write_text(f'#!/bin/sh\nread host\necho "$host" >> {asked}\n'
                      f'echo \'{{"Username":"{USER}","Secret":"{PASSWORD}"}}\'\n')
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    store = make_store(insecure=[basic_registry.host], credential_helper="xctest-ops")
    assert store.ensure_image(ref).chain_id
    assert basic_registry.host in asked.read_text().split()
    missing = make_store(insecure=[basic_registry.host], credential_helper="xctest-absent")
    with pytest.raises(AuthError) as ei:
        missing.ensure_image(ref)
    assert "docker-credential-xctest-absent is not installed" in str(ei.value)


def test_bearer_token_anonymous_and_docker_config(make_store, token_registry,
                                                  tmp_path: Path) -> None:
    repo, _ = _push(token_registry, "auth/token")
    ref = f"{token_registry.host}/{repo}:1"
    store = make_store(insecure=[token_registry.host])
    assert store.ensure_image(ref).chain_id          # anonymous pull token
    assert token_registry.issuer is not None
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"auths": {token_registry.host: {
        "auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}}}))
    token_registry.issuer.requests.clear()
    store2 = make_store(insecure=[token_registry.host], docker_config=cfg)
    assert store2.ensure_image(ref).chain_id
    assert any(r["authorization"].startswith("Basic ") for r in token_registry.issuer.requests)
    cfg.write_text(json.dumps({"auths": {token_registry.host: {
        "auth": base64.b64encode(f"{USER}:bad".encode()).decode()}}}))
    store3 = make_store(insecure=[token_registry.host], docker_config=cfg)
    with pytest.raises(AuthError):
        store3.ensure_image(ref)


def test_redirect_to_other_host_drops_authorization(make_store, basic_registry) -> None:
    repo, _ = _push(basic_registry, "auth/redirect")
    front = FaultProxy(basic_registry.base)
    # the CDN: another hostname ("localhost" vs "127.0.0.1"); it records what it receives
    cdn = FaultProxy(basic_registry.base, host="localhost", upstream_auth=(USER, PASSWORD))
    try:
        front.redirect_blobs_to = f"http://localhost:{cdn.port}"
        store = make_store(insecure=[front.host])
        img = store.ensure_image(f"{front.host}/{repo}:1", auth=RegistryAuth(USER, PASSWORD))
        assert img.chain_id
        assert cdn.seen, "blob requests were not redirected"
        assert all(s["authorization"] == "" for s in cdn.seen)
        assert any(s["authorization"].startswith("Basic") for s in front.seen)
    finally:
        front.stop()
        cdn.stop()


def test_platform_selection_from_index(make_store, registry) -> None:
    linux = im.build_image([im.tar_bytes([im.f("os", "linux")])])
    bsd = im.build_image([im.tar_bytes([im.f("os", "freebsd")])], os_="freebsd")
    attest = {"mediaType": im.MT_MANIFEST, "digest": linux.digest, "size": len(linux.manifest),
              "platform": {"os": "unknown", "architecture": "unknown"}}
    ref = im.push_index(registry, "plat/multi", "1",
                        [(linux, "linux", "amd64"), (bsd, "freebsd", "amd64")], [attest])
    store = make_store(insecure=[registry.host])
    a = store.ensure_image(ref, platform="linux/amd64")
    b = store.ensure_image(ref, platform="freebsd/amd64")
    assert a.manifest_digest == linux.digest and b.manifest_digest == bsd.digest
    assert b.config.os == "freebsd"
    root = store.clone_rootfs(b, "xctest-bsd")
    assert (root / "os").read_text() == "freebsd"
    store.destroy_rootfs("xctest-bsd")
    with pytest.raises(ImageNotFound) as ei:
        store.ensure_image(ref, platform="linux/s390x")
    assert "freebsd/amd64" in str(ei.value) and "unknown" not in str(ei.value)


def test_docker_v2_and_zstd_and_digest_refs(make_store, registry) -> None:
    v2 = im.build_image([im.tar_bytes(im.busybox_base())], docker_v2=True)
    ref = im.push_image(registry, "fmt/v2", "1", v2)
    z = im.build_image([im.tar_bytes([im.f("z", "zstd")])], "zstd")
    zref = im.push_image(registry, "fmt/zstd", "1", z)
    store = make_store(insecure=[registry.host])
    assert store.ensure_image(ref).manifest_digest == v2.digest
    by_digest = f"{registry.host}/fmt/zstd@{z.digest}"
    img = store.ensure_image(by_digest)
    assert img.manifest_digest == z.digest
    assert store.ensure_image(zref).manifest_digest == z.digest
    with pytest.raises(ImageNotFound):
        store.ensure_image(f"{registry.host}/fmt/zstd@sha256:{'1' * 64}")
