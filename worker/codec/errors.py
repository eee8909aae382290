"""Errors of the Avro codec.

Decode errors are :class:`~worker.errors.PoisonInput`: the one value is bad and
goes to the dead-letter (or rejected) topic. Each has a short ``error_class``
that the dead-letter headers carry, so a dashboard can group them without
parsing messages. Messages never quote the value: it may hold an address.
"""

from __future__ import annotations

from worker.errors import ConfigurationError, PoisonInput, RetryableError, SendgateError


class DecodeError(PoisonInput):
    """A value could not be decoded into the requested record."""

    error_class = "decode-error"

    def __init__(self, message: str, *, schema_id: int | None = None) -> None:
        super().__init__(message)
        self.schema_id = schema_id


class EmptyValue(DecodeError):
    """The value is missing (a tombstone) or zero bytes long."""

    error_class = "empty-value"


class BadMagicByte(DecodeError):
    """The value does not start with the Confluent wire-format magic byte 0."""

    error_class = "bad-magic-byte"


class TruncatedValue(DecodeError):
    """The value ends before the wire-format header or the Avro body is complete."""

    error_class = "truncated"


class MalformedAvro(DecodeError):
    """The Avro body is not a valid encoding of the writer schema (or has trailing bytes)."""

    error_class = "malformed-avro"


class UnknownSchemaId(DecodeError):
    """The value names a schema id that is neither known locally nor in the registry."""

    error_class = "unknown-schema-id"


class SchemaMismatch(DecodeError):
    """The writer schema is for another record, or cannot be resolved to our reader schema."""

    error_class = "schema-mismatch"


class EncodeError(SendgateError):
    """A record does not fit its schema; a bug in the caller, never caused by input bytes."""


class UnknownRecordName(SendgateError, KeyError):
    """The record name is not one of the four records of SPEC §5."""


class SchemaFilesMissing(ConfigurationError):
    """The ``schemas/`` folder with the ``.avsc`` files cannot be found or parsed."""


class SchemaRegistryUnavailable(RetryableError):
    """The schema registry could not be reached or answered with a server error."""
