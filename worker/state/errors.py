"""The error kinds of the state store, in the families of :mod:`worker.errors`."""

from __future__ import annotations

from worker.errors import ConfigurationError, ExitCode, RetryableError


class StateUnavailable(RetryableError):
    """Redis cannot be reached or answered with an error (exit 15 if it lasts, as any outage)."""


class StateNotReady(RetryableError):
    """The store is empty, rebuilding, or behind the freshness barrier."""

    exit_code = ExitCode.STATE_FATAL


class StateChanged(RetryableError):
    """A shard changed under an applier's commit; nothing of that shard's commit was written."""

    exit_code = ExitCode.STATE_FATAL

    def __init__(self, message: str, *, shard: int | None = None) -> None:
        super().__init__(message)
        self.shard = shard


class GenerationLost(StateChanged):
    """The store's generation marker vanished or changed: Redis was emptied or rebuilt."""


class ProgressConflict(StateChanged):
    """Stored progress differs from what this applier expected: another applier moved it."""


class OlderLayout(StateNotReady):
    """The store was written by an older sendgate: the applier empties and rebuilds it.

    Retryable, so a gate upgraded before its applier fails closed and waits
    for the rebuild instead of exiting.
    """


class IncompatibleLayout(ConfigurationError):
    """The store was written by a newer sendgate, whose layout this one cannot read: upgrade this one."""

