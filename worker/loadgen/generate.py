"""``sendgate generate``: realistic preference events and send requests, produced fast.

The generated world (``worker.loadgen.traffic``) is fixed by ``--seed``; the event
mix covers every type of SPEC §4 plus a few events built to be rejected, the
send mix EMAIL/SMS × MARKETING/TRANSACTIONAL with some invalid addresses.
Producing is a bulk path: no per-message Python callback, the producer is
polled every few thousand records and flushed once at the end. The iterators
and ``produce_*`` functions are the Python API the bench and the tests use.
"""

from __future__ import annotations

import bisect
import collections
import itertools
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import click
from confluent_kafka import KafkaError, KafkaException, Producer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from worker.codec import AvroCodec
from worker.config import Settings
from worker.errors import ConfigurationError, RetryableError, ServiceUnreachable
from worker.kafka.clients import idempotent_producer_config
from worker.loadgen.traffic import (
    INVALID_EMAILS,
    INVALID_KINDS,
    INVALID_PHONES,
    INVALID_SUFFIX,
    Contact,
    SendFactory,
    Src,
    T,
    World,
    raw_email,
    raw_phone,
)
from worker.models import (
    Category,
    Channel,
    OrgSettings,
    PreferenceEvent,
    PreferenceEventType,
    RejectionReason,
    SendRequest,
    UnsubscribeScope,
    UserOptOutScope,
)
from worker.policy.event_keys import kafka_key
from worker.terminal import console, run_guarded

logger = logging.getLogger(__name__)

POLL_EVERY = 5_000
FLUSH_TIMEOUT_SECONDS = 120.0

# Shares of the valid preference events (SPEC §4: every type appears).
EVENT_MIX: Mapping[PreferenceEventType, float] = {
    T.EMAIL_OPT_OUT_USER: 0.12,
    T.EMAIL_OPT_OUT_ORGANIZATION: 0.16,
    T.EMAIL_OPT_OUT_DOMAIN: 0.08,
    T.EMAIL_UNSUBSCRIBE: 0.16,
    T.SMS_OPT_IN: 0.18,
    T.SMS_OPT_OUT: 0.08,
    T.CONTACT_SILENCED: 0.06,
    T.CONTACT_UNSILENCED: 0.03,
    T.CONTACT_DO_NOT_CONTACT: 0.02,
    T.CONTACT_OK_TO_EMAIL_SET: 0.08,
    T.ORG_SETTINGS_CHANGED: 0.03,
}

_POOL_CAP = 100_000


