"""What a run feeds in, and the ledger of what Kafka acknowledged.

Every send carries a run-unique ``message_id`` (``<run>-<seq>``); its delivery
report maps it to the source partition and offset, so outputs can be traced
back to their input (dead letters name only the source position). Preference
events are timed by their acknowledgement: a send whose ``produce()`` call
starts after that moment must be decided with the event applied (SPEC §6.3).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, Message, Producer

from tests.chaos.stalled_producer import STALL_SECONDS, is_purged, positions_by_key
from worker.codec import AvroCodec
from worker.config import Settings
from worker.models import (
    Category,
    Channel,
    PreferenceEvent,
    PreferenceEventType,
    PreferenceSource,
    SendRequest,
)
from worker.policy.event_keys import kafka_key

T = PreferenceEventType
DECISION = "decision"  # expected in sends.allowed or sends.suppressed
DEAD_LETTER = "dead-letter"  # expected in sends.dead-letter


@dataclass
class SentRecord:
    """One record of ``sends.requested`` as the producer saw it."""

    message_id: str
    value: bytes | None
    expect: str
    request: SendRequest | None
    produced_at: float  # time.monotonic() just before produce()
    partition: int = -1
    acked_at: float | None = None  # time.monotonic() when the broker's acknowledgement was served
    offset: int = -1
    label: str = ""  # what the hostile tests call it


@dataclass
class AckedEvent:
    """A preference event and when Kafka acknowledged it (time.monotonic())."""

    event: PreferenceEvent
    acked_at: float
    partition: int
    offset: int


@dataclass
class Ledger:
    """Everything produced in one run (thread-safe)."""

    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    sends: dict[str, SentRecord] = field(default_factory=dict)
    events: list[AckedEvent] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _seq: int = 0

    def next_id(self) -> str:
        with self._lock:
            self._seq += 1
            return f"{self.run_id}-{self._seq:07d}"

    def add_send(self, record: SentRecord) -> None:
        with self._lock:
            assert record.message_id not in self.sends, f"message id reused: {record.message_id}"
            self.sends[record.message_id] = record

    def add_event(self, event: AckedEvent) -> None:
        with self._lock:
            self.events.append(event)

    def by_position(self) -> dict[tuple[int, int], SentRecord]:
        return {(r.partition, r.offset): r for r in self.sends.values() if r.offset >= 0}

    def undelivered(self) -> list[str]:
        return [r.message_id for r in self.sends.values() if r.offset < 0]


def _producer(settings: Settings) -> Producer:
    # acks=all + idempotence: an acknowledged record is durable and never doubled.
    return Producer(
        {
            **settings.kafka.common_config(),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            # Upstream that reconnects within a second of a broker restart (the
            # default backoff grows to 10 s), so the records behind a restart
            # arrive as the broker is back, as they would from a tuned client.
            "reconnect.backoff.max.ms": 1000,
            # A single broker that is stopping answers a metadata request with no
            # brokers at all; librdkafka then decommissions the only broker it knows,
            # and without a re-bootstrap it never connects again (delivering nothing
            # for the rest of the run: "80612 send requests not acknowledged"). With
            # the default trigger (300 s) a re-bootstrap comes minutes late; 2 s
            # brings it back as the broker is (20 of 20 restarts in a row here).
            "metadata.recovery.strategy": "rebootstrap",
            "metadata.recovery.rebootstrap.trigger.ms": 2000,
            "message.max.bytes": 1_000_000,
            "queue.buffering.max.messages": 1_000_000,
        }
    )


class SendProducer:
    """Produces send requests (and raw values) to ``sends.requested``, recording their positions.

    A producer left without brokers for good is replaced, losing and doubling
    nothing (:mod:`tests.chaos.stalled_producer`).
    """

    def __init__(self, settings: Settings, codec: AvroCodec, ledger: Ledger) -> None:
        self._settings = settings
        self._codec = codec
        self._ledger = ledger
        self._producer = _producer(settings)
        self._topic = settings.topics.requested
        self._last_report = time.monotonic()
        self._purged: list[SentRecord] = []
        self.replacements = 0
        self.purged_total = 0  # records a replacement took back from a stuck producer

    def send(self, request: SendRequest) -> SentRecord:
        value = self._codec.encode("SendRequest", request.to_record())
        return self._produce(request.message_id, value, DECISION, request)

    def send_labelled(self, request: SendRequest, *, label: str) -> SentRecord:
        value = self._codec.encode("SendRequest", request.to_record())
        return self._produce(request.message_id, value, DECISION, request, label=label)

    def raw(self, value: bytes | None, *, expect: str, label: str, request: SendRequest | None = None) -> SentRecord:
        """A value that may be anything; the key is a fresh message id that maps it back."""
        return self._produce(self._ledger.next_id(), value, expect, request, label=label)

    def _produce(self, message_id: str, value: bytes | None, expect: str, request: SendRequest | None, *, label: str = "") -> SentRecord:
        record = SentRecord(message_id, value, expect, request, time.monotonic(), label=label)
        self._ledger.add_send(record)
        self._hand_over(record)
        self._replace_if_stalled()
        return record

    def _hand_over(self, record: SentRecord) -> None:
        def delivered(error: KafkaError | None, message: Message) -> None:
            self._last_report = time.monotonic()
            if error is not None:
                if is_purged(error):
                    self._purged.append(record)
                else:
                    self._ledger.errors.append(f"{record.message_id}: {error}")
                return
            record.acked_at = time.monotonic()
            record.partition = message.partition()
            record.offset = message.offset()

        while True:
            try:
                self._producer.produce(self._topic, key=record.message_id.encode(), value=record.value, on_delivery=delivered)
                break
            except BufferError:
                self._producer.poll(0.05)
        self._producer.poll(0)

    def _replace_if_stalled(self) -> None:
        if len(self._producer) == 0:
            self._last_report = time.monotonic()
        elif time.monotonic() - self._last_report > STALL_SECONDS:
            self._replace()

    def _replace(self) -> None:
        stuck, self._producer = self._producer, _producer(self._settings)
        self.replacements += 1
        stuck.purge(in_queue=True, in_flight=True)
        stuck.poll(0)
        stuck.flush(5)  # serves the purge reports
        purged, self._purged = self._purged, []
        self.purged_total += len(purged)
        found = positions_by_key(self._settings.kafka.common_config(), self._topic, (r.message_id for r in purged))
        for record in purged:
            if record.message_id in found:  # it was written before the purge: never produce it twice
                record.partition, record.offset = found[record.message_id]
                record.acked_at = time.monotonic()
            else:
                record.produced_at = time.monotonic()
                self._hand_over(record)
        self._last_report = time.monotonic()

    def flush(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self._producer) > 0 and time.monotonic() < deadline:
            self._producer.poll(0.5)
            self._replace_if_stalled()
        remaining = self._producer.flush(max(0.0, deadline - time.monotonic()))
        assert remaining == 0, f"{remaining} send requests not acknowledged ({self.replacements} stuck producers replaced)"
        assert not self._ledger.errors, self._ledger.errors[:5]


class EventProducer:
    """Produces preference events one at a time and records when each was acknowledged."""

    def __init__(self, settings: Settings, codec: AvroCodec, ledger: Ledger) -> None:
        self._codec = codec
        self._ledger = ledger
        self._producer = _producer(settings)
        self._topic = settings.topics.preferences

    def emit(self, events: Iterable[PreferenceEvent], *, wait: bool = True) -> None:
        for event in events:
            self._produce(event)
        if wait:
            self.flush()

    def raw(self, key: bytes | None, value: bytes | None) -> None:
        self._producer.produce(self._topic, key=key, value=value)

    def _produce(self, event: PreferenceEvent) -> None:
        def delivered(error: KafkaError | None, message: Message) -> None:
            # Called from poll()/flush() right after the broker's acknowledgement arrived.
            acked_at = time.monotonic()
            if error is not None:
                self._ledger.errors.append(f"event {event.event_id}: {error}")
                return
            self._ledger.add_event(AckedEvent(event, acked_at, message.partition(), message.offset()))

        value = self._codec.encode("PreferenceEvent", event.to_record())
        self._producer.produce(self._topic, key=kafka_key(event).encode(), value=value, on_delivery=delivered)

    def flush(self, timeout: float = 60.0) -> None:
        remaining = self._producer.flush(timeout)
        assert remaining == 0, f"{remaining} preference events not acknowledged"
        assert not self._ledger.errors, self._ledger.errors[:5]


# --- the audience and the traffic -------------------------------------------------


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Audience:
    """The people of one run: contact ``i`` has ``emails[i]`` and ``phones[i]``.

    Addresses are realistic (a privacy scan must have something to find) and
    already normalised, so a simple oracle can compare them as strings.
    """

    org_id: str
    emails: tuple[str, ...]
    phones: tuple[str, ...]
    users: tuple[str, ...] = ("user-1", "user-2", "user-3")
    sender: str = "agent@lender.example"

    @classmethod
    def create(cls, run_id: str, size: int) -> Audience:
        emails = tuple(f"pat.doe{i}.{run_id}@example.com" for i in range(size))
        # +1 415 555 01xx is reserved for fiction; more than 100 numbers spill into
        # other 555 exchanges, which are valid numbers for the parser too.
        phones = tuple(f"+1415{555 + i // 10000:03d}{i % 10000:04d}" for i in range(size))
        return cls(org_id=f"org-{run_id}", emails=emails, phones=phones)

    def contact(self, i: int) -> str:
        return f"contact-{i}"

    def request(self, message_id: str, i: int, *, channel: Channel, category: Category, user: str) -> SendRequest:
        return SendRequest(
            message_id=message_id,
            org_id=self.org_id,
            user_id=user,
            contact_id=self.contact(i),
            channel=channel,
            category=category,
            to=self.emails[i] if channel is Channel.EMAIL else self.phones[i],
            from_=self.sender if channel is Channel.EMAIL else "+14155550000",
            requested_at=now_ms(),
            campaign_id="chaos",
        )

    def event(self, type_: PreferenceEventType, i: int, **fields: object) -> PreferenceEvent:
        """An event about recipient ``i``: its address, number or contact filled in as ``type_`` needs."""
        if type_.name.startswith("EMAIL_"):
            subject: dict[str, object] = {"email": self.emails[i]}
        elif type_.name.startswith("SMS_"):
            subject = {"phone": self.phones[i]}
        else:
            subject = {"contact_id": self.contact(i), "email": self.emails[i], "phone": self.phones[i]}
        return self.bare_event(type_, **{**subject, **fields})

    def bare_event(self, type_: PreferenceEventType, **fields: object) -> PreferenceEvent:
        """An event of this audience's organization with only ``fields`` beyond the envelope (hostile tests)."""
        values: dict[str, object] = {
            "event_id": uuid.uuid4().hex,
            "org_id": self.org_id,
            "occurred_at": now_ms(),
            "source": PreferenceSource.PREFERENCE_CENTER,
            "type": type_,
        }
        values.update(fields)
        return PreferenceEvent(**values)  # type: ignore[arg-type]


