"""A thin wrapper of the Confluent Schema Registry client: register ours, fetch writers by id.

Only this module talks to the registry, so its exceptions are wrapped in one
place: "not found" is the caller's poison input, anything else (network, 5xx,
auth) is :class:`SchemaRegistryUnavailable` and makes the worker back off
rather than dead-letter good records.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from worker.codec.errors import SchemaMismatch, SchemaRegistryUnavailable
from worker.config import SchemaRegistrySettings

logger = logging.getLogger(__name__)

# Bounded so a hung registry makes start-up or a decode fail rather than stall.
_DEFAULT_TIMEOUT_SECONDS = 10


class SchemaSource(Protocol):
    """Where writer schemas come from: the registry, or a fake in tests."""

    def register(self, subject: str, schema_text: str) -> int: ...

    def fetch(self, schema_id: int) -> str | None: ...


class RegistrySchemaSource:
    """:class:`SchemaSource` backed by ``confluent_kafka.schema_registry.SchemaRegistryClient``."""

    def __init__(self, *, client: SchemaRegistryClient) -> None:
        self._client = client

    @classmethod
    def from_settings(cls, settings: SchemaRegistrySettings) -> RegistrySchemaSource:
        config: dict[str, Any] = settings.client_config()
        config.setdefault("timeout", _DEFAULT_TIMEOUT_SECONDS)
        return cls(client=SchemaRegistryClient(config))

    def register(self, subject: str, schema_text: str) -> int:
        """Register (or find) ``schema_text`` under ``subject``; returns its global id."""
        try:
            return int(self._client.register_schema(subject, Schema(schema_text, "AVRO")))
        except SchemaRegistryError as exc:
            raise SchemaRegistryUnavailable(
                f"schema registry refused {subject}: HTTP {exc.http_status_code} code {exc.error_code}: "
                f"{exc.error_message}"
            ) from exc
        except Exception as exc:  # httpx transport errors and the like: the registry is unreachable
            raise SchemaRegistryUnavailable(f"schema registry unreachable registering {subject}: {exc}") from exc

    def fetch(self, schema_id: int) -> str | None:
        """The schema text of ``schema_id``, or ``None`` when the registry does not know it."""
        try:
            schema = self._client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                return None
            raise SchemaRegistryUnavailable(
                f"schema registry failed fetching id {schema_id}: HTTP {exc.http_status_code} code {exc.error_code}"
            ) from exc
        except Exception as exc:  # network-level failure: retry later, never dead-letter for it
            raise SchemaRegistryUnavailable(f"schema registry unreachable fetching id {schema_id}: {exc}") from exc
        if schema.schema_type not in (None, "AVRO"):
            raise SchemaMismatch(f"schema id {schema_id} is {schema.schema_type}, not AVRO", schema_id=schema_id)
        return schema.schema_str