class _Pool:
    """A bounded bag of (org_id, phone) with random take: the numbers opted in or out so far."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._items: list[tuple[str, str]] = []

    def add(self, item: tuple[str, str]) -> None:
        if len(self._items) < _POOL_CAP:
            self._items.append(item)
        else:
            self._items[self._rng.randrange(_POOL_CAP)] = item

    def take(self) -> tuple[str, str] | None:
        if not self._items:
            return None
        i = self._rng.randrange(len(self._items))
        self._items[i], self._items[-1] = self._items[-1], self._items[i]
        return self._items.pop()

    def pick(self) -> tuple[str, str] | None:
        return self._items[self._rng.randrange(len(self._items))] if self._items else None


def generate_events(
    world: World,
    count: int,
    *,
    seed: int,
    base_time_ms: int,
    invalid_share: float = 0.02,
    mix: Mapping[PreferenceEventType, float] = EVENT_MIX,
) -> Iterator[PreferenceEvent]:
    """``count`` preference events of every type (SPEC §4), a share of them built to be rejected.

    SMS opt-outs are drawn from numbers opted in earlier in the stream, as
    SPEC §8 requires. SMS events always spell the number in E.164, the form
    of SPEC §4's key, so none is counted as miskeyed whatever the applier's
    default region. Email
    events sometimes carry capitals or spaces (their facts do not depend on
    order). Events built to be rejected have ids ending in ``-invalid``;
    ``occurred_at`` grows by 1 ms per event from ``base_time_ms``. Same
    arguments, same events.
    """
    rng = random.Random(f"sendgate-events-{seed}")
    opted_in, opted_out = _Pool(rng), _Pool(rng)
    kinds = list(mix)
    cumulative = list(itertools.accumulate(mix.values()))
    for i in range(count):
        base: dict[str, Any] = {"event_id": f"ev-{seed}-{i}", "occurred_at": base_time_ms + i}
        if rng.random() < invalid_share:
            base["event_id"] += INVALID_SUFFIX
            yield _invalid_event(world, rng, base, opted_out)
            continue
        kind = kinds[bisect.bisect_right(cumulative, rng.random() * cumulative[-1])]
        yield _valid_event(world, rng, base, kind, opted_in, opted_out)


def _contact_with(world: World, rng: random.Random, field: str) -> Contact | None:
    for _ in range(50):
        contact = world.contact(rng.randrange(world.contact_count))
        if getattr(contact, field) is not None:
            return contact
    return None


def _valid_event(
    world: World, rng: random.Random, base: dict[str, Any], kind: PreferenceEventType, opted_in: _Pool, opted_out: _Pool
) -> PreferenceEvent:
    h = rng.getrandbits(32)
    if kind is T.SMS_OPT_OUT:
        taken = opted_in.take()
        if taken is not None:
            opted_out.add(taken)
            return PreferenceEvent(**base, org_id=taken[0], source=Src.CONTACT, type=kind, phone=taken[1])
        kind = T.SMS_OPT_IN  # nothing opted in yet: SPEC §8 wants the opt-in first
    if kind is T.ORG_SETTINGS_CHANGED:
        org = rng.choice(world.organizations)
        settings = OrgSettings(
            UnsubscribeScope.ORGANIZATION if h % 4 == 0 else UnsubscribeScope.DOMAIN,
            UserOptOutScope.ORGANIZATION if (h >> 4) % 3 == 0 else UserOptOutScope.USER,
        )
        return PreferenceEvent(**base, org_id=org.org_id, source=Src.API, type=kind, settings=settings)
    if kind is T.SMS_OPT_IN:
        contact = _contact_with(world, rng, "phone")
        if contact is not None:
            opted_in.add((contact.org.org_id, contact.phone))  # type: ignore[arg-type]
            return PreferenceEvent(
                **base, org_id=contact.org.org_id, source=Src.CONTACT, type=kind, phone=contact.phone
            )
        kind = T.CONTACT_SILENCED
    if kind.name.startswith("EMAIL_"):
        contact = _contact_with(world, rng, "email")
        if contact is None:
            kind = T.CONTACT_SILENCED
        else:
            org = contact.org
            email = raw_email(contact.email, h)  # type: ignore[arg-type]
            fields: dict[str, Any] = {"org_id": org.org_id, "type": kind, "email": email}
            if kind is T.EMAIL_OPT_OUT_USER:
                fields.update(source=Src.USER, user_id=rng.choice(org.users))
            elif kind is T.EMAIL_OPT_OUT_ORGANIZATION:
                fields.update(source=(Src.PREFERENCE_CENTER, Src.USER, Src.IMPORT)[h % 3])
            elif kind is T.EMAIL_OPT_OUT_DOMAIN:
                fields.update(source=Src.PREFERENCE_CENTER, domain=rng.choice(org.sender_domains))
            else:  # EMAIL_UNSUBSCRIBE: now and then without the sender domain (org level then)
                domain = rng.choice(org.sender_domains) if h % 10 else None
                fields.update(source=Src.PREFERENCE_CENTER, domain=domain)
            return PreferenceEvent(**base, **fields)
    contact = world.contact(rng.randrange(world.contact_count))
    fields = {"org_id": contact.org.org_id, "type": kind, "contact_id": contact.contact_id, "source": Src.USER}
    if kind is T.CONTACT_DO_NOT_CONTACT:
        fields.update(email=contact.email, phone=contact.phone)
        if contact.phone is not None:
            opted_out.add((contact.org.org_id, contact.phone))
    elif kind is T.CONTACT_OK_TO_EMAIL_SET:
        fields.update(source=Src.API if h % 2 else Src.IMPORT, ok_to_email=h % 10 >= 7)
    return PreferenceEvent(**base, **fields)


def _invalid_event(world: World, rng: random.Random, base: dict[str, Any], opted_out: _Pool) -> PreferenceEvent:
    contact = world.contact(rng.randrange(world.contact_count))
    org_id = contact.org.org_id
    reason = rng.choice(INVALID_KINDS)
    if reason is RejectionReason.IRREVERSIBLE:
        taken = opted_out.pick()
        if taken is not None:  # opting a number back in after its opt-out
            return PreferenceEvent(**base, org_id=taken[0], source=Src.CONTACT, type=T.SMS_OPT_IN, phone=taken[1])
        reason = RejectionReason.SMS_NOT_OPTED_IN
    if reason is RejectionReason.MISSING_FIELD:
        if rng.random() < 0.5:
            return PreferenceEvent(**base, org_id=org_id, source=Src.PREFERENCE_CENTER, type=T.EMAIL_OPT_OUT_ORGANIZATION)
        return PreferenceEvent(**base, org_id=org_id, source=Src.USER, type=T.CONTACT_SILENCED)
    if reason is RejectionReason.INVALID_ADDRESS:
        if rng.random() < 0.5:
            return PreferenceEvent(
                **base, org_id=org_id, source=Src.IMPORT, type=T.EMAIL_OPT_OUT_ORGANIZATION, email=rng.choice(INVALID_EMAILS)
            )
        return PreferenceEvent(**base, org_id=org_id, source=Src.CONTACT, type=T.SMS_OPT_IN, phone=rng.choice(INVALID_PHONES))
    if reason is RejectionReason.SOURCE_NOT_ALLOWED:
        return PreferenceEvent(
            **base, org_id=org_id, source=Src.USER, type=T.CONTACT_OK_TO_EMAIL_SET, contact_id=contact.contact_id, ok_to_email=False
        )
    # SMS_NOT_OPTED_IN: a number outside the world's area codes, never opted in.
    phone = f"+1900{rng.randrange(2_000_000, 10_000_000)}"
    return PreferenceEvent(**base, org_id=org_id, source=Src.CONTACT, type=T.SMS_OPT_OUT, phone=phone)


def generate_sends(
    world: World,
    count: int,
    *,
    seed: int,
    base_time_ms: int,
    start: int = 0,
    email_share: float = 0.7,
    marketing_share: float = 0.75,
    invalid_share: float = 0.01,
) -> Iterator[SendRequest]:
    """``count`` send requests to random contacts: EMAIL/SMS, MARKETING/TRANSACTIONAL, some invalid addresses.

    Message ids are ``m-<seed>-<n>`` for n from ``start``; ``requested_at``
    grows by 1 ms per request. Same arguments, same requests.
    """
    rng = random.Random(f"sendgate-sends-{seed}-{start}")
    factory = SendFactory(seed=seed)
    produced = 0
    while produced < count:
        contact = world.contact(rng.randrange(world.contact_count))
        if contact.email is None and contact.phone is None:
            continue  # a record without a channel gets no campaign
        h = rng.getrandbits(32)
        email = contact.email is not None and (contact.phone is None or rng.random() < email_share)
        org = contact.org
        user = rng.choice(org.users)
        domain = rng.choice(org.sender_domains)
        category = Category.MARKETING if rng.random() < marketing_share else Category.TRANSACTIONAL
        from_ = None
        if email:
            channel, to = Channel.EMAIL, raw_email(contact.email, h)  # type: ignore[arg-type]
        else:
            channel, to = Channel.SMS, raw_phone(contact.phone, h)  # type: ignore[arg-type]
        if rng.random() < invalid_share:
            if email and h % 5 == 0:
                from_ = "no-reply@"  # the sender is broken, not the recipient
            else:
                to = rng.choice(INVALID_EMAILS if email else INVALID_PHONES)
        n = start + produced
        yield factory.build(
            message_id=f"m-{seed}-{n}", contact=contact, channel=channel, category=category, user=user,
            sender_domain=domain, to=to, requested_at=base_time_ms + produced, h=h, from_=from_,
        )
        produced += 1




# -- producing ---------------------------------------------------------------------
class TrafficNotDelivered(RetryableError):
    """Kafka did not acknowledge every generated record before the flush timed out."""


@dataclass
class ProduceReport:
    """What one ``produce_*`` call wrote: records, bytes, time, and a count per kind."""

    topic: str
    records: int = 0
    bytes: int = 0
    seconds: float = 0.0
    kinds: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


def bulk_producer(settings: Settings) -> Producer:
    """An idempotent producer tuned for bulk: big lz4 batches, a deep local queue."""
    config = idempotent_producer_config(settings)
    config.update(
        {
            "linger.ms": 20,
            "batch.num.messages": 10_000,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            "message.timeout.ms": int(FLUSH_TIMEOUT_SECONDS * 1000),
            "error_cb": _log_client_error,
        }
    )
    return Producer(config)


def _log_client_error(error: KafkaError) -> None:
    logger.warning("generator producer error", extra={"error": str(error)})


def require_topics(settings: Settings, topics: Iterable[str], *, timeout: float = 10.0) -> None:
    """Fail clearly before producing into a missing topic (delivery would time out minutes later)."""
    producer = Producer(settings.kafka.common_config())
    try:
        existing = producer.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise ServiceUnreachable(f"Kafka at {settings.kafka.bootstrap_servers} did not answer: {exc.args[0]}") from exc
    missing = sorted(set(topics) - set(existing))
    if missing:
        raise ConfigurationError(f"topics {missing} do not exist: create them first (sendgate topics create)")


def encoded_events(
    events: Iterable[PreferenceEvent], codec: AvroCodec, kinds: collections.Counter[str]
) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) per event: the subject key of SPEC §4 and the Avro wire-format value."""
    encode = codec.encode
    for event in events:
        kinds[event.type.value] += 1
        yield kafka_key(event).encode(), encode("PreferenceEvent", event.to_record())