class Traffic:
    """A reproducible mix of sends and suppressing preference events over one audience.

    Sends: mostly marketing email, some transactional email, some SMS. Events
    during a run only ever add suppression (org/user-level email opt-outs, SMS
    opt-outs, do-not-contact), which is what lets the oracle judge an allow by
    the state at the send's production time; SMS opt-ins come first (setup).
    """

    def __init__(self, audience: Audience, ledger: Ledger, *, seed: int) -> None:
        self.audience = audience
        self.ledger = ledger
        self.rng = random.Random(seed)
        self.opted_in = [i for i in range(len(audience.phones)) if i % 3 != 0]

    def setup_events(self) -> list[PreferenceEvent]:
        return [self.audience.event(T.SMS_OPT_IN, i) for i in self.opted_in]

    def next_send(self) -> SendRequest:
        rng = self.rng
        i = rng.randrange(len(self.audience.emails))
        roll = rng.random()
        if roll < 0.75:
            channel, category = Channel.EMAIL, Category.MARKETING
        elif roll < 0.85:
            channel, category = Channel.EMAIL, Category.TRANSACTIONAL
        else:
            channel, category = Channel.SMS, Category.MARKETING
        return self.audience.request(self.ledger.next_id(), i, channel=channel, category=category, user=rng.choice(self.audience.users))

    def next_event(self) -> PreferenceEvent:
        rng = self.rng
        i = rng.randrange(len(self.audience.emails))
        roll = rng.random()
        if roll < 0.5:
            return self.audience.event(T.EMAIL_OPT_OUT_ORGANIZATION, i)
        if roll < 0.7:
            return self.audience.event(T.EMAIL_OPT_OUT_USER, i, user_id=rng.choice(self.audience.users))
        if roll < 0.9:
            return self.audience.event(T.SMS_OPT_OUT, rng.choice(self.opted_in))
        return self.audience.event(T.CONTACT_DO_NOT_CONTACT, i)


