"""Typed errors of the isolation runtime; ``str()`` of each is one sentence to act on."""

from __future__ import annotations

from collections.abc import Sequence


class JailError(Exception):
    """Base of every error raised by ``jails``."""


class SpecError(JailError):
    """A JailSpec field is invalid; raised before any side effect."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"jail spec field {field!r}: {message}")


class JailNotFound(JailError):
    """No task with that name exists under this runtime's state root."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no jail/container named {name!r} exists (already destroyed?)")


class JailExists(JailError):
    """start() was called for a name that already has live state."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"a jail/container named {name!r} already exists; destroy it first or pick another name"
        )


class CommandFailed(JailError):
    """An external tool (runc, jail, jls, rctl, mount) exited with an unexpected status."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr
        detail = stderr.strip().splitlines()[-1] if stderr.strip() else "no output"
        super().__init__(f"{' '.join(self.argv[:3])} ... exited {returncode}: {detail}")


class CommandTimeout(JailError):
    """An external command or exec did not finish within its timeout."""

    def __init__(self, argv: Sequence[str], timeout_s: float) -> None:
        self.argv = tuple(argv)
        self.timeout_s = timeout_s
        super().__init__(f"{' '.join(self.argv[:3])} ... did not finish within {timeout_s:g}s")


class SupervisorError(JailError):
    """The per-task supervisor could not start the task or vanished without an exit status."""


class HostUnsupported(JailError):
    """The host lacks something the backend needs (tool, kernel feature, privilege)."""


class NotRunning(JailError):
    """The task exists but is not running (it exited, or has not started)."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"task {name!r} is not running")


class WaitTimeout(JailError, TimeoutError):
    """wait() gave up before the task exited; the task is still running."""

    def __init__(self, name: str, timeout_s: float) -> None:
        self.name = name
        self.timeout_s = timeout_s
        super().__init__(f"task {name!r} still running after {timeout_s:g}s")


class ExecTimeout(JailError, TimeoutError):
    """An exec did not finish in time; the exec'd process was killed. Carries partial output."""

    def __init__(self, name: str, timeout_s: float, stdout: bytes, stderr: bytes) -> None:
        self.name = name
        self.timeout_s = timeout_s
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(f"exec in {name!r} did not finish within {timeout_s:g}s and was killed")
