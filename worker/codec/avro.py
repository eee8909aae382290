"""The Avro codec: records <-> Confluent wire-format values, with schema evolution.

Schemas are parsed once (``worker.codec.schemas``); per (writer id, record
name) the codec caches the pair of parsed schemas to read with, so a decode is
one header check, one dict lookup and one ``schemaless_reader`` call.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastavro import schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError

from worker.codec import wire
from worker.codec.errors import (
    EncodeError,
    MalformedAvro,
    SchemaMismatch,
    SchemaRegistryUnavailable,
    TruncatedValue,
    UnknownRecordName,
    UnknownSchemaId,
)
from worker.codec.registry import RegistrySchemaSource, SchemaSource
from worker.codec.schemas import RECORD_NAMES, LoadedSchema, load_schemas, parse, record_name
from worker.config import Settings
from worker.errors import ServiceUnreachable
from worker.models import PreferenceEvent, SendHead, SendRequest

logger = logging.getLogger(__name__)

# SPEC §5: the ids used when no schema registry is configured.
FIXED_SCHEMA_IDS: Mapping[str, int] = {
    "SendRequest": 1,
    "PreferenceEvent": 2,
    "SuppressedSend": 3,
    "RejectedPreferenceEvent": 4,
}

# Garbage values carry random ids; remembering misses keeps them from each
# costing a registry round trip, and the bound keeps the memory flat.
_MAX_NEGATIVE_CACHE = 4096


class _Writer:
    """A writer schema known by id: the record it is for and its parsed forms."""

    __slots__ = ("canonical", "name", "parsed")

    def __init__(self, name: str, canonical: dict[str, Any], parsed: dict[str, Any]) -> None:
        self.name = name
        self.canonical = canonical
        self.parsed = parsed


class AvroCodec:
    """Encodes and decodes the four records of SPEC §5 in the Confluent wire format.

    Times are plain ``int`` epoch milliseconds both ways. ``decode`` accepts any
    writer schema it knows by id (our own, ones added with
    :meth:`register_writer`, or fetched from the registry) and resolves it to
    our reader schema, filling defaults for fields the writer lacked.
    """

    def __init__(
        self,
        *,
        schema_ids: Mapping[str, int] = FIXED_SCHEMA_IDS,
        source: SchemaSource | None = None,
        schemas: Mapping[str, LoadedSchema] | None = None,
        schema_dir: Path | None = None,
    ) -> None:
        self._schemas = schemas if schemas is not None else load_schemas(schema_dir)
        missing = set(RECORD_NAMES) - set(schema_ids)
        if missing:
            raise ValueError(f"no schema id for {sorted(missing)}")
        self._ids = {name: schema_ids[name] for name in RECORD_NAMES}
        self._headers = {name: wire.header(schema_id) for name, schema_id in self._ids.items()}
        self._readers = {name: self._schemas[name].parsed for name in RECORD_NAMES}
        self._source = source
        self._writers: dict[int, _Writer] = {}
        for name, schema_id in self._ids.items():
            loaded = self._schemas[name]
            self._writers[schema_id] = _Writer(name, loaded.canonical, loaded.parsed)
        # (writer id, record name) -> (writer schema, reader schema or None when identical)
        self._plans: dict[tuple[int, str], tuple[dict[str, Any], dict[str, Any] | None]] = {}
        self._unknown_ids: set[int] = set()

    @classmethod
    def from_settings(cls, settings: Settings, *, source: SchemaSource | None = None) -> AvroCodec:
        """The codec for ``settings``: fixed ids, or ids registered under ``<topic>-value``.

        Registering talks to the registry; unreachable → :class:`ServiceUnreachable`.
        """
        if settings.schema_registry.url is None and source is None:
            return cls()
        if source is None:
            source = RegistrySchemaSource.from_settings(settings.schema_registry)
        schemas = load_schemas()
        subjects = {
            "SendRequest": settings.topics.requested,
            "PreferenceEvent": settings.topics.preferences,
            "SuppressedSend": settings.topics.suppressed,
            "RejectedPreferenceEvent": settings.topics.rejected,
        }
        ids: dict[str, int] = {}
        for name, topic in subjects.items():
            try:
                ids[name] = source.register(f"{topic}-value", schemas[name].text)
            except SchemaRegistryUnavailable as exc:
                raise ServiceUnreachable(str(exc)) from exc
            logger.info("schema %s registered under %s-value with id %d", name, topic, ids[name])
        return cls(schema_ids=ids, source=source, schemas=schemas)

    def schema_id(self, record_name: str) -> int:
        """The id our encoder writes for ``record_name``."""
        try:
            return self._ids[record_name]
        except KeyError:
            raise UnknownRecordName(record_name) from None

    def suppression_reasons(self) -> list[str]:
        """The ``SuppressionReason`` symbols of our SuppressedSend schema, in index order."""
        for field in self._schemas["SuppressedSend"].canonical["fields"]:
            if field["name"] == "reasons":
                return list(field["type"]["items"]["symbols"])
        raise ValueError("SuppressedSend schema has no reasons field")

    def register_writer(self, schema_id: int, record_name: str, writer_schema: Mapping[str, Any] | str) -> None:
        """Make an additional (e.g. older) writer schema decodable by id, without a registry."""
        if record_name not in self._readers:
            raise UnknownRecordName(record_name)
        canonical, parsed = parse(writer_schema)
        if _short_name(canonical) != record_name:
            raise ValueError(f"writer schema {schema_id} is for {canonical.get('name')!r}, not {record_name!r}")
        self._writers[schema_id] = _Writer(record_name, canonical, parsed)
        self._unknown_ids.discard(schema_id)
        for key in [key for key in self._plans if key[0] == schema_id]:
            del self._plans[key]

    def encode(self, record_name: str, record: Mapping[str, Any]) -> bytes:
        """The wire-format value of ``record`` (the dict form of ``worker.models``)."""
        try:
            schema = self._readers[record_name]
            header = self._headers[record_name]
        except KeyError:
            raise UnknownRecordName(record_name) from None
        buffer = io.BytesIO()
        buffer.write(header)
        try:
            schemaless_writer(buffer, schema, record)
        except Exception as exc:
            # fastavro raises ValueError/TypeError/KeyError/AttributeError...; the
            # message names the field, not the value, so it is safe to log.
            raise EncodeError(f"cannot encode {record_name}: {type(exc).__name__}: {exc}") from exc
        return buffer.getvalue()

    def decode(self, record_name: str, value: bytes | bytearray | memoryview | None) -> dict[str, Any]:
        """The record in ``value``, resolved to our reader schema; raises ``DecodeError`` subclasses."""
        schema_id = wire.split(value)
        assert value is not None  # wire.split rejected None
        plan = self._plans.get((schema_id, record_name))
        if plan is None:
            plan = self._plan(schema_id, record_name)
        writer, reader = plan
        stream = io.BytesIO(value)
        stream.seek(wire.HEADER_SIZE)
        try:
            record = schemaless_reader(stream, writer, reader)
        except SchemaResolutionError as exc:
            raise SchemaMismatch(
                f"writer schema {schema_id} cannot be resolved to {record_name}: {exc}", schema_id=schema_id
            ) from exc
        except Exception as exc:
            # Garbage reaches fastavro as bad varints, lengths, enum/union indexes
            # or UTF-8; whatever it raises, this one value is poison, not a crash.
            # Running out of bytes shows up as EOFError or (mid-varint) IndexError,
            # so "truncated" is judged by where the reader stopped, not by the type.
            # The exception text may quote the bytes, so only its class is kept.
            if isinstance(exc, EOFError) or stream.tell() >= len(value):
                raise TruncatedValue(
                    f"{record_name} body ends early (schema id {schema_id}, {len(value)} bytes)",
                    schema_id=schema_id,
                ) from exc
            raise MalformedAvro(
                f"{record_name} body is not valid Avro (schema id {schema_id}): {type(exc).__name__}",
                schema_id=schema_id,
            ) from exc
        if stream.tell() != len(value):
            raise MalformedAvro(
                f"{record_name} body has {len(value) - stream.tell()} trailing bytes (schema id {schema_id})",
                schema_id=schema_id,
            )
        return record  # type: ignore[return-value]

    def decode_send_head(self, value: bytes | bytearray | memoryview | None) -> SendHead:
        """The leading fields of a ``SendRequest`` value (the whole value decoded and validated).

        The gate's own per-record reading is the compiled core's
        (``worker._native``); this is the reference it falls back on.
        """
        return SendHead.from_request(SendRequest.from_record(self.decode("SendRequest", value)))

    def encode_suppressed(self, request_value: bytes, decision: Mapping[str, Any]) -> bytes:
        """The wire-format SuppressedSend of the SendRequest in ``request_value``.

        ``decision`` holds the other SuppressedSend fields (reasons,
        primary_reason, details, decided_at, policy_version, gate_instance).
        The request is decoded (raising ``DecodeError`` as :meth:`decode`
        does) and encoded with them.
        """
        return self.encode("SuppressedSend", {"request": self.decode("SendRequest", request_value), **decision})

    def decode_preference_event(self, value: bytes | bytearray | memoryview | None) -> PreferenceEvent:
        """The event of a wire-format value: the reference the applier's compiled core is held to.

        Raises ``DecodeError`` subclasses, and ``from_record``'s errors for resolved older writers.
        """
        return PreferenceEvent.from_record(self.decode("PreferenceEvent", value))

    def _plan(self, schema_id: int, name: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Find the writer schema of ``schema_id`` and pair it with our reader (cached)."""
        reader = self._readers.get(name)
        if reader is None:
            raise UnknownRecordName(name)
        writer = self._writers.get(schema_id) or self._fetch(schema_id)
        if writer.name != name:
            raise SchemaMismatch(f"schema id {schema_id} is for {writer.name}, not {name}", schema_id=schema_id)
        if writer.parsed is reader or writer.canonical == self._schemas[name].canonical:
            # Same schema: reading without resolution is faster.
            plan: tuple[dict[str, Any], dict[str, Any] | None] = (reader, None)
        else:
            plan = (writer.parsed, reader)
        self._plans[(schema_id, name)] = plan
        return plan

    def _fetch(self, schema_id: int) -> _Writer:
        """Ask the registry for a writer schema we have not seen; unknown → ``UnknownSchemaId``."""
        if self._source is None or schema_id in self._unknown_ids:
            raise UnknownSchemaId(f"schema id {schema_id} is unknown", schema_id=schema_id)
        text = self._source.fetch(schema_id)  # SchemaRegistryUnavailable propagates: retry, don't dead-letter
        if text is None:
            if len(self._unknown_ids) >= _MAX_NEGATIVE_CACHE:
                self._unknown_ids.clear()
            self._unknown_ids.add(schema_id)
            raise UnknownSchemaId(f"schema id {schema_id} is not in the schema registry", schema_id=schema_id)
        try:
            canonical, parsed = parse(text)
        except Exception as exc:
            raise SchemaMismatch(f"schema id {schema_id} cannot be parsed: {exc}", schema_id=schema_id) from exc
        writer = _Writer(_short_name(canonical), canonical, parsed)
        self._writers[schema_id] = writer
        return writer


def _short_name(schema: Mapping[str, Any]) -> str:
    # A registry schema may be a bare union or primitive; it matches no record then.
    return record_name(schema) if isinstance(schema, Mapping) else ""
