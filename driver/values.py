"""Value parsers shared by the plugin and the task config: ``(path, value, hint) -> value``.

Each raises ``ConfigError`` naming the field (``path``), what is wrong and the fix (``hint``), so
they plug into ``driver.options.option(parse=...)`` as they are.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal
from pathlib import PurePosixPath
from typing import Any

from driver.hclschema import ConfigError

_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
           "h": 3600.0}

PLATFORM_RE = re.compile(r"^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$")
JAIL_PARAM_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")


def parse_duration(text: str) -> timedelta | None:
    """A Go duration ("90s", "1h30m", "250ms"), or None when ``text`` is not one."""
    s = text.strip()
    if s == "0":
        return timedelta(0)
    pos, total = 0, 0.0
    while pos < len(s):
        m = _DURATION_RE.match(s, pos)
        if m is None:
            return None
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    return timedelta(seconds=total) if s else None


def duration(path: str, text: str, hint: str, positive: bool = True) -> timedelta:
    d = parse_duration(text)
    if d is None:
        raise ConfigError(path, f'"{text}" is not a duration', hint)
    if positive and d <= timedelta(0):
        raise ConfigError(path, f'"{text}" must be longer than zero', hint)
    return d


def duration_or_zero(path: str, text: str, hint: str) -> timedelta:
    return duration(path, text, hint, positive=False)


def whole(path: str, value: int | float | Decimal, hint: str, minimum: int = 0) -> int:
    if isinstance(value, float | Decimal) and value != int(value):
        raise ConfigError(path, f"{value} is not a whole number", hint)
    n = int(value)
    if n < minimum:
        raise ConfigError(path, f"{n} is below {minimum}", hint)
    if n > 2**63 - 1:
        raise ConfigError(path, f"{n} is too large", hint)
    return n


def platform(path: str, text: str, hint: str) -> str:
    if text and not PLATFORM_RE.match(text):
        raise ConfigError(path, f"{text!r} is not a platform", hint)
    return text


def absolute(path: str, text: str, hint: str) -> str:
    if not text.startswith("/"):
        raise ConfigError(path, f"{text!r} is not an absolute path", hint)
    return str(PurePosixPath(text))


def optional_absolute(path: str, text: str | None, hint: str) -> str | None:
    return None if text is None else absolute(path, text, hint)


def absolutes(path: str, texts: Sequence[str], hint: str) -> tuple[str, ...]:
    return tuple(absolute(f"{path}[{i}]", t, hint) for i, t in enumerate(texts))


def each_matching(pattern: re.Pattern[str], what: str) -> Any:
    """A parser of a list whose every item must match ``pattern`` (``what`` names an item)."""
    def parse(path: str, items: Sequence[str], hint: str) -> tuple[str, ...]:
        for i, item in enumerate(items):
            if not pattern.match(item):
                raise ConfigError(f"{path}[{i}]", f"{item!r} is not {what}", hint)
        return tuple(items)
    return parse


def under(path: str, roots: Sequence[str]) -> bool:
    """True when ``path`` is one of ``roots`` or below one (paths compared as written)."""
    p = PurePosixPath(path)
    return any(p == PurePosixPath(r) or PurePosixPath(r) in p.parents for r in roots)