class TrafficThreads:
    """Produces sends and events concurrently (rate-limited) until told to stop or the counts are reached."""

    def __init__(
        self,
        settings: Settings,
        codec: AvroCodec,
        traffic: Traffic,
        *,
        sends: int,
        sends_per_second: float,
        events_per_second: float,
    ) -> None:
        self.traffic = traffic
        self.total = sends
        self.send_rate = sends_per_second
        self.event_rate = events_per_second
        self.sends = SendProducer(settings, codec, traffic.ledger)
        self.events = EventProducer(settings, codec, traffic.ledger)
        self._rng_lock = threading.Lock()
        self._done = threading.Event()
        self.failure: BaseException | None = None
        self._threads = [
            threading.Thread(target=self._guard(self._produce_sends), name="chaos-sends", daemon=True),
            threading.Thread(target=self._guard(self._produce_events), name="chaos-events", daemon=True),
        ]
        self.produced = 0

    def _guard(self, target):  # type: ignore[no-untyped-def]
        def run() -> None:
            try:
                target()
            except BaseException as exc:
                self.failure = exc
                self._done.set()

        return run

    def start(self) -> TrafficThreads:
        for thread in self._threads:
            thread.start()
        return self

    def _produce_sends(self) -> None:
        started = time.monotonic()
        try:
            for n in range(self.total):
                if self._done.is_set():
                    return
                with self._rng_lock:
                    request = self.traffic.next_send()
                self.sends.send(request)
                self.produced = n + 1
                ahead = (n + 1) / self.send_rate - (time.monotonic() - started)
                if ahead > 0.005:
                    time.sleep(ahead)
        finally:
            self.sends.flush()  # stopped early too: every record produced is delivered and in the ledger
            self._done.set()

    def _produce_events(self) -> None:
        interval = 1.0 / self.event_rate
        while not self._done.wait(interval):
            with self._rng_lock:
                event = self.traffic.next_event()
            self.events.emit([event])
        self.events.flush()

    def join(self, timeout: float) -> None:
        for thread in self._threads:
            thread.join(timeout)
            assert not thread.is_alive(), f"{thread.name} did not finish"
        if self.failure is not None:
            raise self.failure

    def stop(self) -> None:
        self._done.set()

    @property
    def running(self) -> bool:
        """Still producing sends (paced): a fault now lands with records in flight."""
        return not self._done.is_set() and self._threads[0].is_alive()
