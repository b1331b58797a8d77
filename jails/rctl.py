"""Limits -> rctl(8) rules, and rctl usage text -> Usage (pure; table-tested from rctl(8) and
sys/kern/kern_rctl.c, sys/kern/kern_racct.c, sys/vm/vm_swapout.c).

Rules are keyed by jail *name*, may be added before the jail exists (so it never runs unlimited)
and outlive it, so they are removed after jail -r.

Memory. ``memoryuse`` (RSS summed over the jail's processes) is not deniable in racct: a ``deny``
rule on it only makes the VM daemon page the jail out towards the limit, which never ends a task
and may thrash the host (rctl(8) BUGS). The VM daemon samples every process's RSS about once a
second (``racct_set(p, RACCT_RSS, ...)`` in vm_daemon); each sample that grows a process while the
jail's sum would exceed a rule's amount runs ``rctl_enforce``, which sends a ``sig*`` action's
signal to *that* process and, for a ``devctl`` action, queues
``!system=RCTL subsystem=rule type=matched rule=<rule> pid=<pid> ruid=<uid> jail=<name>`` for
devd(8) (see ``jails.devd``). So the hard limit is two rules with one amount:
``memoryuse:sigkill`` ends the process that grew the jail past it, and ``memoryuse:devctl`` tells
the task's supervisor that this kill was an OOM kill (``exit.json`` ``oom_killed``), as the memory
cgroup's ``oom_kill`` count does on Linux. ``vmemoryuse:deny`` is not used: it counts reserved
address space, which runtimes such as Go and the JVM reserve far beyond what they touch.
``memory`` without ``memory_max`` is the hard limit (as on Linux); with ``memory_max`` it is only
Nomad's scheduling reservation: racct has no soft limit that applies under host pressure only.
"""

from __future__ import annotations

import time

from jails.model import Usage
from jails.spec import Limits

# The resource/actions the memory limit uses; jails.devd matches notifications of the devctl one.
MEMORY_RESOURCE = "memoryuse"
MEMORY_KILL_ACTION = "sigkill"
MEMORY_NOTIFY_ACTION = "devctl"


def memory_rules(jail: str, limits: Limits) -> list[str]:
    """The hard memory limit: kill, then notify (rctl_enforce runs both for the same sample)."""
    hard = limits.memory_hard_bytes
    if hard is None:
        return []
    return [
        f"jail:{jail}:{MEMORY_RESOURCE}:{MEMORY_KILL_ACTION}={hard}",
        f"jail:{jail}:{MEMORY_RESOURCE}:{MEMORY_NOTIFY_ACTION}={hard}",
    ]


def rctl_rules(jail: str, limits: Limits) -> list[str]:
    """All rules of one jail. ``deny`` only where the kernel enforces it at allocation: pcpu
    (racctd throttles) and the DENIABLE counters maxproc and openfiles (fork/open fail)."""
    rules = memory_rules(jail, limits)
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
