"""Logs are JSON and never carry a raw email address or phone number."""

from __future__ import annotations

import io
import json
import logging

from worker.config import LogSettings
from worker.logs import configure, mask_text


def test_addresses_and_phone_numbers_are_masked_wherever_they_appear():
    text = mask_text("to jane.doe+promo@example.co.uk and +1 (415) 555-0100 or 4155550100")
    assert "jane" not in text and "example" not in text and "555" not in text
    assert "***" in text


def test_offsets_timestamps_and_state_descriptions_survive_masking():
    for text in ("sends.requested[3]@123456", "2026-11-26T07:28:29.123Z", "gen=abc;applied=0:12,1:55", "connecting to 127.0.0.1:9092"):
        assert mask_text(text) == text


def test_log_lines_are_json_with_extra_fields_masked():
    stream = io.StringIO()
    configure(LogSettings(level="INFO", format="json"), stream=stream)
    logging.getLogger("sendgate.test").warning("sent to bob@example.com", extra={"to": "+14155550100", "at": "t[1]@5"})
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["level"] == "warning" and line["at"] == "t[1]@5"
    assert "bob@example.com" not in json.dumps(line) and "4155550100" not in json.dumps(line)
