"""The one chokepoint through which ``jails`` runs external tools: argv lists, typed errors.

``Runner`` is what backends hold; tests of the FreeBSD backend pass a recording runner that answers
in the documented output formats, so every command line is asserted exactly.
"""

from __future__ import annotations

import subprocess
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from jails.errors import CommandFailed, CommandTimeout


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class Runner(Protocol):
    def __call__(
        self,
        argv: Sequence[str],
        *,
        ok_codes: Collection[int] = (0,),
        timeout_s: float | None = 60.0,
    ) -> Result: ...


class InputRunner(Protocol):
    """A Runner that can also feed the command's stdin (``ip -batch -``, ``pfctl -f -``)."""

    def __call__(
        self,
        argv: Sequence[str],
        *,
        ok_codes: Collection[int] = (0,),
        timeout_s: float | None = 60.0,
        input: str | None = None,
    ) -> Result: ...


def run(
    argv: Sequence[str],
    *,
    ok_codes: Collection[int] = (0,),
    timeout_s: float | None = 60.0,
    input: str | None = None,
) -> Result:
    """Run argv with stdin closed (or fed ``input``) and both outputs captured.

    Never use this for ``runc create``/``run -d``: the container's processes inherit runc's stdout
    and stderr, so the capture pipes get EOF only when the container exits, and a capturing
    caller waits that long (forever for a long-running task)."""
    args = tuple(argv)
    try:
        proc = subprocess.run(
            args,
            stdin=subprocess.DEVNULL if input is None else None,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandTimeout(args, timeout_s or 0.0) from exc
    except FileNotFoundError as exc:
        raise CommandFailed(args, 127, f"{args[0]}: not found") from exc
    result = Result(args, proc.returncode, proc.stdout, proc.stderr)
    if proc.returncode not in ok_codes:
        raise CommandFailed(args, proc.returncode, proc.stderr or proc.stdout)
    return result
