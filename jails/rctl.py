"""Limits -> rctl(8) rules, and rctl usage text -> Usage (pure; table-tested from rctl(8) and
sys/kern/kern_rctl.c, sys/kern/kern_racct.c).

Only ``deny`` is used: the kernel accepts it for memoryuse and pcpu (explicit exceptions) and for
the DENIABLE resources maxproc and openfiles. Rules are keyed by jail *name*, may be added before
the jail exists (so it never runs unlimited) and outlive it, so they are removed after jail -r.
"""

from __future__ import annotations

import time

from jails.model import Usage
from jails.spec import Limits


def rctl_rules(jail: str, limits: Limits) -> list[str]:
    rules: list[str] = []
    if limits.memory_hard_bytes is not None:
        rules.append(f"jail:{jail}:memoryuse:deny={limits.memory_hard_bytes}")
    if limits.cpu_percent is not None:
        rules.append(f"jail:{jail}:pcpu:deny={limits.cpu_percent}")
    if limits.max_processes is not None:
        rules.append(f"jail:{jail}:maxproc:deny={limits.max_processes}")
    if limits.open_files is not None:
        rules.append(f"jail:{jail}:openfiles:deny={limits.open_files}")
    return rules


def rule_filter(jail: str) -> str:
    """The filter matching every rule of one jail (``rctl -r`` / ``rctl``)."""
    return f"jail:{jail}:"


def parse_usage(text: str) -> dict[str, int]:
    """``rctl -u`` prints one resource=value per line; rctl_get_racct(2) returns them joined by
    commas. Values are raw integers (never parse ``-h`` output)."""
    out: dict[str, int] = {}
    for item in text.replace(",", "\n").splitlines():
        key, sep, value = item.strip().partition("=")
        if sep and key:
            try:
                out[key] = int(value)
            except ValueError:
                continue
    return out


def usage_from_racct(racct: dict[str, int], now_ns: int | None = None) -> Usage:
    """cputime is whole seconds (kernel IN_MILLIONS / 1e6), memoryuse summed RSS in bytes,
    pcpu the kernel's decaying percent of one core, maxproc the process count."""
    memory = racct.get("memoryuse", 0)
    return Usage(
        timestamp_ns=now_ns if now_ns is not None else time.time_ns(),
        cpu_total_ns=racct.get("cputime", 0) * 1_000_000_000,
        cpu_percent=float(racct.get("pcpu", 0)),
        memory_rss_bytes=memory,
        memory_usage_bytes=memory,
        pids=racct.get("maxproc", 0),
        measured=("cpu_total_ns", "cpu_percent", "memory_rss_bytes", "memory_usage_bytes", "pids"),
    )
