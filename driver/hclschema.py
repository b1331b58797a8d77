"""HCL schemas as plain data, and reading decoded cty values against them.

A schema is a tuple of ``Field`` (an attribute) and ``Section`` (a nested block, one or many).
From one schema come both the hclspec tree Nomad needs (``spec`` here; ``driver.convert`` turns
it into protobuf) and the type-checked reading of what Nomad sends back (``read``). Defaults are
Python values rendered as HCL literals, so the literal Nomad applies and the default the plugin
applies when a whole block is absent are the same value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Union

from driver import cty

# ---- hclspec nodes (mirror plugins/shared/hclspec, without protobuf) ----


@dataclass(frozen=True)
class Attr:
    name: str
    type: str
    required: bool = False


@dataclass(frozen=True)
class Literal:
    value: str


@dataclass(frozen=True)
class Default:
    primary: Node
    default: Node


@dataclass(frozen=True)
class Block:
    name: str
    nested: Node
    required: bool = False


@dataclass(frozen=True)
class BlockList:
    name: str
    nested: Node
    min_items: int = 0
    max_items: int = 0


@dataclass(frozen=True)
class BlockAttrs:
    name: str
    type: str
    required: bool = False


@dataclass(frozen=True)
class Object:
    attributes: tuple[tuple[str, Node], ...]


Node = Union[Attr, Literal, Default, Block, BlockList, BlockAttrs, Object]  # noqa: UP007

# ---- schema fields ----


@dataclass(frozen=True)
class Field:
    """One attribute. ``type`` is a cty type expression; ``hint`` says how to write it right."""

    key: str
    type: str
    hint: str
    required: bool = False
    default: Any = None
    block_attrs: bool = False  # a map(type) written as `key { a = "b" }` or `key = { a = "b" }`


@dataclass(frozen=True)
class Section:
    """A nested block: at most one (``many=False``) or a list of them."""

    key: str
    fields: tuple[Field | Section, ...]
    many: bool = False


Schema = tuple[Field | Section, ...]

_TYPE_RE = re.compile(r"^(string|number|bool|any|(list|set|map)\((?P<inner>.+)\))$")


def valid_type(expr: str) -> bool:
    """Bare cty type expressions of the kinds our schemas use (no quotes, no objects)."""
    m = _TYPE_RE.match(expr)
    if not m:
        return False
    inner = m.group("inner")
    return inner is None or valid_type(inner)


def hcl_literal(value: Any) -> str:
    """An HCL expression for a Python default: strings quoted, lists and maps as HCL."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid HCL template escapes
    if isinstance(value, list | tuple):
        return "[" + ", ".join(hcl_literal(v) for v in value) + "]"
    if isinstance(value, Mapping):
        pairs = (f"{json.dumps(k)} = {hcl_literal(v)}" for k, v in value.items())
        return "{" + ", ".join(pairs) + "}"
    raise TypeError(f"no HCL literal for {value!r}")


def spec(schema: Schema) -> Object:
    """The hclspec tree of a schema (an Object at the root, as Nomad requires)."""
    attrs: list[tuple[str, Node]] = []
    for item in schema:
        if isinstance(item, Section):
            nested = spec(item.fields)
            node: Node = BlockList(item.key, nested) if item.many else Block(item.key, nested)
        elif item.block_attrs:
            # BlockAttrs carries the element type; the value is map(element type).
            m = _TYPE_RE.match(item.type)
            if not m or m.group(2) != "map" or not valid_type(item.type):
                raise ValueError(f"schema field {item.key}: block attrs need map(T), "
                                 f"not {item.type!r}")
            node = BlockAttrs(item.key, m.group("inner"), item.required)
        else:
            if not valid_type(item.type):
                raise ValueError(f"schema field {item.key}: bad type expression {item.type!r}")
            node = Attr(item.key, item.type, item.required)
            if item.default is not None:
                # Under a Default an Attr gets no implied name: it carries its own.
                node = Default(node, Literal(hcl_literal(item.default)))
        attrs.append((item.key, node))
    return Object(tuple(attrs))


