"""Pure functions: references, digests/ChainIDs, platforms, challenges, credentials, manifests."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from zfsimage.auth import RegistryAuth, from_docker_config, parse_challenge
from zfsimage.digest import chain_ids
from zfsimage.errors import AuthError, BadReference, ImageNotFound, InvalidName
from zfsimage.manifest import (
    DOCKER_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    ManifestError,
    media_type_of,
    parse_config,
    parse_manifest,
    select_platform,
)
from zfsimage.platform import Platform
from zfsimage.reference import check_digest, parse_reference

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(("text", "expected"), [
    ("alpine", "docker.io/library/alpine:latest"),
    ("alpine:3.20", "docker.io/library/alpine:3.20"),
    ("library/alpine", "docker.io/library/alpine:latest"),
    ("docker.io/alpine", "docker.io/library/alpine:latest"),
    ("index.docker.io/foo/bar:1", "docker.io/foo/bar:1"),
    ("freebsd/freebsd-runtime:15.1", "docker.io/freebsd/freebsd-runtime:15.1"),
    ("ghcr.io/freebsd/freebsd-notoolchain:14.3", "ghcr.io/freebsd/freebsd-notoolchain:14.3"),
    ("localhost/app", "localhost/app:latest"),
    ("127.0.0.1:5000/ci/busybox:v2s2", "127.0.0.1:5000/ci/busybox:v2s2"),
    (f"alpine@{D}", f"docker.io/library/alpine@{D}"),
    (f"reg.example.org:443/a/b:1.4@{D}", f"reg.example.org:443/a/b:1.4@{D}"),
])
def test_reference_normalisation(text: str, expected: str) -> None:
    assert str(parse_reference(text)) == expected


def test_reference_parts() -> None:
    r = parse_reference("alpine")
    assert (r.registry, r.api_host, r.repository, r.tag, r.digest) == \
        ("docker.io", "registry-1.docker.io", "library/alpine", "latest", None)
    r = parse_reference(f"127.0.0.1:5000/x@{D}")
    assert r.tag is None and r.target == D and r.api_host == "127.0.0.1:5000"


@pytest.mark.parametrize("bad", ["", "  ", "Alpine", "a b", "alpine:", "alpine:-x",
                                 "alpine@sha256:abc", "alpine@sha256:" + "A" * 64,
                                 "alpine@sha256:../../x", "a//b", "-x", "x" * 300])
def test_reference_rejects(bad: str) -> None:
    with pytest.raises(BadReference) as ei:
        parse_reference(bad)
    assert "\n" not in str(ei.value)


@pytest.mark.parametrize("bad", ["sha256:../../x", "sha256:" + "A" * 64, "md5:abc", "sha256:"])
def test_digest_validation(bad: str) -> None:
    with pytest.raises(InvalidName):
        check_digest(bad)


def test_chain_id_vectors() -> None:
    # inputs from image-spec identity/chainid_test.go
    assert chain_ids(["sha256:a"]) == ["sha256:a"]
    assert chain_ids(["sha256:a", "sha256:b"])[1] == \
        "sha256:970a948bffa8de94d6e22d747ba8c95030e6e546909f98f54e99a13005e173a8"
    assert chain_ids(["sha256:a", "sha256:b", "sha256:c"])[2] == \
        "sha256:dee159b33409cefa3f6eda71539f006014283e9d9130c18a1dea7bd8a33c9b1b"


def _desc(os_: str, arch: str, variant: str | None = None, mt: str = OCI_MANIFEST) -> Descriptor:
    return Descriptor(mt, "sha256:" + str(abs(hash((os_, arch, variant))) % 10).zfill(64), 1,
                      (os_, arch, variant))


def test_platform_selection() -> None:
    entries = [_desc("unknown", "unknown"), _desc("linux", "amd64"), _desc("freebsd", "amd64"),
               _desc("linux", "arm64", "v8"), Descriptor("application/x-foo", D, 1,
                                                         ("freebsd", "arm64", None)),
               _desc("freebsd", "arm64")]
    assert select_platform(entries, Platform.parse("freebsd/amd64")) is entries[2]
    assert select_platform(entries, Platform.parse("linux/aarch64")) is entries[3]
    assert select_platform(entries, Platform.parse("freebsd/arm64")) is entries[5]
    with pytest.raises(ImageNotFound) as ei:
        select_platform(entries, Platform.parse("linux/riscv64"))
    assert "linux/amd64" in str(ei.value) and "unknown/unknown" not in str(ei.value)
    with pytest.raises(ImageNotFound):
        select_platform(entries, Platform.parse("linux/arm64/v7"))
    assert Platform.parse("Linux/X86_64") == Platform("linux", "amd64")
    with pytest.raises(Exception, match="os/architecture"):
        Platform.parse("linux")


def test_challenge_parsing() -> None:
    c = parse_challenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
                        'scope="repository:samalba/my-app:pull,push"')
    assert c is not None and c.scheme == "bearer"
    assert c.params == {"realm": "https://auth.docker.io/token",
                        "service": "registry.docker.io",
                        "scope": "repository:samalba/my-app:pull,push"}
    b = parse_challenge('Basic realm="test-realm"')
    assert b is not None and b.scheme == "basic" and b.params["realm"] == "test-realm"


def test_docker_config_auths_and_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({
        "auths": {"reg.example.org": {"auth": base64.b64encode(b"u:p:w").decode()},
                  "https://index.docker.io/v1/": {"username": "hub", "password": "pw"}},
        "credHelpers": {"helped.example.org": "xctest"}}))
    assert from_docker_config(cfg, "reg.example.org") == RegistryAuth("u", "p:w")
    assert from_docker_config(cfg, "docker.io") == RegistryAuth("hub", "pw")
    assert from_docker_config(cfg, "other.example.org") is None
    assert from_docker_config(tmp_path / "missing.json", "x") is None
    helper = tmp_path / "docker-credential-xctest"
    helper.write_text('#!/bin/sh\nread host\n'
                      'echo "{\\"Username\\":\\"h-$host\\",\\"Secret\\":\\"s\\"}"\n')
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert from_docker_config(cfg, "helped.example.org") == \
        RegistryAuth("h-helped.example.org", "s")
    cfg.write_text("{not json")
    with pytest.raises(AuthError):
        from_docker_config(cfg, "x")
    assert "p:w" not in repr(RegistryAuth("u", "p:w"))


def test_manifest_parsing() -> None:
    body = json.dumps({"schemaVersion": 2, "config": {"mediaType": "x", "digest": D, "size": 2},
                       "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd",
                                   "digest": D, "size": 5}]}).encode()
    assert media_type_of(body, "application/vnd.oci.image.manifest.v1+json; charset=x") == \
        OCI_MANIFEST
    m = parse_manifest(body, OCI_MANIFEST)
    assert m.layers[0].compression == "zstd"
    typed = json.dumps({"mediaType": OCI_INDEX, "manifests": []}).encode()
    with pytest.raises(ManifestError):
        media_type_of(typed, DOCKER_LIST)
    bad_layer = body.replace(b"tar+zstd", b"tar+lz4")
    with pytest.raises(ManifestError, match="unsupported media type"):
        parse_manifest(bad_layer, OCI_MANIFEST)
    with pytest.raises(ManifestError, match="schema 1"):
        parse_manifest(body, "application/vnd.docker.distribution.manifest.v1+prettyjws")
    evil = body.replace(D.encode(), b"sha256:../../etc/passwd", 1)
    with pytest.raises(InvalidName):
        parse_manifest(evil, OCI_MANIFEST)


def test_config_keys_case_insensitive() -> None:
    # FreeBSD's make-oci-image.sh writes a lowercase "cmd"
    cfg = parse_config(json.dumps({"architecture": "amd64", "os": "freebsd",
                                   "config": {"cmd": ["/bin/sh"], "env": ["A=1"]},
                                   "rootfs": {"type": "layers", "diff_ids": [D]}}).encode())
    assert cfg.cmd == ("/bin/sh",) and cfg.env == ("A=1",) and cfg.os == "freebsd"
    assert cfg.diff_ids == (D,)
