"""A running interactive exec: a pty (tty=True) or three pipes, with resize, wait and kill."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import struct
import subprocess
import termios
import tty as _tty
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO


def set_winsize(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def spawn_interactive(
    argv: Sequence[str],
    *,
    tty: bool,
    env: Mapping[str, str] | None = None,
    size: tuple[int, int] | None = None,
    raw: bool = False,
    pid_file: Path | None = None,
    cleanup: list[Path] | None = None,
) -> InteractiveExec:
    """Start ``argv`` on a fresh pty (tty=True) or on three pipes.

    ``raw``: put the pty in raw mode before the program starts. For a program that proxies to a
    terminal of its own (``runc exec --tty``) input written before it switches to raw would
    otherwise be echoed, and a ^D eaten, by our side's line discipline.
    """
    penv = dict(env) if env is not None else None
    if not tty:
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=penv,
        )
        return InteractiveExec(proc, master_fd=None, pid_file=pid_file, cleanup=cleanup)
    master, slave = os.openpty()
    try:
        if size is not None:  # (cols, rows) before the command starts: no resize race
            set_winsize(slave, *size)
        if raw:
            _tty.setraw(slave)
        proc = subprocess.Popen(
            list(argv), stdin=slave, stdout=slave, stderr=slave, env=penv,
            start_new_session=True,
        )
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    return InteractiveExec(proc, master_fd=master, pid_file=pid_file, cleanup=cleanup)


class InteractiveExec:
    """Owns the exec's host-side process (e.g. ``runc exec``) and its terminal or pipes.

    tty: read/write ``master_fd``; call ``resize``. No tty: ``stdin``/``stdout``/``stderr`` pipes.
    ``wait`` returns the exec'd command's exit code (128+signal when killed by a signal).
    """

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        *,
        master_fd: int | None,
        pid_file: Path | None,
        cleanup: list[Path] | None = None,
    ) -> None:
        self._proc = proc
        self.master_fd = master_fd
        self._pid_file = pid_file
        self._cleanup = cleanup or []
        self.stdin: IO[bytes] | None = proc.stdin
        self.stdout: IO[bytes] | None = proc.stdout
        self.stderr: IO[bytes] | None = proc.stderr

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def tty(self) -> bool:
        return self.master_fd is not None

    def resize(self, cols: int, rows: int) -> None:
        if self.master_fd is None:
            return
        set_winsize(self.master_fd, cols, rows)
        self.resync_size()

    def resync_size(self) -> None:
        """Have the terminal's size applied again: runc copies the size of its own terminal (our
        pty) into the container's on SIGWINCH. It also copies it once when it receives the
        container's console, which can race the command's first look at it (a shell's first
        `stty size` saw 0x0 once), so a session asks again when the command first speaks."""
        if self.master_fd is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self._proc.send_signal(signal.SIGWINCH)

    def wait(self, timeout: float | None = None) -> int:
        rc = self._proc.wait(timeout)
        return rc if rc >= 0 else 128 - rc

    def kill(self) -> None:
        """Kill the exec'd process inside the jail (not only our side of it)."""
        if self._pid_file is not None:
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(self._pid_file.read_text().strip()), signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self._proc.kill()

    def close(self) -> None:
        if self.master_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.master_fd)
            self.master_fd = None
        for f in (self.stdin, self.stdout, self.stderr):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
        for p in self._cleanup:
            with contextlib.suppress(OSError):
                p.unlink()
