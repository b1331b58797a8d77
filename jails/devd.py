"""devd(8) notification lines (pure): the kernel's format, and the RCTL line that marks an OOM kill.

The kernel's ``devctl_notify(system, subsystem, type, data)`` (sys/kern/subr_bus.c, later
kern_devctl.c) queues ``!system=<system> subsystem=<subsystem> type=<type> <data>\\n``; devd reads
each from /dev/devctl and forwards it unchanged to its socket clients (one packet per line on
``/var/run/devd.seqpacket.pipe``). rctl's ``devctl`` action (``rctl_enforce`` in
sys/kern/kern_rctl.c) sends system ``RCTL``, subsystem ``rule``, type ``matched`` with data
``rule=<rule> pid=<pid> ruid=<ruid> jail=<jail name>``, the rule printed as rctl(8) lists it:
``subject:subject-id:resource:action=amount`` plus ``/per`` only when per differs from the subject.

The task supervisor (sv_oomwatch.c ``rctl_oom_line``) matches the same lines in C; the tests run
both over one table so they cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from jails.rctl import MEMORY_NOTIFY_ACTION, MEMORY_RESOURCE

DEVD_SEQPACKET_SOCKET = "/var/run/devd.seqpacket.pipe"
# The supervisor's OOM_FILE argument for a FreeBSD task: "rctl:<jail>:<devd socket>".
WATCH_PREFIX = "rctl:"


@dataclass(frozen=True)
class Notify:
    """One ``!`` (notify) line: the three routing keys and the data's key=value pairs in order."""

    system: str
    subsystem: str
    type: str
    data: tuple[tuple[str, str], ...]

    def get(self, key: str) -> str | None:
        return next((v for k, v in self.data if k == key), None)


@dataclass(frozen=True)
class RctlRule:
    subject: str
    subject_id: str
    resource: str
    action: str
    amount: int
    per: str

    @classmethod
    def parse(cls, text: str) -> RctlRule | None:
        head, sep, amount_per = text.rpartition("=")
        parts = head.split(":")
        if not sep or len(parts) != 4 or not all(parts):
            return None
        amount, _, per = amount_per.partition("/")
        if not amount.isdigit():
            return None
        subject, subject_id, resource, action = parts
        return cls(subject, subject_id, resource, action, int(amount), per or subject)

    def __str__(self) -> str:
        per = f"/{self.per}" if self.per != self.subject else ""
        return f"{self.subject}:{self.subject_id}:{self.resource}:{self.action}={self.amount}{per}"


@dataclass(frozen=True)
class RctlMatch:
    rule: RctlRule
    pid: int
    ruid: int
    jail: str


def parse_notify(line: str) -> Notify | None:
    """A devd notify line (with or without its newline), or None for anything else (attach
    ``+``, detach ``-``, nomatch ``?`` lines, or a malformed one)."""
    text = line.rstrip("\n")
    if not text.startswith("!") or "\n" in text:
        return None
    pairs: list[tuple[str, str]] = []
    for token in text[1:].split(" "):
        key, sep, value = token.partition("=")
        if not sep or not key:
            return None
        pairs.append((key, value))
    keys = [k for k, _ in pairs]
    if keys[:3] != ["system", "subsystem", "type"] or len(set(keys)) != len(keys):
        return None  # a key given twice is not a line the kernel wrote
    return Notify(pairs[0][1], pairs[1][1], pairs[2][1], tuple(pairs[3:]))


def parse_rctl_match(line: str) -> RctlMatch | None:
    n = parse_notify(line)
    if n is None or (n.system, n.subsystem, n.type) != ("RCTL", "rule", "matched"):
        return None
    rule_text, pid, ruid, jail = n.get("rule"), n.get("pid"), n.get("ruid"), n.get("jail")
    if rule_text is None or pid is None or ruid is None or jail is None:
        return None
    rule = RctlRule.parse(rule_text)
    if rule is None or not pid.isdigit() or not ruid.lstrip("-").isdigit():
        return None
    return RctlMatch(rule, int(pid), int(ruid), jail)


def is_oom_kill(line: str, jail: str) -> bool:
    """Whether ``line`` reports the memory limit of ``jail`` (jails.rctl.memory_rules) matched:
    its sigkill twin ended a process of the jail in the same rctl_enforce call."""
    m = parse_rctl_match(line)
    return (
        m is not None
        and m.jail == jail
        and (m.rule.subject, m.rule.subject_id, m.rule.per) == ("jail", jail, "jail")
        and (m.rule.resource, m.rule.action) == (MEMORY_RESOURCE, MEMORY_NOTIFY_ACTION)
    )


def rctl_matched_line(rule: str, pid: int, ruid: int, jail: str) -> str:
    """The line rctl_enforce's devctl action makes devd forward (with its newline)."""
    data = f"rule={rule} pid={pid} ruid={ruid} jail={jail}"
    return f"!system=RCTL subsystem=rule type=matched {data}\n"


def watch_arg(jail: str, socket_path: str) -> str:
    """The supervisor's OOM_FILE for a jail whose memory limit devd reports."""
    return f"{WATCH_PREFIX}{jail}:{socket_path}"
