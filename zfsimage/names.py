"""Names from images in messages: quoted, control characters escaped, length bounded, so one
error stays one line and cannot drive a terminal."""

from __future__ import annotations

_MAX = 160


def quote(name: str, limit: int = _MAX) -> str:
    """``repr`` escapes newlines, ANSI escapes and every other non-printable character
    (surrogate-escaped bytes come out as ``\\udcXX``)."""
    if len(name) > limit:
        return repr(name[:limit]) + f"... ({len(name)} characters)"
    return repr(name)


def printable(text: str, limit: int = _MAX) -> str:
    """Like ``quote`` without the quotes, for short values inside a sentence."""
    return quote(text, limit)[1:-1] if len(text) <= limit else quote(text, limit)
