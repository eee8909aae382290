"""What a command prints on the terminal, and how its errors become one line and a named exit code.

The CLI and the operator commands (``worker/ops``) both import from here, so
neither imports the other.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import click
import redis
from confluent_kafka import KafkaException
from rich.console import Console

from worker.config import Settings
from worker.errors import ExitCode, FatalError, RetryableError, SendgateError, ServiceUnreachable
from worker.kafka import auth as kafka_auth
from worker.kafka.classification import is_fatal, is_fenced, kafka_error

logger = logging.getLogger(__name__)

# A Kafka client of this process saw its credentials refused this recently: an outage is that.
CREDENTIALS_REFUSAL_WINDOW_SECONDS = 60.0
console = Console(stderr=False)
err_console = Console(stderr=True)


def load_settings() -> Settings:
    try:
        return Settings()
    except Exception as exc:  # pydantic's ValidationError names the bad variable
        err_console.print(f"[red]invalid configuration:[/red] {exc}")
        sys.exit(ExitCode.CONFIG)


def _bootstrap_servers() -> str:
    context = click.get_current_context(silent=True)
    settings = context.find_object(Settings) if context is not None else None
    return settings.kafka.bootstrap_servers if settings is not None else "the bootstrap servers"


def _credentials_refused() -> str | None:
    """The message for refused Kafka credentials, when a client of ours saw them refused lately.

    librdkafka reports a failed SASL handshake only on a client's error
    callback; the request itself fails like an outage (``_TRANSPORT``).
    """
    bootstrap = kafka_auth.last_refusal(within_seconds=CREDENTIALS_REFUSAL_WINDOW_SECONDS)
    return kafka_auth.credentials_refused_message(bootstrap) if bootstrap is not None else None


def _exit_refused(message: str) -> None:
    logger.error("stopping", extra={"error": message, "exit_code": ExitCode.CONFIG.name})
    err_console.print(f"[red]error:[/red] {message}")
    sys.exit(ExitCode.CONFIG)


def run_guarded(action: Callable[[], Any]) -> Any:
    """Run a command body, turning our errors into one line and a named exit code.

    A retryable error that outlasted its retries exits with its kind's code
    (e.g. 13 for a store that is not ready, 15 for a service that does not
    answer). Refused Kafka credentials are a configuration error (14), even
    where they surface as an unreachable Kafka (15).
    """
    try:
        return action()
    except (FatalError, RetryableError) as exc:
        # An outage may be refused credentials in disguise; a retryable error is an outage that lasted.
        outage = isinstance(exc, (ServiceUnreachable, RetryableError))
        refused = _credentials_refused() if outage else None
        if refused is not None:
            _exit_refused(refused)
        logger.error("stopping", extra={"error": str(exc), "exit_code": exc.exit_code.name})
        err_console.print(f"[red]error:[/red] {exc}")
        sys.exit(exc.exit_code)
    except SendgateError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        sys.exit(ExitCode.FAILURE)
    except KafkaException as exc:
        error = kafka_error(exc)
        if error is not None and kafka_auth.is_authentication_failure(error):
            _exit_refused(kafka_auth.credentials_refused_message(_bootstrap_servers()))
        if error is not None and (is_fenced(error) or is_fatal(error)):
            err_console.print(f"[red]error:[/red] fatal Kafka error: {error}")
            sys.exit(ExitCode.FENCED if is_fenced(error) else ExitCode.KAFKA_FATAL)
        refused = _credentials_refused()
        if refused is not None:
            _exit_refused(refused)
        err_console.print(f"[red]error:[/red] Kafka unreachable or refusing: {error}")
        sys.exit(ExitCode.UNREACHABLE)
    except redis.RedisError as exc:
        err_console.print(f"[red]error:[/red] Redis unreachable or refusing: {exc}")
        sys.exit(ExitCode.UNREACHABLE)
