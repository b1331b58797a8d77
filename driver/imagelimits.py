"""The plugin config's ``image_limits {}`` block, generated from ``zfsimage.LayerLimits``.

``LayerLimits`` declares every bound the image store puts on an image once, with its default;
this block offers each of its fields under the same name, so a limit added there is an option
here without a second list. Sizes take ``"64G"``-style strings (a bare number is bytes: HCL turns
a number written for a string attribute into its digits), seconds a Nomad duration or a number.
A ``LimitExceeded`` names its field, and ``raise_hint`` turns that into the option to raise.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from driver import values as val
from driver.hclschema import ConfigError
from driver.options import option
from zfsimage.limits import LayerLimits, human, parse_size

__all__ = ["BLOCK", "ImageLimitsBlock", "raise_hint", "to_layer_limits"]

BLOCK = "image_limits"
_SECONDS_RE = re.compile(r"^\s*(\d+(\.\d*)?|\.\d+)\s*$")


def _size(path: str, text: str, hint: str) -> int:
    try:
        n = parse_size(text)
    except ValueError:
        raise ConfigError(path, f"{text!r} is not a size", hint) from None
    if n <= 0:
        raise ConfigError(path, f"{text!r} must be more than zero", hint)
    return n


def _seconds(path: str, text: str, hint: str) -> float:
    if _SECONDS_RE.match(text):
        s = float(text)
        if s <= 0:
            raise ConfigError(path, f"{text!r} must be more than zero", hint)
        return s
    return val.duration(path, text, hint).total_seconds()


def _count(path: str, n: Any, hint: str) -> int:
    return val.whole(path, n, hint, minimum=1)


def _choice(choices: tuple[str, ...]) -> Any:
    def parse(path: str, text: str, hint: str) -> str:
        if text not in choices:
            raise ConfigError(path, f"{text!r} is not one of {', '.join(choices)}", hint)
        return text
    return parse


def _duration_text(seconds: float) -> str:
    for unit, n in (("h", 3600), ("m", 60)):
        if seconds >= n and seconds % n == 0:
            return f"{seconds / n:g}{unit}"
    return f"{seconds:g}s"


def _option(f: dataclasses.Field[Any]) -> tuple[str, type, Any]:
    """One LayerLimits field as a block attribute of the same name, meaning and default."""
    name, default, choices = f.name, f.default, f.metadata["choices"]
    if choices:
        words = " or ".join(f'"{c}"' for c in choices)
        return name, str, option("string", f"set {name} = {words}", default=default,
                                 parse=_choice(choices))
    if f.metadata["size"]:
        return name, int, option(
            "string", f'set {name} to a size such as "{human(default)}" (K/M/G/T) or a number '
            "of bytes", default=human(default), parse=_size)
    if isinstance(default, float):
        return name, float, option(
            "string", f'set {name} to a duration such as "{_duration_text(default)}" or a '
            "number of seconds", default=_duration_text(default), parse=_seconds)
    return name, int, option("number", f"set {name} to a whole number >= 1", default=default,
                             parse=_count)


# The block's own dataclass: generated, so LayerLimits stays the one list of limits.
ImageLimitsBlock: type = dataclasses.make_dataclass(
    "ImageLimitsBlock", [_option(f) for f in dataclasses.fields(LayerLimits)], frozen=True)


def to_layer_limits(path: str, parsed: Any, hint: str) -> LayerLimits:
    """The block's parse: its values as the store's ``LayerLimits``."""
    try:
        return LayerLimits(**dataclasses.asdict(parsed))
    except ValueError as exc:  # each field is checked above; this is LayerLimits' last word
        raise ConfigError(path, str(exc), "fix the image_limits block") from None


def raise_hint(limit: str) -> str | None:
    """What the operator writes to raise the ``LayerLimits`` field ``limit`` (None: not one)."""
    if limit not in {f.name for f in dataclasses.fields(LayerLimits)}:
        return None
    return f'raise {BLOCK}.{limit} in the agent\'s plugin "xc" config'
