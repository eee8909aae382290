"""The records the gate writes: allowed (input bytes + headers), suppressed, dead-letter."""

from __future__ import annotations

from worker.codec import AvroCodec
from worker.models import SuppressionReason
from worker.policy.decision import Decision

Headers = list[tuple[str, bytes]]

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
STATE_DETAIL = "state"


class OutputBuilder:
    """Builds output values and headers; one per gate process."""

    def __init__(self, *, codec: AvroCodec, policy_version: str, gate_instance: str) -> None:
        self._codec = codec
        self._policy_version = policy_version.encode()
        self._policy_version_text = policy_version
        self._gate_instance = gate_instance

    def allowed_headers(self, decision: Decision, *, decided_at: bytes, state: bytes) -> Headers:
        headers = [
            (DECISION_HEADER, b"ALLOWED"),
            (POLICY_VERSION_HEADER, self._policy_version),
            (DECIDED_AT_HEADER, decided_at),
            (STATE_HEADER, state),
        ]
        if decision.bypassed:
            headers.append((BYPASSED_HEADER, ",".join(r.value for r in decision.bypassed).encode()))
        return headers

    def suppressed(self, request_value: bytes, decision: Decision, *, decided_at: int, state: str) -> tuple[bytes, Headers]:
        """The SuppressedSend of the request in ``request_value``; raises ``DecodeError`` if it cannot be read."""
        primary = decision.primary_reason or SuppressionReason.INVALID_ADDRESS
        value = self._codec.encode_suppressed(
            request_value,
            {
                "reasons": [r.value for r in decision.reasons],
                "primary_reason": primary.value,
                "details": {**decision.details, STATE_DETAIL: state},
                "decided_at": decided_at,
                "policy_version": self._policy_version_text,
                "gate_instance": self._gate_instance,
            },
        )
        headers = [
            (DECISION_HEADER, b"SUPPRESSED"),
            (PRIMARY_REASON_HEADER, primary.value.encode()),
            (POLICY_VERSION_HEADER, self._policy_version),
            (DECIDED_AT_HEADER, str(decided_at).encode()),
        ]
        return value, headers

    @staticmethod
    def dead_letter_headers(*, error_class: str, detail: str, topic: str, partition: int, offset: int) -> Headers:
        return [
            (ERROR_CLASS_HEADER, error_class.encode()),
            (ERROR_DETAIL_HEADER, detail[:1000].encode()),
            (SOURCE_TOPIC_HEADER, topic.encode()),
            (SOURCE_PARTITION_HEADER, str(partition).encode()),
            (SOURCE_OFFSET_HEADER, str(offset).encode()),
        ]
