"""The error kinds of sendgate.

Every exception raised by our code derives from :class:`SendgateError`; a
library's exception is wrapped where it enters our code (``raise X from exc``).
Three families drive how the workers react, in one place each:

* :class:`PoisonInput` — this one record is bad: dead-letter / reject it, move on.
* :class:`RetryableError` — the world is briefly wrong (Redis down, state not
  ready): fail closed, back off, retry. One that escapes a command after all
  exits with the ``exit_code`` of its kind.
* :class:`FatalError` — the process cannot go on (fenced, misconfigured):
  exit non-zero with a named exit code and let the supervisor restart it.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Process exit codes, named so a supervisor (and a human) can tell them apart."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    FENCED = 10
    KAFKA_FATAL = 11
    DEAD_LETTER_BURST = 12
    STATE_FATAL = 13
    CONFIG = 14
    UNREACHABLE = 15
    INTERRUPTED = 130


class SendgateError(Exception):
    """Base class of every error sendgate raises on purpose."""


class PoisonInput(SendgateError):
    """A single input record cannot be processed; it goes to a dead-letter/rejected topic."""


class RetryableError(SendgateError):
    """A transient condition: the worker fails closed and retries after a back-off.

    ``exit_code`` is the command's exit code when the condition outlasts its
    retries (most often a service that does not answer).
    """

    exit_code: ExitCode = ExitCode.UNREACHABLE


class KafkaRetriable(RetryableError):
    """librdkafka says the same call may simply be made again (retried within :func:`~worker.kafka.transactions.call_kafka`)."""


class TransactionAborted(RetryableError):
    """The open Kafka transaction must be aborted; its input is processed again."""

    exit_code = ExitCode.KAFKA_FATAL


class FatalError(SendgateError):
    """The process must stop; ``exit_code`` says why."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, exit_code: ExitCode | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigurationError(FatalError):
    """Settings, Redis configuration or topic layout make running unsafe."""

    exit_code = ExitCode.CONFIG


class ProducerFenced(FatalError):
    """Another instance took over our transactional id or group generation."""

    exit_code = ExitCode.FENCED


class KafkaFatal(FatalError):
    """librdkafka reported a fatal error."""

    exit_code = ExitCode.KAFKA_FATAL


class DeadLetterBurst(FatalError):
    """Too many dead letters in a short window: stop rather than drain the topic."""

    exit_code = ExitCode.DEAD_LETTER_BURST


class ServiceUnreachable(FatalError):
    """A command could not reach Kafka or Redis at all."""

    exit_code = ExitCode.UNREACHABLE
