"""go-cty msgpack decoding: the encodings Nomad (and go-cty in general) produce."""

from __future__ import annotations

from decimal import Decimal

import msgpack
import pytest

from driver import cty

# The reference's worked example: bytes of the value Nomad sends for a small task config.
WORKED = bytes.fromhex(
    "85a46172677392a22d63a76563686f206869a5696d616765ac62757379626f783a312e3336a76c6f6767696e67"
    "c0a56d6f756e749183a8726561646f6e6c79c2a6736f75726365a92f7372762f64617461a6746172676574a52f"
    "64617461a8776f726b5f646972a12f"
)


def test_worked_example_decodes_to_the_documented_value() -> None:
    assert cty.decode(WORKED) == {
        "args": ["-c", "echo hi"], "image": "busybox:1.36", "logging": None,
        "mount": [{"readonly": False, "source": "/srv/data", "target": "/data"}], "work_dir": "/",
    }


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"\x05", 5),                                   # positive fixint
        (b"\xcc\xc8", 200),                             # uint8: compact ints may be unsigned
        (b"\xd1\xfc\x18", -1000),                       # int16
        (b"\xcf" + (2**64 - 1).to_bytes(8, "big"), 2**64 - 1),
        (b"\xcb" + bytes.fromhex("3ff8000000000000"), 1.5),   # float64, not integral
        (b"\xca" + bytes.fromhex("3fc00000"), 1.5),           # float32 (go-cty < 1.14.3)
        (b"\xa3" + b"0.1", "0.1"),                      # not exact in float64: decimal text
        (b"\xc0", None),
        (b"\xc3", True),
        (b"\xc2", False),
    ],
)
def test_scalars(raw: bytes, expected: object) -> None:
    assert cty.decode(raw) == expected


def test_number_accepts_every_cty_number_encoding() -> None:
    assert cty.number(5) == 5
    assert cty.number(1.5) == 1.5
    assert cty.number("0.1") == Decimal("0.1")
    assert cty.number("123456789012345678901234") == Decimal("123456789012345678901234")
    assert cty.number("abc") is None
    assert cty.number("NaN") is None
    assert cty.number(True) is None
    assert cty.number(None) is None


def test_unknown_values_become_the_sentinel() -> None:
    assert cty.decode(b"\xd4\x00\x00") is cty.UNKNOWN
    # ext 0x0c carries a refinements map
    refined = msgpack.packb(msgpack.ExtType(0x0C, msgpack.packb({1: True})))
    assert cty.decode(refined) is cty.UNKNOWN
    assert cty.decode(msgpack.packb({"a": msgpack.ExtType(0, b"\x00")})) == {"a": cty.UNKNOWN}


def test_other_extension_types_are_rejected() -> None:
    with pytest.raises(cty.CtyDecodeError, match="extension type 5"):
        cty.decode(msgpack.packb(msgpack.ExtType(5, b"x")))


def test_dynamic_values_unwrap_to_their_value() -> None:
    wrapped = msgpack.packb([b'"string"', "hello"], use_bin_type=True)
    assert cty.decode(wrapped) == "hello"
    nested = msgpack.packb({"x": [b'["list","number"]', [1, 2]]}, use_bin_type=True)
    assert cty.decode(nested) == {"x": [1, 2]}


def test_a_two_element_list_of_strings_is_not_a_dynamic_value() -> None:
    assert cty.decode(msgpack.packb(["string", "hello"])) == ["string", "hello"]


def test_bin_outside_a_dynamic_wrapper_is_rejected() -> None:
    with pytest.raises(cty.CtyDecodeError, match="bin"):
        cty.decode(msgpack.packb({"a": b"raw"}, use_bin_type=True))


def test_empty_bytes_mean_no_config() -> None:
    assert cty.decode(b"") is None


def test_garbage_is_a_decode_error() -> None:
    with pytest.raises(cty.CtyDecodeError):
        cty.decode(b"\xc1")  # never used in msgpack
