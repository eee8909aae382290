"""``sendgate what-if``: how would the current state decide a window of past sends?

Runs records of ``sends.suppressed`` or ``sends.requested`` (same time,
organization and campaign filters as replay; ``--limit`` bounds the work)
through the policy on the live store, behind the freshness barrier, and
produces nothing. It is its own command rather than a replay flag because it
also reads ``sends.requested``, which replay never re-submits.

What was decided "then":

* ``--topic suppressed``: the record's own ``primary_reason``;
* ``--topic requested``: the outcome found for the same message key in
  ``sends.allowed``, ``sends.suppressed`` (its primary-reason header) or
  ``sends.dead-letter``, read from shortly before the oldest evaluated
  ``requested_at``; ``UNKNOWN`` when none is found (not decided yet, or
  expired). With duplicate keys, the last outcome found counts.

Time filters apply to ``decided_at`` for suppressed records and to
``requested_at`` for requested ones (which have no decision time).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click
from confluent_kafka import Message
from rich.console import Console
from rich.table import Table

from worker.codec import AvroCodec
from worker.codec.errors import DecodeError
from worker.config import Settings
from worker.gate.outputs import PRIMARY_REASON_HEADER
from worker.kafka.messages import header
from worker.models import SendRequest, SuppressionReason
from worker.ops.live_state import LiveState
from worker.ops.tables import echo_json, progress_bar
from worker.ops.topic_reader import RecordFilter, TimeParam, TopicWindow, position
from worker.policy.decision import Decision
from worker.terminal import console, err_console, run_guarded

logger = logging.getLogger(__name__)

ALLOWED = "ALLOWED"
DEAD_LETTER = "DEAD_LETTER"
UNKNOWN = "UNKNOWN"
SUPPRESSED_PREFIX = "SUPPRESSED:"
BATCH_SIZE = 500


def outcome_of(decision: Decision) -> str:
    primary = decision.primary_reason
    return ALLOWED if primary is None else SUPPRESSED_PREFIX + primary.value


@dataclass
class WhatIfSummary:
    """Outcomes then and now of the evaluated records, and the transitions between them."""

    topic: str
    scanned: int = 0
    undecodable: int = 0
    matched: int = 0
    evaluated: int = 0
    limit_reached: bool = False
    then: Counter[str] = field(default_factory=Counter)
    now: Counter[str] = field(default_factory=Counter)
    transitions: Counter[tuple[str, str]] = field(default_factory=Counter)

    @property
    def changed(self) -> int:
        return sum(n for (then, now), n in self.transitions.items() if then != now and then != UNKNOWN)

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "scanned": self.scanned,
            "undecodable": self.undecodable,
            "matched": self.matched,
            "evaluated": self.evaluated,
            "limit_reached": self.limit_reached,
            "then": _grouped(self.then),
            "now": _grouped(self.now),
            "changed": self.changed,
            "transitions": [
                {"then": then, "now": now, "count": n}
                for (then, now), n in sorted(self.transitions.items(), key=lambda item: (-item[1], item[0]))
            ],
        }


def _grouped(counts: Counter[str]) -> dict[str, Any]:
    suppressed = {k[len(SUPPRESSED_PREFIX):]: n for k, n in counts.items() if k.startswith(SUPPRESSED_PREFIX)}
    return {
        "allowed": counts.get(ALLOWED, 0),
        "suppressed": suppressed,
        "suppressed_total": sum(suppressed.values()),
        "dead_letter": counts.get(DEAD_LETTER, 0),
        "unknown": counts.get(UNKNOWN, 0),
    }


class WhatIf:
    """One evaluation over a window; never produces."""

    def __init__(
        self,
        *,
        settings: Settings,
        live: LiveState,
        codec: AvroCodec,
        source: str,
        record_filter: RecordFilter,
        limit: int | None,
        on_progress: Callable[[int, int], None] = lambda done, total: None,
    ) -> None:
        self._settings = settings
        self._live = live
        self._codec = codec
        self._suppressed = source == "suppressed"
        self._topic = settings.topics.suppressed if self._suppressed else settings.topics.requested
        self._filter = record_filter
        self._limit = limit
        self._on_progress = on_progress
        # requested: (message key, outcome now) awaiting the join with the outputs
        self._pending: list[tuple[bytes | None, str]] = []
        self._oldest_requested_at: int | None = None
        self.summary = WhatIfSummary(topic=self._topic)

    def run(self) -> WhatIfSummary:
        batch: list[tuple[Message, dict[str, Any]]] = []
        with TopicWindow(self._settings, self._topic, since_ms=self._filter.since_ms) as window:
            total = window.total
            self._on_progress(0, total)
            for message in window:
                self.summary.scanned += 1
                record = self._decode(message)
                if record is None or not self._matches(record):
                    continue
                self.summary.matched += 1
                if self._limit is not None and self.summary.evaluated + len(batch) >= self._limit:
                    self.summary.limit_reached = True
                    break
                batch.append((message, record))
                if len(batch) >= BATCH_SIZE:
                    self._evaluate(batch)
                    batch = []
                    self._on_progress(self.summary.scanned, total)
            if batch:
                self._evaluate(batch)
            self._on_progress(total, total)
        if not self._suppressed:
            self._join_outputs()
        return self.summary

    def _decode(self, message: Message) -> dict[str, Any] | None:
        try:
            return self._codec.decode("SuppressedSend" if self._suppressed else "SendRequest", message.value())
        except DecodeError as exc:
            self.summary.undecodable += 1
            logger.warning("undecodable record skipped", extra={"at": position(message), "error_class": type(exc).__name__})
            return None

    def _matches(self, record: dict[str, Any]) -> bool:
        if self._suppressed:
            return self._filter.matches_suppressed(record)
        return self._filter.matches_requested(record)

    def _evaluate(self, batch: list[tuple[Message, dict[str, Any]]]) -> None:
        requests = [SendRequest.from_record(record["request"] if self._suppressed else record) for _, record in batch]
        decisions = self._live.decide(requests)
        for (message, record), request, decision in zip(batch, requests, decisions, strict=True):
            now = outcome_of(decision)
            self.summary.evaluated += 1
            self.summary.now[now] += 1
            if self._suppressed:
                then = SUPPRESSED_PREFIX + str(record["primary_reason"])
                self.summary.then[then] += 1
                self.summary.transitions[(then, now)] += 1
            else:
                self._pending.append((message.key(), now))
                if self._oldest_requested_at is None or request.requested_at < self._oldest_requested_at:
                    self._oldest_requested_at = request.requested_at

    def _join_outputs(self) -> None:
        """For requested records: what the gate decided, looked up by message key in its outputs."""
        wanted = {key for key, _ in self._pending if key is not None}
        found: dict[bytes, str] = {}
        topics = self._settings.topics
        if wanted:
            for topic in (topics.allowed, topics.suppressed, topics.dead_letter):
                with TopicWindow(self._settings, topic, since_ms=self._oldest_requested_at) as window:
                    for message in window:
                        key = message.key()
                        if key in wanted:
                            found[key] = self._output_outcome(topic, message)
        for key, now in self._pending:
            then = found.get(key, UNKNOWN) if key is not None else UNKNOWN
            self.summary.then[then] += 1
            self.summary.transitions[(then, now)] += 1
        self._pending.clear()

    def _output_outcome(self, topic: str, message: Message) -> str:
        topics = self._settings.topics
        if topic == topics.allowed:
            return ALLOWED
        if topic == topics.dead_letter:
            return DEAD_LETTER
        primary = header(message, PRIMARY_REASON_HEADER)
        if primary:
            return SUPPRESSED_PREFIX + primary
        try:
            return SUPPRESSED_PREFIX + str(self._codec.decode("SuppressedSend", message.value())["primary_reason"])
        except DecodeError:
            return SUPPRESSED_PREFIX + "?"


def render(console: Console, summary: WhatIfSummary) -> None:
    labels = sorted(set(summary.then) | set(summary.now), key=lambda label: (label != ALLOWED, label))
    table = Table(
        title=f"What-if: {summary.evaluated} record(s) of {summary.topic} decided against the current state (nothing produced)",
        title_justify="left",
    )
    for column, justify in (("outcome", "left"), ("then", "right"), ("now", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for label in labels:
        table.add_row(label, str(summary.then.get(label, 0)), str(summary.now.get(label, 0)))
    console.print(table)
    transitions = Table(title=f"Changes ({summary.changed} decided differently now)", title_justify="left")
    for column in ("then", "now", "count"):
        transitions.add_column(column, justify="right" if column == "count" else "left")
    for (then, now), n in sorted(summary.transitions.items(), key=lambda item: (-item[1], item[0])):
        if then != now:
            transitions.add_row(then, now, str(n))
    console.print(transitions)
    notes = [f"scanned {summary.scanned}, matched {summary.matched}"]
    if summary.limit_reached:
        notes.append("stopped at --limit")
    if summary.undecodable:
        notes.append(f"{summary.undecodable} undecodable skipped")
    console.print("; ".join(notes))


@click.command("what-if")
@click.option(
    "--topic",
    "source",
    type=click.Choice(["suppressed", "requested"], case_sensitive=False),
    default="suppressed",
    show_default=True,
    help="Which records to evaluate: sends.suppressed or sends.requested.",
)
@click.option(
    "--since",
    type=TimeParam(),
    default=None,
    help="At or after this time (epoch ms or ISO-8601): decided_at for suppressed, requested_at for requested.",
)
@click.option("--until", type=TimeParam(), default=None, help="Before this time.")
@click.option(
    "--reason",
    "reasons",
    multiple=True,
    metavar="REASON",
    type=click.Choice([r.value for r in SuppressionReason], case_sensitive=False),
    help="Suppressed records with this reason only (repeatable; --topic suppressed).",
)
@click.option("--org", "orgs", multiple=True, help="Only this organization (repeatable).")
@click.option("--campaign", "campaigns", multiple=True, help="Only this campaign (repeatable).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Evaluate at most this many matching records.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.pass_obj
def what_if_command(
    settings: Settings,
    source: str,
    since: int | None,
    until: int | None,
    reasons: tuple[str, ...],
    orgs: tuple[str, ...],
    campaigns: tuple[str, ...],
    limit: int | None,
    as_json: bool,
) -> None:
    """Decide a window of past sends against the current state and compare with what was decided then.

    Produces nothing. For --topic requested, "then" is looked up by message key
    in sends.allowed / sends.suppressed / sends.dead-letter (UNKNOWN if absent).
    """

    source = source.lower()
    if reasons and source != "suppressed":
        raise click.UsageError("--reason selects suppressed records: use it with --topic suppressed")
    try:
        record_filter = RecordFilter(since, until, frozenset(r.upper() for r in reasons), frozenset(orgs), frozenset(campaigns))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--since' / '--until'") from None

    def body() -> None:
        topics = settings.topics
        needed = (
            [topics.suppressed] if source == "suppressed" else [topics.requested, topics.allowed, topics.suppressed, topics.dead_letter]
        )
        live = LiveState.connect(settings, topics=needed)
        bar = progress_bar(err_console, f"what-if over {source}", disable=as_json)
        task = bar.add_task("records", total=None)
        try:
            with bar:
                summary = WhatIf(
                    settings=settings,
                    live=live,
                    codec=AvroCodec.from_settings(settings),
                    source=source,
                    record_filter=record_filter,
                    limit=limit,
                    on_progress=lambda done, total: bar.update(task, completed=done, total=total),
                ).run()
        finally:
            live.close()
        if as_json:
            echo_json(summary.to_json())
        else:
            render(Console(width=max(console.width, 120)), summary)

    run_guarded(body)
