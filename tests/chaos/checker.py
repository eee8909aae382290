"""The checker: every input record exactly once, in the right output, and nothing wrongly allowed.

It reads ``sends.allowed``, ``sends.suppressed`` and ``sends.dead-letter``
with ``isolation.level=read_committed`` once no transaction is open any more,
maps every output back to the ledger of what was produced, and reports:

* **lost** — produced and acknowledged, in no output;
* **duplicated** — in one output more than once;
* **misrouted** — in two different outputs, in the wrong kind of output (a
  valid request dead-lettered, garbage decided), or altered on the way (an
  allowed value that is not the input bytes, a dead letter naming another
  source position, a suppressed record of another request);
* **wrongly allowed** — allowed although the oracle (:mod:`tests.chaos.oracle`)
  says the preference events acknowledged before it was produced suppress it.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    IsolationLevel,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec

from tests.chaos.oracle import Oracle
from tests.chaos.workload import DEAD_LETTER, DECISION, Ledger, SentRecord
from worker.codec import AvroCodec
from worker.config import Settings

ALLOWED, SUPPRESSED, DEAD = "allowed", "suppressed", "dead-letter"


@dataclass
class Output:
    """One committed output record, traced back to its input."""

    kind: str
    message_id: str | None
    detail: str  # primary reason (suppressed), error class (dead letter), "" (allowed)
    decided_at_ms: int | None
    problem: str = ""


@dataclass
class Verdict:
    records: int
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    misrouted: list[str] = field(default_factory=list)
    wrongly_allowed: list[str] = field(default_factory=list)
    wrongly_suppressed: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    outputs: dict[str, list[Output]] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not (
            self.lost or self.duplicated or self.misrouted or self.wrongly_allowed or self.wrongly_suppressed or self.unexpected
        )

    def describe(self) -> str:
        def sample(ids: list[str]) -> str:
            return f"{len(ids)}" + (f" e.g. {ids[:5]}" if ids else "")

        problems = sorted({o.problem for outs in self.outputs.values() for o in outs if o.problem})
        return (
            f"records={self.records} outputs={dict(self.counts)} lost={sample(self.lost)} "
            f"duplicated={sample(self.duplicated)} misrouted={sample(self.misrouted)} "
            f"wrongly_allowed={sample(self.wrongly_allowed)} wrongly_suppressed={sample(self.wrongly_suppressed)} "
            f"unexpected={sample(self.unexpected)}"
            + (f" problems={problems[:5]}" if problems else "")
        )

    def only(self, kind: str) -> dict[str, Output]:
        """message id -> its single output of ``kind``."""
        return {mid: outs[0] for mid, outs in self.outputs.items() if len(outs) == 1 and outs[0].kind == kind}


def _admin(settings: Settings) -> AdminClient:
    return AdminClient({**settings.kafka.common_config(), "log_level": 0})


def end_offsets(admin: AdminClient, topic: str, *, committed: bool, timeout: float = 10.0) -> dict[int, int]:
    metadata = admin.list_topics(topic, timeout=timeout)
    partitions = metadata.topics[topic].partitions
    level = IsolationLevel.READ_COMMITTED if committed else IsolationLevel.READ_UNCOMMITTED
    futures = admin.list_offsets(
        {TopicPartition(topic, p): OffsetSpec.latest() for p in partitions}, isolation_level=level, request_timeout=timeout
    )
    return {tp.partition: f.result().offset for tp, f in futures.items()}


def settle(settings: Settings, topics: list[str], *, timeout: float) -> None:
    """Wait until no transaction is open on ``topics`` (last stable offset = high watermark)."""
    admin = _admin(settings)
    deadline = time.monotonic() + timeout
    while True:
        try:
            open_partitions = [
                (topic, p)
                for topic in topics
                for p, (stable, high) in _zip(end_offsets(admin, topic, committed=True), end_offsets(admin, topic, committed=False)).items()
                if stable < high
            ]
            if not open_partitions:
                return
        except KafkaException:
            open_partitions = [("?", -1)]
        assert time.monotonic() < deadline, f"transactions still open after {timeout:g} s on {open_partitions[:6]}"
        time.sleep(0.5)


def _zip(a: dict[int, int], b: dict[int, int]) -> dict[int, tuple[int, int]]:
    return {p: (a[p], b[p]) for p in a}


def read_committed_records(settings: Settings, topic: str, *, timeout: float = 300.0):  # type: ignore[no-untyped-def]
    """Yield every committed record of ``topic`` (up to its last stable offset)."""
    admin = _admin(settings)
    ends = end_offsets(admin, topic, committed=True)
    consumer = Consumer(
        {
            **settings.kafka.common_config(),
            "group.id": f"chaos-checker-{uuid.uuid4().hex}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.max.bytes": 52_428_800,
            "log_level": 0,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        pending = {p for p, end in ends.items() if end > 0}
        deadline = time.monotonic() + timeout
        while pending:
            assert time.monotonic() < deadline, f"reading {topic} did not finish within {timeout:g} s (left {pending})"
            for message in consumer.consume(2000, 0.5):
                error = message.error()
                if error is not None:
                    if error.code() == -191:  # _PARTITION_EOF: at the last stable offset
                        pending.discard(message.partition())
                    continue
                yield message
                if message.offset() + 1 >= ends[message.partition()]:
                    pending.discard(message.partition())
    finally:
        consumer.close()


def _header(message, name: str) -> str | None:  # type: ignore[no-untyped-def]
    for key, value in message.headers() or []:
        if key == name:
            return value.decode() if value is not None else ""
    return None


def collect_outputs(settings: Settings, ledger: Ledger, codec: AvroCodec) -> tuple[dict[str, list[Output]], list[str]]:
    """message id -> its outputs, and outputs that map to nothing produced in this run."""
    by_position = ledger.by_position()
    outputs: dict[str, list[Output]] = defaultdict(list)
    unexpected: list[str] = []
    topics = settings.topics

    for message in read_committed_records(settings, topics.allowed):
        key = message.key().decode() if message.key() is not None else ""
        record = ledger.sends.get(key)
        if record is None:
            unexpected.append(f"allowed:{key}")
            continue
        decided = _header(message, "sendgate-decided-at")
        problem = "" if message.value() == record.value else "allowed value differs from the input bytes"
        outputs[key].append(Output(ALLOWED, key, "", int(decided) if decided else None, problem))

    for message in read_committed_records(settings, topics.suppressed):
        key = message.key().decode() if message.key() is not None else ""
        record = ledger.sends.get(key)
        if record is None:
            unexpected.append(f"suppressed:{key}")
            continue
        outputs[key].append(suppressed_output(key, message.value(), record, codec))

    for message in read_committed_records(settings, topics.dead_letter):
        partition, offset = _header(message, "sendgate-source-partition"), _header(message, "sendgate-source-offset")
        position = (int(partition), int(offset)) if partition and offset else None
        found = by_position.get(position) if position else None
        key = message.key().decode(errors="replace") if message.key() is not None else ""
        if found is None:
            unexpected.append(f"dead-letter:{key}@{position}")
            continue
        problem = ""
        if key != found.message_id:
            problem = f"dead letter names {position}, which holds {found.message_id}, but carries key {key}"
        elif message.value() != found.value and not (message.value() is None and not found.value):
            problem = "dead-letter value differs from the input bytes"
        elif _header(message, "sendgate-source-topic") != topics.requested:
            problem = "dead letter names another source topic"
        error_class = _header(message, "sendgate-error-class") or ""
        if not problem and not (error_class and _header(message, "sendgate-error-detail")):
            problem = "dead letter without its error class and detail"
        outputs[found.message_id].append(Output(DEAD, found.message_id, error_class, None, problem))
    return outputs, unexpected


def suppressed_output(key: str, value: bytes | None, record: SentRecord, codec: AvroCodec) -> Output:
    """A record of sends.suppressed traced to its input; one that cannot be read is a problem, hence misrouted."""
    try:
        suppressed = codec.decode("SuppressedSend", value)
    except Exception as exc:
        return Output(SUPPRESSED, key, "", None, f"undecodable SuppressedSend: {type(exc).__name__}: {exc}")
    inner = suppressed["request"]["message_id"]
    own_id = record.request.message_id if record.request is not None else key
    problem = ""
    if inner != own_id:
        problem = f"suppressed record of {inner} under the key of {own_id}"
    elif record.request is not None and suppressed["request"] != _normalised(record):
        problem = "suppressed request differs from the input"
    return Output(SUPPRESSED, key, suppressed["primary_reason"], suppressed["decided_at"], problem)


def _normalised(record: SentRecord) -> dict:  # type: ignore[type-arg]
    assert record.request is not None
    return record.request.to_record()


def check(
    settings: Settings,
    ledger: Ledger,
    *,
    codec: AvroCodec | None = None,
    oracle: bool = True,
    settle_timeout: float = 180.0,
) -> Verdict:
    """Read the three outputs and judge them against ``ledger``."""
    codec = codec or AvroCodec.from_settings(settings)
    undelivered = ledger.undelivered()
    assert not undelivered, f"{len(undelivered)} inputs were never acknowledged by Kafka: {undelivered[:5]}"
    topics = settings.topics
    settle(settings, [topics.allowed, topics.suppressed, topics.dead_letter], timeout=settle_timeout)
    outputs, unexpected = collect_outputs(settings, ledger, codec)
    return judge(ledger, outputs, unexpected, oracle=oracle)


def judge(ledger: Ledger, outputs: dict[str, list[Output]], unexpected: list[str], *, oracle: bool = True) -> Verdict:
    """The verdict on outputs already traced back to their inputs (no I/O)."""
    verdict = Verdict(records=len(ledger.sends), unexpected=list(unexpected), outputs=dict(outputs))
    allowed: list[SentRecord] = []
    suppressed: list[SentRecord] = []
    for message_id, record in ledger.sends.items():
        found = outputs.get(message_id, [])
        kinds = {o.kind for o in found}
        for o in found:
            verdict.counts[o.kind] += 1
        if not found:
            verdict.lost.append(message_id)
            continue
        expected = {DEAD} if record.expect == DEAD_LETTER else {ALLOWED, SUPPRESSED}
        if len(kinds) > 1 or not kinds <= expected or any(o.problem for o in found):
            verdict.misrouted.append(message_id)
        elif len(found) > 1:
            verdict.duplicated.append(message_id)
        if ALLOWED in kinds and record.expect == DECISION:
            allowed.append(record)
        elif kinds == {SUPPRESSED} and record.expect == DECISION:
            suppressed.append(record)
    if oracle:
        judge_by = Oracle(ledger.events)
        verdict.wrongly_allowed = judge_by.wrongly_allowed(allowed)
        verdict.wrongly_suppressed = judge_by.wrongly_suppressed(suppressed)
    return verdict
