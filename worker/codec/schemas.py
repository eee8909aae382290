"""The ``.avsc`` files of SPEC §5, loaded and parsed once at start-up.

The files keep ``logicalType: timestamp-millis`` (that is the contract other
languages read), but we read and write with a copy stripped of logical types:
times then travel as plain ``int`` epoch milliseconds and the hot path never
builds ``datetime`` objects. The binary encoding is the same ``long`` either way.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro

from worker.codec.errors import SchemaFilesMissing

RECORD_NAMES = ("SendRequest", "PreferenceEvent", "SuppressedSend", "RejectedPreferenceEvent")
NAMESPACE = "sendgate"

# worker/codec/schemas.py -> the repository (or source tree) root holds schemas/.
_SOURCE_DIR = Path(__file__).resolve().parents[2] / "schemas"
# A wheel does not carry the repository root; an install may put the files here.
_INSTALLED_DIR = Path(sys.prefix) / "share" / "sendgate" / "schemas"


@dataclass(frozen=True, slots=True)
class LoadedSchema:
    """One record schema: the file's text (for the registry) and the parsed form we read/write with."""

    name: str
    text: str
    parsed: dict[str, Any]
    # The stripped dict before parsing; compared with registry schemas to skip resolution.
    canonical: dict[str, Any]


def strip_logical_types(schema: Any) -> Any:
    """A copy of ``schema`` without ``logicalType`` keys, so times stay ``int``."""
    if isinstance(schema, dict):
        return {key: strip_logical_types(value) for key, value in schema.items() if key != "logicalType"}
    if isinstance(schema, list):
        return [strip_logical_types(item) for item in schema]
    return schema


def record_name(schema: Mapping[str, Any]) -> str:
    """The short name of a record schema (``sendgate.SendRequest`` -> ``SendRequest``)."""
    return str(schema.get("name", "")).rsplit(".", 1)[-1]


def parse(schema: Mapping[str, Any] | str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Parse a writer/reader schema (dict or JSON text): ``(canonical, parsed)``."""
    raw = json.loads(schema) if isinstance(schema, str) else schema
    canonical = strip_logical_types(raw)
    # A fresh named-types table per schema: the reader and an older writer both
    # define sendgate.SendRequest, and each must resolve its own names.
    parsed = fastavro.parse_schema(canonical, named_schemas={})
    if not isinstance(canonical, dict) or not isinstance(parsed, dict):
        raise ValueError("an Avro record schema is a JSON object")
    return canonical, parsed


def schema_dir() -> Path:
    """The folder holding the ``.avsc`` files: the source tree first, then an installed copy."""
    for candidate in (_SOURCE_DIR, _INSTALLED_DIR):
        if (candidate / "SendRequest.avsc").is_file():
            return candidate
    raise SchemaFilesMissing(f"no schemas/ folder with the .avsc files at {_SOURCE_DIR} or {_INSTALLED_DIR}")


@functools.cache
def load_schemas(directory: Path | None = None) -> Mapping[str, LoadedSchema]:
    """Load and parse the four record schemas once per process (cached)."""
    folder = directory if directory is not None else schema_dir()
    loaded: dict[str, LoadedSchema] = {}
    for name in RECORD_NAMES:
        path = folder / f"{name}.avsc"
        try:
            text = path.read_text(encoding="utf-8")
            canonical, parsed = parse(text)
        except (OSError, ValueError, fastavro.schema.SchemaParseException) as exc:
            raise SchemaFilesMissing(f"cannot load {path}: {exc}") from exc
        if record_name(canonical) != name:
            raise SchemaFilesMissing(f"{path} defines {canonical.get('name')!r}, expected {name!r}")
        loaded[name] = LoadedSchema(name=name, text=text, parsed=parsed, canonical=canonical)
    return loaded