def encoded_sends(
    sends: Iterable[SendRequest], codec: AvroCodec, kinds: collections.Counter[str], *, stamp_now: bool = False
) -> Iterator[tuple[bytes, bytes]]:
    """(message_id, value) per request; ``stamp_now`` sets requested_at to the moment it is encoded."""
    encode = codec.encode
    for request in sends:
        record = request.to_record()
        if stamp_now:
            record["requested_at"] = int(time.time() * 1000)
        kinds[f"{request.channel.value}/{request.category.value}"] += 1
        yield request.message_id.encode(), encode("SendRequest", record)


def produce_encoded(
    producer: Producer,
    topic: str,
    items: Iterable[tuple[bytes, bytes]],
    report: ProduceReport,
    *,
    rate: float = 0.0,
    on_progress: Callable[[int], None] | None = None,
    flush: bool = True,
) -> ProduceReport:
    """Produce ``items`` at ``rate`` records/s (0: as fast as Kafka takes them).

    Paced items are pulled from the iterator when they are due, so a stamp
    taken while encoding is the send time.
    """
    started = time.monotonic()
    iterator = iter(items)
    produce = producer.produce
    sent = size = 0
    while True:
        if rate > 0:
            delay = started + sent / rate - time.monotonic()
            if delay > 0.001:
                time.sleep(delay)
        try:
            key, value = next(iterator)
        except StopIteration:
            break
        while True:
            try:
                produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.05)  # the local queue is full: let librdkafka send
        sent += 1
        size += len(value)
        if sent % POLL_EVERY == 0:
            producer.poll(0)  # serve delivery events so they do not pile up
            if on_progress is not None:
                on_progress(sent)
    if flush:
        remaining = producer.flush(FLUSH_TIMEOUT_SECONDS)
        if remaining:
            raise TrafficNotDelivered(f"{remaining} records to {topic} not acknowledged within {FLUSH_TIMEOUT_SECONDS:g}s")
    if on_progress is not None:
        on_progress(sent)
    report.records += sent
    report.bytes += size
    report.seconds += time.monotonic() - started
    return report


