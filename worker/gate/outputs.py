"""The headers of the records the gate writes: allowed (input bytes), suppressed (the core's SuppressedSend), dead-letter."""

from __future__ import annotations

from collections.abc import Sequence

# The type confluent-kafka's produce() takes (lists are invariant, so not list[tuple[str, bytes]]).
Headers = list[tuple[str, str | bytes | None]]

DECISION_HEADER = "sendgate-decision"
POLICY_VERSION_HEADER = "sendgate-policy-version"
DECIDED_AT_HEADER = "sendgate-decided-at"
STATE_HEADER = "sendgate-state"
BYPASSED_HEADER = "sendgate-bypassed"
PRIMARY_REASON_HEADER = "sendgate-primary-reason"
ERROR_CLASS_HEADER = "sendgate-error-class"
ERROR_DETAIL_HEADER = "sendgate-error-detail"
SOURCE_TOPIC_HEADER = "sendgate-source-topic"
SOURCE_PARTITION_HEADER = "sendgate-source-partition"
SOURCE_OFFSET_HEADER = "sendgate-source-offset"


class OutputBuilder:
    """Builds output headers; one per gate process."""

    def __init__(self, *, policy_version: str) -> None:
        self._policy_version = policy_version.encode()

    def allowed_headers(self, bypassed: Sequence[str], *, decided_at: bytes, state: bytes) -> Headers:
        """The headers of an allowed record; ``bypassed`` names the opt-outs a transactional email ignored."""
        headers: Headers = [
            (DECISION_HEADER, b"ALLOWED"),
            (POLICY_VERSION_HEADER, self._policy_version),
            (DECIDED_AT_HEADER, decided_at),
            (STATE_HEADER, state),
        ]
        if bypassed:
            headers.append((BYPASSED_HEADER, ",".join(bypassed).encode()))
        return headers

    def suppressed_headers(self, primary: str, *, decided_at: bytes) -> Headers:
        """The headers of a SuppressedSend whose primary reason is ``primary``."""
        return [
            (DECISION_HEADER, b"SUPPRESSED"),
            (PRIMARY_REASON_HEADER, primary.encode()),
            (POLICY_VERSION_HEADER, self._policy_version),
            (DECIDED_AT_HEADER, decided_at),
        ]

    @staticmethod
    def dead_letter_headers(*, error_class: str, detail: str, topic: str, partition: int, offset: int) -> Headers:
        return [
            (ERROR_CLASS_HEADER, error_class.encode()),
            (ERROR_DETAIL_HEADER, detail[:1000].encode()),
            (SOURCE_TOPIC_HEADER, topic.encode()),
            (SOURCE_PARTITION_HEADER, str(partition).encode()),
            (SOURCE_OFFSET_HEADER, str(offset).encode()),
        ]
