"""The hclspec trees we hand Nomad, and the pure proto <-> domain conversions."""

from __future__ import annotations

import json
from typing import Any

import pytest

from driver import convert
from driver import hclschema as hs
from driver.config import PLUGIN_SCHEMA, TASK_SCHEMA, Limits
from driver.events import TaskEvent
from driver.fingerprint import Fingerprint
from plugin_proto import hclspec_pb2

SCHEMAS = {"plugin": PLUGIN_SCHEMA, "task": TASK_SCHEMA}


def walk(node: hs.Node, under_default: bool = False) -> list[tuple[hs.Node, bool]]:
    out: list[tuple[hs.Node, bool]] = [(node, under_default)]
    if isinstance(node, hs.Object):
        for _, child in node.attributes:
            out += walk(child)
    elif isinstance(node, hs.Default):
        out += walk(node.primary, True) + walk(node.default, True)
    elif isinstance(node, hs.Block | hs.BlockList):
        out += walk(node.nested)
    return out


@pytest.mark.parametrize("name", SCHEMAS)
def test_every_attr_under_a_default_names_itself(name: str) -> None:
    nodes = walk(hs.spec(SCHEMAS[name]))
    under = [n for n, d in nodes if d and isinstance(n, hs.Attr)]
    assert under, "the schema has defaults"
    assert all(n.name for n in under)


@pytest.mark.parametrize("name", SCHEMAS)
def test_types_are_bare_cty_type_expressions(name: str) -> None:
    for node, _ in walk(hs.spec(SCHEMAS[name])):
        if isinstance(node, hs.Attr | hs.BlockAttrs):
            assert hs.valid_type(node.type), node
            assert '"' not in node.type


@pytest.mark.parametrize("name", SCHEMAS)
def test_literals_are_hcl_expressions(name: str) -> None:
    literals = [n for n, _ in walk(hs.spec(SCHEMAS[name])) if isinstance(n, hs.Literal)]
    assert literals
    for lit in literals:
        # Our literals are JSON-compatible HCL: quoted strings, numbers, bools, lists.
        json.loads(lit.value)


def test_hcl_literal_quotes_strings_and_renders_collections() -> None:
    assert hs.hcl_literal("3m") == '"3m"'
    assert hs.hcl_literal('a"b') == '"a\\"b"'
    assert hs.hcl_literal(False) == "false"
    assert hs.hcl_literal(0) == "0"
    assert hs.hcl_literal([]) == "[]"
    assert hs.hcl_literal(["a", 1]) == '["a", 1]'
    assert hs.hcl_literal({"k": True}) == '{"k" = true}'


def test_bad_type_expressions_are_caught_when_building_a_spec() -> None:
    for bad in ('"string"', "strin", "list(strin)", "list(string"):
        assert not hs.valid_type(bad)
        with pytest.raises(ValueError, match="bad type expression"):
            hs.spec((hs.Field("x", bad, "fix"),))


def test_task_spec_shape() -> None:
    root = convert.schema_to_proto(TASK_SCHEMA)
    attrs = root.object.attributes
    assert attrs["image"].Attr == hclspec_pb2.Attr(name="image", type="string", required=True)
    assert attrs["mount"].WhichOneof("block") == "block_list"
    assert attrs["mount"].block_list.name == "mount"
    assert attrs["jail_params"].block_attrs.type == "string"
    assert attrs["auth"].block_value.nested.object.attributes["password"].Attr.type == "string"
    wd = attrs["image_pull_timeout"].default
    assert wd.primary.Attr.name == "image_pull_timeout"
    assert wd.default.literal.value == '"5m"'


@pytest.mark.parametrize("name", SCHEMAS)
def test_spec_proto_round_trip(name: str) -> None:
    node = hs.spec(SCHEMAS[name])
    msg = convert.spec_to_proto(node)
    again = hclspec_pb2.Spec.FromString(msg.SerializeToString())
    assert convert.spec_from_proto(again) == ordered(node)


def ordered(node: hs.Node) -> hs.Node:
    """The same tree with object attributes in key order (protobuf maps have no order)."""
    if isinstance(node, hs.Object):
        return hs.Object(tuple(sorted((k, ordered(v)) for k, v in node.attributes)))
    if isinstance(node, hs.Default):
        return hs.Default(ordered(node.primary), ordered(node.default))
    if isinstance(node, hs.Block):
        return hs.Block(node.name, ordered(node.nested), node.required)
    if isinstance(node, hs.BlockList):
        return hs.BlockList(node.name, ordered(node.nested), node.min_items, node.max_items)
    return node


def test_fingerprint_round_trip_and_empty_attributes_dropped() -> None:
    fp = Fingerprint("unhealthy", "no pool", {"driver.xc.version": "0.1.0", "driver.xc.x": ""})
    msg = convert.fingerprint_to_proto(fp)
    assert "driver.xc.x" not in msg.attributes  # "" would delete the node attribute
    assert convert.fingerprint_from_proto(msg) == Fingerprint(
        "unhealthy", "no pool", {"driver.xc.version": "0.1.0"})


@pytest.mark.parametrize("value", ["s", 3, 2.5, True])
def test_attribute_round_trip(value: Any) -> None:
    back = convert.attribute_from_proto(convert.attribute_to_proto(value))
    assert back == value and type(back) is type(value)


def test_capabilities_round_trip_and_values() -> None:
    caps = convert.Capabilities()
    msg = convert.capabilities_to_proto(caps)
    assert msg.send_signals and msg.exec
    assert msg.fs_isolation == msg.IMAGE
    assert convert.capabilities_from_proto(msg) == caps
    other = convert.Capabilities(fs_isolation="chroot", network_isolation_modes=("host", "group"),
                                 mount_configs="none")
    assert convert.capabilities_from_proto(convert.capabilities_to_proto(other)) == other


def test_event_to_proto() -> None:
    ev = TaskEvent("a/t/1", "a", "t", "Downloading image", {"image": "alpine"})
    msg = convert.event_to_proto(ev)
    assert (msg.alloc_id, msg.task_name, msg.message) == ("a", "t", "Downloading image")
    assert dict(msg.annotations) == {"image": "alpine"}
    assert msg.timestamp.ToDatetime().replace(tzinfo=ev.timestamp.tzinfo) == ev.timestamp.replace(
        microsecond=ev.timestamp.microsecond)


def test_nomad_info_round_trip() -> None:
    for info in (convert.NomadInfo(14000, 14512, 4000, 2), convert.NomadInfo(1, 2, 4001, 2),
                 convert.NomadInfo(0, 0, 0, 0)):
        assert convert.nomad_info_from_proto(convert.nomad_info_to_proto(info)) == info


def test_limits_under_a_maximum() -> None:
    assert Limits(0, 100).under(Limits(50, 0)) == Limits(50, 100)
    assert Limits(10, 0).under(Limits(0, 0)) == Limits(10, 0)