def produce_events(
    settings: Settings,
    events: Iterable[PreferenceEvent],
    *,
    codec: AvroCodec | None = None,
    producer: Producer | None = None,
    rate: float = 0.0,
    on_progress: Callable[[int], None] | None = None,
) -> ProduceReport:
    """Produce preference events to ``settings.topics.preferences``, keyed per SPEC §4."""
    topic = settings.topics.preferences
    report = ProduceReport(topic)
    items = encoded_events(events, codec or AvroCodec.from_settings(settings), report.kinds)
    return produce_encoded(producer or bulk_producer(settings), topic, items, report, rate=rate, on_progress=on_progress)


def produce_sends(
    settings: Settings,
    sends: Iterable[SendRequest],
    *,
    codec: AvroCodec | None = None,
    producer: Producer | None = None,
    rate: float = 0.0,
    stamp_now: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> ProduceReport:
    """Produce send requests to ``settings.topics.requested``, keyed by message_id."""
    topic = settings.topics.requested
    report = ProduceReport(topic)
    items = encoded_sends(sends, codec or AvroCodec.from_settings(settings), report.kinds, stamp_now=stamp_now)
    return produce_encoded(producer or bulk_producer(settings), topic, items, report, rate=rate, on_progress=on_progress)


def progress_bar(console: Console | None) -> Progress:
    """The rich progress bar the generator and the bench share (disabled without a console)."""
    return Progress(
        TextColumn("{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
        disable=console is None,
    )


def tracked(progress: Progress, description: str, total: int | None) -> Callable[[int], None]:
    """A progress callback for ``produce_*`` that also shows the rate so far."""
    task = progress.add_task(description, total=total, rate="")
    started = time.monotonic()

    def update(done: int) -> None:
        elapsed = time.monotonic() - started
        rate = f"{done / elapsed:,.0f}/s" if elapsed > 0 else ""
        progress.update(task, completed=done, rate=rate)

    return update


# -- the command -------------------------------------------------------------------
@click.command("generate")
@click.option("--orgs", type=click.IntRange(min=1), default=20, show_default=True, help="Organizations.")
@click.option("--contacts", type=click.IntRange(min=1), default=10_000, show_default=True, help="Contacts over all organizations.")
@click.option("--events", "event_count", type=click.IntRange(min=0), default=10_000, show_default=True, help="Preference events.")
@click.option("--sends", "send_count", type=click.IntRange(min=0), default=10_000, show_default=True, help="Send requests.")
@click.option("--rate", type=click.FloatRange(min=0), default=0.0, show_default=True, help="Records per second; 0 = as fast as possible.")
@click.option("--what", type=click.Choice(["events", "sends", "both"]), default="both", show_default=True, help="What to produce (events first).")
@click.option("--seed", type=int, default=None, help="Reproduce a world and its traffic (default: random, printed).")
@click.option("--base-time-ms", type=click.IntRange(min=0), default=None, help="Epoch ms of the first event/request (default: now).")
@click.pass_obj
def generate_command(
    settings: Settings, orgs: int, contacts: int, event_count: int, send_count: int, rate: float, what: str,
    seed: int | None, base_time_ms: int | None,
) -> None:
    """Produce realistic traffic: preference events and/or send requests."""

    if contacts < orgs:
        raise click.BadParameter(f"need at least one contact per organization ({contacts} < {orgs})", param_hint="--contacts")
    seed = seed if seed is not None else random.SystemRandom().randrange(1_000_000)
    start_ms = base_time_ms if base_time_ms is not None else int(time.time() * 1000)

    def body() -> None:
        world = World(seed=seed, orgs=orgs, contacts=contacts)
        codec = AvroCodec.from_settings(settings)
        wanted = {"events": [settings.topics.preferences], "sends": [settings.topics.requested]}
        topics = wanted["events"] + wanted["sends"] if what == "both" else wanted[what]
        require_topics(settings, topics)
        producer = bulk_producer(settings)
        reports: list[ProduceReport] = []
        with progress_bar(console) as progress:
            if what in ("events", "both") and event_count:
                events = generate_events(world, event_count, seed=seed, base_time_ms=start_ms)
                reports.append(produce_events(settings, events, codec=codec, producer=producer, rate=rate,
                                              on_progress=tracked(progress, "preference events", event_count)))
            if what in ("sends", "both") and send_count:
                sends = generate_sends(world, send_count, seed=seed, base_time_ms=start_ms + event_count)
                reports.append(produce_sends(settings, sends, codec=codec, producer=producer, rate=rate,
                                             on_progress=tracked(progress, "send requests", send_count)))
        _print_summary(console, reports, seed=seed, orgs=orgs, contacts=contacts)

    run_guarded(body)


def _print_summary(console: Console, reports: list[ProduceReport], *, seed: int, orgs: int, contacts: int) -> None:
    table = Table(title=f"sendgate generate (seed {seed}, {orgs} organizations, {contacts:,} contacts)")
    for column in ("topic", "kind", "records"):
        table.add_column(column, justify="right" if column == "records" else "left")
    for report in reports:
        for kind, n in sorted(report.kinds.items()):
            table.add_row(report.topic, kind, f"{n:,}")
        table.add_row(
            report.topic, "[bold]total[/bold]",
            f"[bold]{report.records:,}[/bold] in {report.seconds:.1f}s ({report.records_per_second:,.0f}/s, {report.bytes / 1e6:.1f} MB)",
        )
    console.print(table)
