"""Config options declared once, as dataclass fields.

A config block is a frozen dataclass whose fields carry their HCL declaration in metadata:
``option(type, hint, default=..., parse=...)`` for an attribute, ``block(Cls, many=...)`` for a
nested block. From that one declaration come the hclspec schema Nomad validates with
(``schema_of`` -> ``hclschema.spec``), the type-checked reading of what Nomad sends back
(``decode``), the dataclass default (the HCL default run through ``parse``, so a block left out
and a block written empty give the same value) and the fix hint of every error.

``parse(path, value, hint)`` turns the type-checked value into the field's value and does that
field's semantic checks (raising ``ConfigError``). Checks across fields stay hand-written next to
the dataclass. A field fed by several keys (``TaskConfig.mounts`` from ``mount`` and ``volumes``)
is declared with ``keys(...)``; its parse gets the block's path and a dict of those keys' values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from driver import hclschema as hs

__all__ = ["Block", "block", "build", "decode", "hint_of", "keys", "option", "schema_of"]

T = TypeVar("T")
Parse = Callable[[str, Any, str], Any]

_META = "xc.option"


@dataclass(frozen=True)
class Block:
    """A nested block declared by the dataclass ``cls``: at most one, or a list (``many``).
    ``hints`` overrides the hints of ``cls``'s options where one class serves two blocks."""

    cls: type
    many: bool = False
    hints: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class _Decl:
    # An attribute is an hclschema.Field (its key filled in by schema_of); key None: the field's
    # own name.
    items: tuple[tuple[str | None, hs.Field | Block], ...]
    parse: Parse | None


def option(type: str, hint: str, *, default: Any = None, required: bool = False,
           block_attrs: bool = False, parse: Parse | None = None, secret: bool = False) -> Any:
    """A field that is one HCL attribute (see the module docstring); ``secret``: not in repr."""
    opt = hs.Field("", type, hint, required, default, block_attrs)
    return _field(_Decl(((None, opt),), parse), required, not secret)


def block(cls: type, *, many: bool = False, hints: Mapping[str, str] | None = None,
          parse: Parse | None = None) -> Any:
    """A field that is one nested block (or a list of them) declared by dataclass ``cls``."""
    return _field(_Decl(((None, Block(cls, many, dict(hints or {}))),), parse), False)


def keys(parse: Parse, **items: hs.Field | Block) -> Any:
    """A field fed by several HCL keys (in this order in the schema); an attribute among them is
    an ``hclschema.Field`` (its key is the keyword's)."""
    return _field(_Decl(tuple(items.items()), parse), False)


def _field(decl: _Decl, required: bool, repr: bool = True) -> Any:
    meta = {_META: decl}
    if required:
        return dataclasses.field(metadata=meta, repr=repr)
    value = _parsed_default(decl)
    if type(value).__hash__ is None:  # dataclasses refuse unhashable (mutable) defaults
        return dataclasses.field(default_factory=lambda: value, metadata=meta, repr=repr)
    return dataclasses.field(default=value, metadata=meta, repr=repr)


def _raw_default(item: hs.Field | Block) -> Any:
    """What ``hclschema.read`` yields for an absent key, built like ``decode`` builds it."""
    if isinstance(item, Block):
        return () if item.many else _build(item.cls, _absent(item), "", item.hints)
    d = item.default
    if isinstance(d, list):
        return tuple(d)
    return dict(d) if isinstance(d, dict) else d


def _absent(item: Block) -> dict[str, Any]:
    return hs.read(schema_of(item.cls, item.hints), None, "")


def _parsed_default(decl: _Decl) -> Any:
    if len(decl.items) == 1:
        _, item = decl.items[0]
        raw = _raw_default(item)
        hint = item.hint if isinstance(item, hs.Field) else ""
        return decl.parse("", raw, hint) if decl.parse else raw
    assert decl.parse is not None
    return decl.parse("", {k: _raw_default(i) for k, i in decl.items}, "")


def _decls(cls: type) -> list[tuple[dataclasses.Field[Any], _Decl]]:
    return [(f, f.metadata[_META]) for f in dataclasses.fields(cls) if _META in f.metadata]


def _items(cls: type) -> list[tuple[str, hs.Field | Block]]:
    return [(key or f.name, item) for f, d in _decls(cls) for key, item in d.items]


def schema_of(cls: type, hints: Mapping[str, str] | None = None) -> hs.Schema:
    """The ``hclschema`` schema of a declared dataclass, in field order."""
    out: list[hs.Field | hs.Section] = []
    for key, item in _items(cls):
        if isinstance(item, Block):
            out.append(hs.Section(key, schema_of(item.cls, item.hints), item.many))
        else:
            out.append(dataclasses.replace(item, key=key,
                                           hint=(hints or {}).get(key, item.hint)))
    return tuple(out)


def decode(cls: type[T], value: Any, path: str) -> T:
    """A decoded cty object -> an instance of ``cls``; ConfigError names any bad field."""
    return _build(cls, hs.read(schema_of(cls), value, path), path, {})


def build(cls: type[T], typed: Mapping[str, Any], path: str) -> T:
    """An instance of ``cls`` from what ``hclschema.read`` returned for ``schema_of(cls)``."""
    return _build(cls, typed, path, {})


def _build(cls: type[T], typed: Mapping[str, Any], path: str, hints: Mapping[str, str]) -> T:
    kwargs: dict[str, Any] = {}
    for f, decl in _decls(cls):
        values: dict[str, Any] = {}
        for key, item in decl.items:
            k = key or f.name
            raw, sub = typed[k], f"{path}.{k}"
            if isinstance(item, Block):
                if item.many:
                    raw = tuple(_build(item.cls, r, f"{sub}[{i}]", item.hints)
                                for i, r in enumerate(raw))
                else:
                    raw = _build(item.cls, raw, sub, item.hints)
            values[k] = raw
        if len(decl.items) > 1:
            assert decl.parse is not None
            kwargs[f.name] = decl.parse(path, values, "")
            continue
        (k, raw), = values.items()
        item = decl.items[0][1]
        hint = hints.get(k, item.hint) if isinstance(item, hs.Field) else ""
        kwargs[f.name] = decl.parse(f"{path}.{k}", raw, hint) if decl.parse else raw
    return cls(**kwargs)


def hint_of(cls: type, *path: str) -> str:
    """The fix hint declared for the option at ``path`` (keys from ``cls`` down)."""
    schema = schema_of(cls)
    found: hs.Field | hs.Section | None = None
    for key in path:
        found = next(i for i in schema if i.key == key)
        if isinstance(found, hs.Section):
            schema = found.fields
    assert isinstance(found, hs.Field), path
    return found.hint
