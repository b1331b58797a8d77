"""Encode a config the way Nomad does after hcldec, for tests that cannot run the Go rig.

hcldec gives every schema attribute a value (absent attributes null or their Default literal,
absent single blocks null, absent block lists empty), and go-cty writes objects as msgpack maps
with sorted keys. Only the shapes our schemas use are covered.
"""

from __future__ import annotations

from typing import Any

import msgpack

from driver.hclschema import Field, Schema, Section


def hcldec(schema: Schema, user: dict[str, Any] | None) -> dict[str, Any] | None:
    if user is None:
        return None
    out: dict[str, Any] = {}
    for item in schema:
        v = user.get(item.key)
        if isinstance(item, Section):
            if item.many:
                out[item.key] = [hcldec(item.fields, b) for b in (v or [])]
            else:
                out[item.key] = hcldec(item.fields, v)
        else:
            assert isinstance(item, Field)
            if v is None and item.default is not None and not item.block_attrs:
                v = item.default
            out[item.key] = v
    return dict(sorted(out.items()))


def encode(value: Any) -> bytes:
    raw: bytes = msgpack.packb(value, use_bin_type=True)
    return raw


def nomad_bytes(schema: Schema, user: dict[str, Any]) -> bytes:
    return encode(hcldec(schema, user))
