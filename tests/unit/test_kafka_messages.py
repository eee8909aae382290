"""Positions of consumed messages: the offsets a transaction commits are computed from them."""

from __future__ import annotations

import pytest
from confluent_kafka import Message

from worker.kafka.messages import next_offsets, partition_offset


def consumed(partition: int, offset: int) -> Message:
    return Message(topic="sends.requested", partition=partition, offset=offset, value=b"v")


def test_next_offsets_are_one_past_each_partitions_last_message() -> None:
    batch = [consumed(0, 10), consumed(1, 3), consumed(0, 11), consumed(2, 0), consumed(1, 4), consumed(0, 12)]
    assert next_offsets(batch) == {0: 13, 1: 5, 2: 1}


def test_next_offsets_of_no_messages_is_empty() -> None:
    assert next_offsets([]) == {}


def test_next_offsets_agree_with_the_message_by_message_positions() -> None:
    batch = [consumed(p, o) for o in range(5) for p in (3, 1)]
    expected: dict[int, int] = {}
    for message in batch:
        partition, offset = partition_offset(message)
        expected[partition] = max(expected.get(partition, 0), offset + 1)
    assert next_offsets(batch) == expected


@pytest.mark.parametrize("message", [Message(topic="t", offset=1), Message(topic="t", partition=0)])
def test_a_message_without_a_position_is_refused(message: Message) -> None:
    with pytest.raises(ValueError, match="not consumed"):
        next_offsets([consumed(0, 1), message])
    with pytest.raises(ValueError, match="not consumed"):
        partition_offset(message)
