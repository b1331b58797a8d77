"""JailSpec -> jail(8) parameters (pure; table-tested from jail(8)).

The jail is created ``persist`` with no exec.* parameters: task arguments are never spliced into
exec.* strings (jail(8) runs those through /bin/sh when they contain shell characters,
usr.sbin/jail/command.c); the supervisor attaches the task to the jail and execvp's its argv
unchanged. No ``mount.devfs`` either: the backend mounts devfs itself (jails/fbsdmounts.py), because
``jail -r`` of a jail that is not in jail.conf would leave it mounted.
"""

from __future__ import annotations

from jails.linuxabi import abi_params
from jails.spec import JailSpec

# Defaults an operator expects of a task jail; spec.jail_params (allow-listed) override them.
DEFAULT_PARAMS: tuple[tuple[str, str], ...] = (
    ("devfs_ruleset", "4"),  # devfsrules_jail
    ("enforce_statfs", "2"),  # only the jail's own root mount is visible
    ("children.max", "0"),  # no nested jails
)


def jail_ref(spec: JailSpec) -> str:
    """The jail's name as the kernel knows it: with network "parent" the task jail is a child,
    named ``<parent>.<name>`` (jail(8) hierarchical jails); jls, jexec, jail -r and rctl's
    ``jail:`` subject all take that full name."""
    return f"{spec.parent_jail}.{spec.name}" if spec.network == "parent" else spec.name


def jail_params(spec: JailSpec) -> list[tuple[str, str | None]]:
    """Ordered (name, value) pairs; value None is a boolean parameter given bare (``persist``)."""
    params: list[tuple[str, str | None]] = [
        ("name", jail_ref(spec)),
        ("path", str(spec.rootfs)),
        ("host.hostname", spec.hostname),
    ]
    if spec.network in ("host", "parent"):
        # A child inherits its parent's addresses (and its vnet stack: vnet defaults to inherit).
        params += [("ip4", "inherit"), ("ip6", "inherit")]
    params.append(("persist", None))
    overrides = dict(spec.jail_params)
    for key, value in DEFAULT_PARAMS:
        params.append((key, overrides.pop(key, value)))
    if spec.abi == "linux":
        for key, value in abi_params(overrides):
            overrides.pop(key, None)
            params.append((key, value))
    for key, value in spec.jail_params:
        if key in overrides:
            params.append((key, value))
    return params


def jail_create_argv(spec: JailSpec, jail_bin: str = "jail") -> list[str]:
    argv = [jail_bin, "-c"]
    for key, value in jail_params(spec):
        argv.append(key if value is None else f"{key}={value}")
    return argv