# ---- reading decoded values ----


class ConfigError(ValueError):
    """A config value is wrong. str() names the field, the problem and the fix."""

    def __init__(self, field: str, problem: str, fix: str = "") -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        super().__init__(f"{field}: {problem}" + (f"; {fix}" if fix else ""))


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"bool {str(value).lower()}"
    if isinstance(value, str):
        return f"string {json.dumps(value)}"
    if isinstance(value, int | float | Decimal):
        return f"number {value}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a map"
    return repr(value)


def _read_typed(path: str, type_expr: str, value: Any, hint: str) -> Any:
    if value is cty.UNKNOWN:
        raise ConfigError(path, "value is not known yet", hint)
    if value is None:
        return None
    m = _TYPE_RE.match(type_expr)
    kind = m.group(2) if m and m.group(2) else type_expr
    if kind == "string":
        if isinstance(value, str):
            return value
    elif kind == "bool":
        if isinstance(value, bool):
            return value
    elif kind == "number":
        # cty sends numbers that are not exact int64/float64 as decimal text.
        n = cty.number(value)
        if n is not None:
            return n
    elif kind == "any":
        return value
    elif kind in ("list", "set") and m is not None:
        if isinstance(value, list):
            inner = m.group("inner")
            return tuple(
                _read_typed(f"{path}[{i}]", inner, v, hint) for i, v in enumerate(value)
            )
    elif kind == "map" and m is not None and isinstance(value, dict):
        inner = m.group("inner")
        return {str(k): _read_typed(f"{path}.{k}", inner, v, hint) for k, v in value.items()}
    raise ConfigError(path, f"expected {type_expr}, got {_describe(value)}", hint)


def read(schema: Schema, value: Any, path: str) -> dict[str, Any]:
    """Type-check a decoded cty object against ``schema``; fill defaults; name any bad field.

    Returns a dict with every schema key: Field -> typed value (tuple for lists, dict for maps),
    Section -> dict (or tuple of dicts when many). Missing keys count as null.
    """
    if value is None:
        value = {}
    if value is cty.UNKNOWN:
        raise ConfigError(path, "value is not known yet")
    if not isinstance(value, dict):
        raise ConfigError(path, f"expected a block, got {_describe(value)}")
    known = {item.key for item in schema}
    for key in value:
        if key not in known:
            raise ConfigError(
                f"{path}.{key}",
                "unknown key",
                "remove it or use one of: " + ", ".join(sorted(known)),
            )
    out: dict[str, Any] = {}
    for item in schema:
        sub = f"{path}.{item.key}"
        raw = value.get(item.key)
        if isinstance(item, Section):
            if item.many:
                if raw is None:
                    raw = []
                if not isinstance(raw, list):
                    raise ConfigError(sub, f"expected a list of blocks, got {_describe(raw)}")
                out[item.key] = tuple(
                    read(item.fields, v, f"{sub}[{i}]") for i, v in enumerate(raw)
                )
            else:
                if isinstance(raw, list):  # block syntax seen through a JSON round trip
                    if len(raw) > 1:
                        raise ConfigError(sub, "only one block allowed", "merge the blocks")
                    raw = raw[0] if raw else None
                out[item.key] = read(item.fields, raw, sub)
            continue
        typed = _read_typed(sub, item.type, raw, item.hint)
        if typed is None:
            if item.required:
                raise ConfigError(sub, "required", item.hint)
            typed = _python_default(item)
        elif item.required and typed == "":
            raise ConfigError(sub, "must not be empty", item.hint)
        out[item.key] = typed
    return out


def _python_default(item: Field) -> Any:
    d = item.default
    if isinstance(d, list):
        return tuple(d)
    if isinstance(d, dict):
        return dict(d)
    return d
