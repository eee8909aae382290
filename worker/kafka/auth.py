"""Telling "Kafka refused our credentials" apart from "Kafka did not answer".

librdkafka does not fail a request with an authentication error: a broker
that rejects the SASL handshake just looks down, and ``list_topics`` ends in
``_TRANSPORT`` after its timeout. The reason arrives on the client's error
callback (``_AUTHENTICATION``, "SASL authentication error: Authentication
failed ..."). :class:`AuthenticationWatch` is that callback: it remembers the
failure, so a failed request can be reported as what it is — a configuration
error (exit code 14), not an unreachable service (15).

The message names the bootstrap servers and the settings to check, never the
user name or the broker's text (a user name may be an email address).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from worker.errors import ConfigurationError

logger = logging.getLogger(__name__)

AUTHENTICATION_CODES = frozenset({KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED})

# The last authentication failure any watch of this process saw (monotonic seconds, bootstrap servers),
# so the CLI can name it even when the request that failed went through a client without a watch.
_last_failure: tuple[float, str] | None = None
_lock = threading.Lock()


class KafkaCredentialsRefused(ConfigurationError):
    """The brokers rejected the SASL credentials: retrying will not help, the settings must change."""


def credentials_refused_message(bootstrap: str) -> str:
    return (
        f"Kafka at {bootstrap} refused the credentials (SASL authentication failed): "
        "check SENDGATE_KAFKA__SASL_USERNAME and SENDGATE_KAFKA__SASL_PASSWORD "
        "(and SENDGATE_KAFKA__SASL_MECHANISM)"
    )


def credentials_refused(bootstrap: str) -> KafkaCredentialsRefused:
    return KafkaCredentialsRefused(credentials_refused_message(bootstrap))


def is_authentication_failure(error: Any) -> bool:
    """Whether ``error`` (a KafkaError, or a KafkaException carrying one) is an authentication failure."""
    if isinstance(error, KafkaException) and error.args:
        error = error.args[0]
    code = getattr(error, "code", None)
    return callable(code) and code() in AUTHENTICATION_CODES


def last_refusal(*, within_seconds: float) -> str | None:
    """The bootstrap servers that refused our credentials in the last ``within_seconds``, if any did."""
    with _lock:
        failure = _last_failure
    if failure is None or time.monotonic() - failure[0] > within_seconds:
        return None
    return failure[1]


class AuthenticationWatch:
    """A librdkafka ``error_cb`` remembering when the brokers last refused our credentials.

    Other errors are left as they are (logged at debug level: librdkafka's own
    log lines already report them).
    """

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._failed_at: float | None = None

    def __call__(self, error: KafkaError) -> None:
        if is_authentication_failure(error):
            global _last_failure
            now = time.monotonic()
            self._failed_at = now
            with _lock:
                _last_failure = (now, self.bootstrap)
        else:
            logger.debug("Kafka client error: %s", error)

    def refused_since(self, started: float) -> bool:
        """Whether an authentication failure was reported at or after ``started`` (``time.monotonic()``)."""
        failed_at = self._failed_at
        return failed_at is not None and failed_at >= started

    def config(self) -> dict[str, Any]:
        """The librdkafka properties installing this watch."""
        return {"error_cb": self}


def auth_watch_of(client: Any) -> AuthenticationWatch | None:
    """The watch installed on ``client`` (see ``worker.kafka.admin.admin_client``), if any."""
    watch = getattr(client, "auth_watch", None)
    return watch if isinstance(watch, AuthenticationWatch) else None
