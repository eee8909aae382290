"""``sendgate demo``: the scripted scenario through a real applier and gate, then a summary.

Produces the scenario's preference events and sends for a fresh organization,
runs the applier and the gate in this process until every scripted send is
decided, prints what was decided (and whether it is what SPEC requires), and
stops. Nothing stays running.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass

from confluent_kafka import Consumer, Producer, TopicPartition
from rich.console import Console
from rich.table import Table

from worker.assembly import Runtime, build_applier, build_gate
from worker.config import Settings
from worker.errors import SendgateError
from worker.kafka.clients import idempotent_producer_config
from worker.kafka.messages import headers_text
from worker.loadgen.scenario import Scenario, build_scenario
from worker.policy.event_keys import kafka_key


class DemoFailed(SendgateError):
    """The demo could not decide every scripted send in time, or decided one wrongly."""


@dataclass(frozen=True)
class Outcome:
    decision: str  # "allowed" | "suppressed" | "dead-letter"
    reasons: tuple[str, ...]
    bypassed: str


def run_demo(settings: Settings, *, console: Console, timeout_seconds: float = 120.0) -> dict[str, Outcome]:
    runtime = Runtime.create(settings)
    scenario = build_scenario(base_time_ms=int(time.time() * 1000))
    starts = _end_offsets(settings, [settings.topics.allowed, settings.topics.suppressed, settings.topics.dead_letter])
    console.print(
        f"[bold]sendgate demo[/bold]: organization [cyan]{scenario.org_id}[/cyan], "
        f"{len(scenario.events)} preference events, {len(scenario.sends)} sends"
    )
    _produce(settings, runtime, scenario)

    applier = build_applier(runtime)
    gate = build_gate(runtime)
    failures: list[BaseException] = []
    threads = [
        threading.Thread(target=_guard(applier.run, failures), name="demo-applier", daemon=True),
        threading.Thread(target=_guard(gate.run, failures), name="demo-gate", daemon=True),
    ]
    for thread in threads:
        thread.start()
    wanted = {s.request.message_id for s in scenario.sends}
    try:
        outcomes = _collect(settings, runtime, starts, wanted, failures, timeout_seconds)
    finally:
        runtime.stop.set()
        for thread in threads:
            thread.join(30)
    if failures:
        raise failures[0]
    _print_summary(console, scenario, outcomes, settings)
    return outcomes


def _guard(target, failures: list[BaseException]):  # type: ignore[no-untyped-def]
    def run() -> None:
        try:
            target()
        except BaseException as exc:  # reported by run_demo
            failures.append(exc)

    return run


def _produce(settings: Settings, runtime: Runtime, scenario: Scenario) -> None:
    producer = Producer(idempotent_producer_config(settings))
    for event in scenario.events:
        producer.produce(
            settings.topics.preferences,
            key=kafka_key(event, settings.state.default_phone_region).encode(),
            value=runtime.codec.encode("PreferenceEvent", event.to_record()),
        )
    for send in scenario.sends:
        producer.produce(
            settings.topics.requested,
            key=send.request.message_id.encode(),
            value=runtime.codec.encode("SendRequest", send.request.to_record()),
        )
    if producer.flush(30):
        raise DemoFailed("Kafka did not acknowledge the demo's records within 30 s")


def _end_offsets(settings: Settings, topics: list[str]) -> dict[TopicPartition, int]:
    consumer = Consumer({**settings.kafka.common_config(), "group.id": "sendgate-demo-probe", "isolation.level": "read_committed"})
    try:
        offsets: dict[TopicPartition, int] = {}
        for topic in topics:
            for partition in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                tp = TopicPartition(topic, partition)
                offsets[tp] = consumer.get_watermark_offsets(tp, timeout=10, cached=False)[1]
        return offsets
    finally:
        consumer.close()


def _collect(settings, runtime, starts, wanted, failures, timeout_seconds) -> dict[str, Outcome]:  # type: ignore[no-untyped-def]
    consumer = Consumer(
        {
            **settings.kafka.common_config(),
            "group.id": "sendgate-demo-reader",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(tp.topic, tp.partition, offset) for tp, offset in starts.items()])
    outcomes: dict[str, Outcome] = {}
    deadline = time.monotonic() + timeout_seconds
    try:
        while wanted - outcomes.keys():
            if failures:
                return outcomes
            if time.monotonic() > deadline:
                raise DemoFailed(
                    f"{len(wanted - outcomes.keys())} of {len(wanted)} sends undecided after {timeout_seconds:.0f}s: "
                    "is the gate failing closed? (see the log lines above)"
                )
            for message in consumer.consume(500, 0.5):
                key = message.key()
                if message.error() is not None or key is None:
                    continue
                message_id = key.decode()
                if message_id not in wanted:
                    continue
                headers = headers_text(message)
                if message.topic() == settings.topics.suppressed:
                    record = runtime.codec.decode("SuppressedSend", message.value())
                    outcomes[message_id] = Outcome("suppressed", tuple(record["reasons"]), "")
                elif message.topic() == settings.topics.allowed:
                    outcomes[message_id] = Outcome("allowed", (), headers.get("sendgate-bypassed", ""))
                else:
                    outcomes[message_id] = Outcome("dead-letter", (headers.get("sendgate-error-class", "?"),), "")
        return outcomes
    finally:
        consumer.close()


def _print_summary(console: Console, scenario: Scenario, outcomes: dict[str, Outcome], settings: Settings) -> None:
    table = Table(title="Decisions, send by send")
    for column in ("#", "send", "story", "decision", "reasons", "as SPEC"):
        table.add_column(column, overflow="fold")
    wrong = 0
    for index, send in enumerate(scenario.sends, start=1):
        outcome = outcomes[send.request.message_id]
        expected = tuple(r.value for r in send.expected_reasons)
        correct = outcome.reasons == expected and (outcome.decision == "allowed") == send.expected_allowed
        wrong += not correct
        reasons = ", ".join(outcome.reasons) or (f"(bypassed: {outcome.bypassed})" if outcome.bypassed else "")
        table.add_row(
            str(index),
            f"{send.request.channel.value} {send.request.category.value.lower()}",
            send.story,
            f"[green]{outcome.decision}[/green]" if outcome.decision == "allowed" else f"[yellow]{outcome.decision}[/yellow]",
            reasons,
            "[green]yes[/green]" if correct else "[red]NO[/red]",
        )
    console.print(table)

    summary = Table(title="Summary by decision and primary reason")
    summary.add_column("decision")
    summary.add_column("primary reason")
    summary.add_column("sends", justify="right")
    counts = Counter((o.decision, o.reasons[0] if o.reasons else "-") for o in outcomes.values())
    for (decision, reason), count in sorted(counts.items()):
        summary.add_row(decision, reason, str(count))
    console.print(summary)
    example = next(s for s in scenario.sends if s.story == "silenced contact").request
    console.print(
        "\n[bold]Where to look next[/bold]\n"
        f"  explain a decision:  sendgate explain --org {example.org_id} --user {example.user_id} "
        f"--contact {example.contact_id} --channel EMAIL --category MARKETING --to {example.to} --from {example.from_}\n"
        f"  metrics:             sendgate run, then http://{settings.http.host}:{settings.http.port}/metrics\n"
        f"  suppressed records:  topic {settings.topics.suppressed}; replay them with sendgate replay --help"
    )
    if wrong:
        raise DemoFailed(f"{wrong} sends were not decided as SPEC requires")
    console.print(f"[green]all {len(outcomes)} sends decided as SPEC requires[/green]")
