"""Decoding go-cty's msgpack encoding (what Nomad sends as msgpack_config/msgpack_driver_config).

cty objects arrive as maps with every schema attribute present (absent ones as nil), lists, sets
and tuples as arrays, numbers as int, float64 or a decimal string when neither is exact, unknown
values as extension type 0 (or 12 with refinements) and values of dynamic type as a two-element
array ``[type JSON as bin, value]``. cty never encodes a string as msgpack bin, so a two-element
array starting with bytes is always the dynamic wrapper.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any

import msgpack


class _Unknown:
    """A value not known yet (never sent by Nomad, which refuses to encode unknowns)."""

    _instance: _Unknown | None = None

    def __new__(cls) -> _Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()
UNKNOWN_EXT_CODES = (0, 0x0C)


class CtyDecodeError(ValueError):
    """The bytes are not a go-cty msgpack value."""


def _ext_hook(code: int, data: bytes) -> Any:
    if code in UNKNOWN_EXT_CODES:
        return UNKNOWN
    raise CtyDecodeError(f"unexpected msgpack extension type {code} in a cty value")


def _normalise(value: Any) -> Any:
    if isinstance(value, list):
        if len(value) == 2 and isinstance(value[0], bytes):
            try:
                json.loads(value[0])
            except ValueError as exc:
                raise CtyDecodeError("dynamic value with an unreadable type description") from exc
            return _normalise(value[1])
        return [_normalise(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, bytes):
        raise CtyDecodeError("msgpack bin outside a dynamic value; cty strings are msgpack str")
    return value


def decode(raw: bytes) -> Any:
    """Plain Python values: dict, list, str, bool, int, float, str-for-big-numbers, None, UNKNOWN.

    Empty bytes (a plugin without a schema) decode to None.
    """
    if not raw:
        return None
    try:
        value = msgpack.unpackb(raw, raw=False, ext_hook=_ext_hook, strict_map_key=False)
    except CtyDecodeError:
        raise
    except Exception as exc:
        raise CtyDecodeError(f"not a msgpack value: {exc}") from exc
    return _normalise(value)


def number(value: Any) -> int | float | Decimal | None:
    """A cty number as Python: ints stay int, exact floats stay float, decimal text -> Decimal.

    Returns None when ``value`` is not a number in any cty encoding.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            d = Decimal(value)
        except InvalidOperation:
            return None
        return d if d.is_finite() else None
    return None
