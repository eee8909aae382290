"""A replay run: suppressed sends decided again, those now allowed re-submitted, each message at most once.

The command is :mod:`worker.ops.replay`.

Reads a window of ``sends.suppressed`` (filters: time on ``decided_at``,
reason, organization, campaign), decides each record again on the live store
behind the gate's freshness barrier (see :class:`~worker.ops.live_state.LiveState`:
an empty, rebuilding or lagging store stops the run, nothing is released on
it), and produces those now allowed to ``sends.requested`` — the original
``SendRequest`` re-encoded, the same key, with provenance headers. The gate
then decides them like any request; replay only chooses what to re-submit.

Never twice: the replay ledger
------------------------------
One Redis key per (organization, message_id) — a keyed BLAKE2b digest of
both with the store's hash secret, under ``<key_prefix>-replay:`` — records
that the message was released. The prefix sits beside the store's ``<key_prefix>:``
keys on purpose: ``rebuild-state`` empties those (they are a cache of
``preferences.changed``), while the ledger is the only record of what was
released and must survive a rebuild. Each release goes:

1. **claim** — ``SET key "c|token|claimed_at" NX PX ttl``; a key that exists
   means the message was released (or is being released) already: skip it;
2. **produce** with an idempotent producer (``acks=all``), the claim token in
   the ``sendgate-replay-token`` header, then **flush**;
3. **confirm** — compare-and-set the claim to ``"d|token|released_at|partition:offset"``.

A crash (or a failed delivery, or Redis lost before step 3) leaves a claim
without confirmation: the message is *in doubt*, never silently lost and never
re-sent blindly. A later run resolves a claim older than ``--in-doubt-after``
(well past the producer's delivery timeout, so no write of the crashed run can
still land) by looking for its token in ``sends.requested``: found → the claim
is confirmed (it was sent); not found → the message is claimed anew and
released. Younger claims (another run may be producing them) are only reported.

The ledger dedupes by message, not by record: a message suppressed again after
its replay (e.g. re-silenced before the gate saw the released copy) is not
released a second time within the window, because ``sends.suppressed`` cannot
tell whether that copy or another one of the same message reached
``sends.allowed``. The summary counts these as "suppressed again after a
replay". Records decided longer ago than the window (``--dedupe-window``,
default 30 days) are not replayed at all, and a marker lives for the longer of
the window and 30 days, plus a day: while a record is eligible, the marker of
any earlier release of its message still exists. (The 30-day floor means a run
with a short window narrows what it replays without shortening what later
runs rely on; the topic's own retention is 7 days by default.)

Losing the Redis data loses the ledger: the store must not evict keys (checked
at start), and the released copies stay identifiable in ``sends.requested`` by
their ``sendgate-replay-of`` header for the topic's retention.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaException, Message, Producer

from worker.codec import AvroCodec
from worker.codec.errors import DecodeError
from worker.config import Settings
from worker.errors import ServiceUnreachable
from worker.kafka.messages import header
from worker.models import SendRequest, SuppressionReason
from worker.ops.live_state import LiveState
from worker.ops.replay_ledger import LedgerEntry, ReplayLedger
from worker.ops.topic_reader import RecordFilter, TopicWindow, parse_duration, position

logger = logging.getLogger(__name__)

REPLAY_OF_HEADER = "sendgate-replay-of"
REPLAYED_AT_HEADER = "sendgate-replayed-at"
REPLAY_TOKEN_HEADER = "sendgate-replay-token"

DEFAULT_WINDOW = "30d"
DEFAULT_IN_DOUBT_AFTER = "5m"
# librdkafka gives up on an undelivered message after this; an in-doubt claim
# must be much older before its absence from the topic proves it was not sent.
DELIVERY_TIMEOUT_MS = 30_000
MIN_IN_DOUBT_AFTER_MS = 4 * DELIVERY_TIMEOUT_MS
# The gate re-decides a released copy within seconds; a day covers a backlog.
MARKER_MARGIN_MS = 24 * 3_600_000
BATCH_SIZE = 500


@dataclass
class ReplaySummary:
    """What a run saw and did; ``released`` is "would release" in a dry run."""

    dry_run: bool = False
    scanned: int = 0
    undecodable: int = 0
    matched: int = 0
    older_than_window: int = 0
    still_suppressed: Counter[str] = field(default_factory=Counter)
    released: Counter[str] = field(default_factory=Counter)
    already_replayed: int = 0
    resuppressed_after_replay: int = 0
    in_doubt: int = 0
    in_doubt_found_sent: int = 0
    in_doubt_released_again: int = 0
    unconfirmed_this_run: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "scanned": self.scanned,
            "undecodable": self.undecodable,
            "matched": self.matched,
            "older_than_window": self.older_than_window,
            "still_suppressed": dict(self.still_suppressed),
            "still_suppressed_total": sum(self.still_suppressed.values()),
            "released": dict(self.released),
            "released_total": sum(self.released.values()),
            "already_replayed": self.already_replayed,
            "resuppressed_after_replay": self.resuppressed_after_replay,
            "in_doubt": self.in_doubt,
            "in_doubt_found_sent": self.in_doubt_found_sent,
            "in_doubt_released_again": self.in_doubt_released_again,
            "unconfirmed_this_run": self.unconfirmed_this_run,
        }


@dataclass
class _Candidate:
    """A matched record the current state allows."""

    message: Message
    record: dict[str, Any]
    key: str
    claim: LedgerEntry | None = None
    claimed_at: float = 0.0  # monotonic

    @property
    def reason(self) -> str:
        return str(self.record["primary_reason"])


class Replayer:
    """One replay run over a window of ``sends.suppressed``."""

    def __init__(
        self,
        *,
        settings: Settings,
        live: LiveState,
        ledger: ReplayLedger,
        codec: AvroCodec,
        producer: Producer | None,
        record_filter: RecordFilter,
        window_ms: int,
        in_doubt_after_ms: int,
        on_progress: Callable[[int, int], None] = lambda done, total: None,
    ) -> None:
        self._settings = settings
        self._topics = settings.topics
        self._live = live
        self._ledger = ledger
        self._codec = codec
        self._producer = producer  # None: dry run
        self._filter = record_filter
        self._window_ms = window_ms
        self._in_doubt_after_ms = in_doubt_after_ms
        self._on_progress = on_progress
        self._run_id = uuid.uuid4().hex[:12]
        self._sequence = 0
        self._stale: list[tuple[_Candidate, LedgerEntry]] = []
        self._seen_this_run: set[str] = set()  # dry run: keys it would claim
        self.summary = ReplaySummary(dry_run=producer is None)

    def run(self) -> ReplaySummary:
        started_ms = int(time.time() * 1000)
        oldest_eligible = started_ms - self._window_ms
        batch: list[tuple[Message, dict[str, Any]]] = []
        with TopicWindow(self._settings, self._topics.suppressed, since_ms=self._filter.since_ms) as window:
            total = window.total
            self._on_progress(0, total)
            for message in window:
                self.summary.scanned += 1
                record = self._decode(message)
                if record is None or not self._filter.matches_suppressed(record):
                    continue
                self.summary.matched += 1
                if record["decided_at"] < oldest_eligible:
                    self.summary.older_than_window += 1
                    continue
                batch.append((message, record))
                if len(batch) >= BATCH_SIZE:
                    self._process(batch)
                    batch = []
                    self._on_progress(self.summary.scanned, total)
            if batch:
                self._process(batch)
            self._on_progress(total, total)
        self._resolve_in_doubt()
        counts = {k: v for k, v in self.summary.to_json().items() if isinstance(v, int)}
        logger.info("replay finished", extra={"run": self._run_id, **counts})
        return self.summary

    def _decode(self, message: Message) -> dict[str, Any] | None:
        try:
            return self._codec.decode("SuppressedSend", message.value())
        except DecodeError as exc:
            self.summary.undecodable += 1
            logger.warning("undecodable suppressed record skipped", extra={"at": position(message), "error_class": type(exc).__name__})
            return None

    # -- one batch ------------------------------------------------------------
    def _process(self, batch: list[tuple[Message, dict[str, Any]]]) -> None:
        requests = [SendRequest.from_record(record["request"]) for _, record in batch]
        decisions = self._live.decide(requests)
        candidates: list[_Candidate] = []
        for (message, record), request, decision in zip(batch, requests, decisions, strict=True):
            if not decision.allowed:
                primary = decision.primary_reason or SuppressionReason.INVALID_ADDRESS
                self.summary.still_suppressed[primary.value] += 1
                continue
            candidates.append(_Candidate(message, record, self._ledger.key(request.org_id, request.message_id)))
        if not candidates:
            return
        if self._producer is None:
            self._predict(candidates)
            return
        claims = []
        for candidate in candidates:
            candidate.claim = self._new_claim()
            claims.append((candidate.key, candidate.claim))
        won = self._ledger.claim(claims)
        now = time.monotonic()
        winners = []
        for candidate, ok in zip(candidates, won, strict=True):
            candidate.claimed_at = now
            if ok:
                winners.append(candidate)
        losers = [c for c, ok in zip(candidates, won, strict=True) if not ok]
        for candidate, entry in zip(losers, self._ledger.get([c.key for c in losers]), strict=True):
            self._existing(candidate, entry)
        self._release(winners)

    def _predict(self, candidates: list[_Candidate]) -> None:
        """Dry run: what a real run would do, from the ledger as it is (nothing written)."""
        for candidate, entry in zip(candidates, self._ledger.get([c.key for c in candidates]), strict=True):
            if entry is None and candidate.key not in self._seen_this_run:
                self._seen_this_run.add(candidate.key)
                self.summary.released[candidate.reason] += 1
            elif entry is None:
                self.summary.already_replayed += 1
            elif entry.done:
                self._count_already(candidate, entry)
            else:
                self.summary.in_doubt += 1

    def _existing(self, candidate: _Candidate, entry: LedgerEntry | None) -> None:
        if entry is None:
            # The key expired between SET NX and GET: the next run decides it afresh.
            self.summary.in_doubt += 1
        elif entry.done:
            self._count_already(candidate, entry)
        elif entry.token.startswith(self._run_id + "."):
            self.summary.already_replayed += 1  # the same message twice in this window
        elif int(time.time() * 1000) - entry.at_ms >= self._in_doubt_after_ms:
            self._stale.append((candidate, entry))
        else:
            self.summary.in_doubt += 1  # claimed moments ago, probably by a run still producing it

    def _count_already(self, candidate: _Candidate, entry: LedgerEntry) -> None:
        self.summary.already_replayed += 1
        if candidate.record["decided_at"] > entry.at_ms:
            self.summary.resuppressed_after_replay += 1

    def _new_claim(self) -> LedgerEntry:
        self._sequence += 1
        return LedgerEntry(done=False, token=f"{self._run_id}.{self._sequence}", at_ms=int(time.time() * 1000))

    # -- produce and confirm --------------------------------------------------
    def _release(self, candidates: list[_Candidate]) -> None:
        producer = self._producer
        if producer is None or not candidates:
            return
        results: dict[str, Any] = {}
        handed: list[_Candidate] = []
        failure: KafkaException | None = None
        for index, candidate in enumerate(candidates):
            assert candidate.claim is not None
            # A claim this old may already count as in doubt elsewhere: leave it to the resolver.
            if (time.monotonic() - candidate.claimed_at) * 1000 > self._in_doubt_after_ms / 2:
                self.summary.unconfirmed_this_run += 1
                continue
            replayed_at = int(time.time() * 1000)
            headers: list[tuple[str, str | bytes | None]] = [
                (REPLAY_OF_HEADER, position(candidate.message).encode()),
                (REPLAYED_AT_HEADER, str(replayed_at).encode()),
                (REPLAY_TOKEN_HEADER, candidate.claim.token.encode()),
            ]
            value = self._codec.encode("SendRequest", candidate.record["request"])
            token = candidate.claim.token
            try:
                self._produce(
                    producer, candidate.message.key(), value, headers, lambda err, msg, t=token: results.__setitem__(t, (err, msg))
                )
            except KafkaException as exc:
                # Never handed to librdkafka: this claim and the rest are safe to drop.
                for dropped in candidates[index:]:
                    assert dropped.claim is not None
                    self._ledger.abandon(dropped.key, dropped.claim)
                failure = exc
                break
            handed.append(candidate)
        remaining = producer.flush(DELIVERY_TIMEOUT_MS / 1000 + 5)
        if remaining:
            logger.warning("replay deliveries unconfirmed after flush", extra={"pending": remaining})
        for candidate in handed:
            assert candidate.claim is not None
            error, delivered = results.get(candidate.claim.token, (None, None))
            if delivered is None or error is not None:
                # Maybe written, maybe not: the claim stays, a later run resolves it.
                self.summary.unconfirmed_this_run += 1
                logger.warning(
                    "replay delivery not confirmed: message in doubt", extra={"source": position(candidate.message), "error": str(error)}
                )
                continue
            done = LedgerEntry(True, candidate.claim.token, int(time.time() * 1000), f"{delivered.partition()}:{delivered.offset()}")
            if not self._ledger.confirm(candidate.key, candidate.claim, done):
                self.summary.unconfirmed_this_run += 1
                continue
            self.summary.released[candidate.reason] += 1
        if failure is not None:
            error = failure.args[0]
            raise ServiceUnreachable(f"producing to {self._topics.requested} failed: {error}") from failure

    def _produce(
        self, producer: Producer, key: bytes | None, value: bytes, headers: list[tuple[str, str | bytes | None]], on_delivery: Any
    ) -> None:
        while True:
            try:
                producer.produce(self._topics.requested, key=key, value=value, headers=headers, on_delivery=on_delivery)
                producer.poll(0)
                return
            except BufferError:
                producer.poll(0.1)  # local queue full: let librdkafka send

    # -- in-doubt claims of earlier runs ---------------------------------------
    def _resolve_in_doubt(self) -> None:
        """Claims older than the horizon: sent (token in sends.requested) → confirm; else release again."""
        if not self._stale:
            return
        pending = {entry.token: (candidate, entry) for candidate, entry in self._stale}
        found: dict[str, str] = {}
        since = min(entry.at_ms for _, entry in self._stale)
        # Uncommitted: our writes are not transactional, and another producer's
        # open transaction must not hide them.
        with TopicWindow(self._settings, self._topics.requested, since_ms=since, committed=False) as window:
            for message in window:
                token = header(message, REPLAY_TOKEN_HEADER)
                if token in pending and token not in found:
                    found[token] = f"{message.partition()}:{message.offset()}"
                    if len(found) == len(pending):
                        break
        again: list[_Candidate] = []
        for token, (candidate, entry) in pending.items():
            if token in found:
                done = LedgerEntry(True, token, entry.at_ms, found[token])
                if self._ledger.confirm(candidate.key, entry, done):
                    self.summary.in_doubt_found_sent += 1
                    self.summary.already_replayed += 1
                else:
                    self.summary.in_doubt += 1
                continue
            candidate.claim = self._new_claim()
            if self._ledger.take_over(candidate.key, entry, candidate.claim):
                candidate.claimed_at = time.monotonic()
                again.append(candidate)
            else:
                self.summary.in_doubt += 1  # changed meanwhile: another run resolved it
        before = sum(self.summary.released.values())
        self._release(again)
        self.summary.in_doubt_released_again += sum(self.summary.released.values()) - before
        self._stale.clear()


def marker_ttl_ms(window_ms: int) -> int:
    """How long a release is remembered: never less than the default window, so a run with a
    shorter window (which only narrows what it replays) cannot shorten what later runs rely on."""
    return max(window_ms, parse_duration(DEFAULT_WINDOW)) + MARKER_MARGIN_MS
