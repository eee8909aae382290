"""Avro + Confluent wire format for the records of SPEC §5."""

from worker.codec.avro import FIXED_SCHEMA_IDS, AvroCodec
from worker.codec.errors import (
    BadMagicByte,
    DecodeError,
    EmptyValue,
    EncodeError,
    MalformedAvro,
    SchemaFilesMissing,
    SchemaMismatch,
    SchemaRegistryUnavailable,
    TruncatedValue,
    UnknownRecordName,
    UnknownSchemaId,
)
from worker.codec.schemas import RECORD_NAMES

__all__ = [
    "FIXED_SCHEMA_IDS",
    "RECORD_NAMES",
    "AvroCodec",
    "BadMagicByte",
    "DecodeError",
    "EmptyValue",
    "EncodeError",
    "MalformedAvro",
    "SchemaFilesMissing",
    "SchemaMismatch",
    "SchemaRegistryUnavailable",
    "TruncatedValue",
    "UnknownRecordName",
    "UnknownSchemaId",
]
