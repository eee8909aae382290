"""Structured logging, configured only by the CLI.

Modules log with ``logging.getLogger(__name__)`` and pass fields in
``extra``; structlog renders each record as one JSON object (or a readable
line with ``SENDGATE_LOG__FORMAT=console``). A last processor masks anything
that looks like an email address or a phone number, wherever it appears, so a
careless message cannot leak personal data.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from worker.config import LogSettings

EMAIL_PATTERN = re.compile(r"([A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]*@([A-Za-z0-9\-]+\.)+[A-Za-z0-9\-]+")
PHONE_PATTERN = re.compile(r"(?<![\w.:/-])\+?\d[\d \-().]{6,}\d(?![\w.])")
IPV4_PATTERN = re.compile(r"\d{1,3}(\.\d{1,3}){3}")


def _mask_phone(match: re.Match[str]) -> str:
    text = match.group(0)
    if IPV4_PATTERN.fullmatch(text):  # broker and Redis addresses must stay readable
        return text
    return "***" + text[-2:]


def mask_text(text: str) -> str:
    """Replace email addresses and phone-number-like digit runs by masks."""
    text = EMAIL_PATTERN.sub(lambda m: f"{m.group(1)}***@***", text)
    return PHONE_PATTERN.sub(_mask_phone, text)


def _mask_value(value: Any) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {key: _mask_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mask_value(item) for item in value]
    return value


def mask_personal_data(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
    return {key: _mask_value(value) for key, value in event_dict.items()}


def configure(settings: LogSettings, *, stream: Any = None) -> None:
    """Route stdlib logging through structlog's formatter; idempotent."""
    renderer: Any = (
        structlog.processors.JSONRenderer() if settings.format == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            mask_personal_data,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_sendgate", False):
            root.removeHandler(existing)
    handler._sendgate = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(settings.level)
    logging.getLogger("kafka").setLevel(logging.WARNING)
