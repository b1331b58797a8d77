"""Errors of the task lifecycle; ``driver.servicer`` maps each to one gRPC status."""

from __future__ import annotations


class DriverError(Exception):
    """Base; str() is one sentence saying what happened and what to do."""


class TaskNotFound(DriverError):
    """No task with this id is known to this plugin (NOT_FOUND)."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(f"task {task_id!r} is not known to the xc driver (never started here, "
                         "or destroyed)")


class TaskConflict(DriverError):
    """The request does not fit the task's state, e.g. destroying a running task without force
    (FAILED_PRECONDITION)."""


class TaskGone(DriverError):
    """RecoverTask found no trace of a running or exited task: Nomad should start it again
    (NOT_FOUND)."""


class BadRequest(DriverError):
    """A request argument that cannot be used, such as an unknown signal (INVALID_ARGUMENT)."""


class StartFailed(DriverError):
    """StartTask could not start the task; ``recoverable`` tells Nomad's restart policy whether
    trying again later can help (FAILED_PRECONDITION with a RecoverableError detail)."""

    def __init__(self, message: str, recoverable: bool) -> None:
        self.recoverable = recoverable
        super().__init__(message)
