"""The bench's two throughput runs, timed the same way: the bare transactional loop and the gate.

The bare loop is the gate's Kafka skeleton with no decode and no state: the
same consumer and producer configurations (``worker.kafka.clients``), batches
from ``consume()``, every record produced with a fixed set of decision
headers, transactions committed on the gate's timer/count with
``send_offsets_to_transaction``. Whatever it reaches is the floor of what any
gate costs on this cluster; :func:`measure_gate` runs the real gate over the
same input and splits its time by phase.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition
from rich.console import Console

from worker.config import Settings
from worker.errors import KafkaFatal, SendgateError
from worker.gate.outputs import Headers
from worker.kafka.classification import is_fatal
from worker.kafka.clients import make_consumer, static_member_config, transactional_producer_config
from worker.kafka.messages import partition_offset
from worker.loadgen.progress import progress_bar, tracked
from worker.runtime import StopSignal

logger = logging.getLogger(__name__)

PHASES = ("consume", "decode", "state", "produce", "commit")
NO_PROGRESS_TIMEOUT_SECONDS = 120.0


class GateStalled(SendgateError):
    """The measured gate stopped making progress or failed; the message says how far it got."""

# What an allowed record carries (SPEC §5); constant here, so producing costs
# what the gate's produce costs without the decision behind it.
HEADERS: Headers = [
    ("sendgate-decision", b"ALLOWED"),
    ("sendgate-policy-version", b"baseline"),
    ("sendgate-decided-at", b"0000000000000"),
    ("sendgate-state", b"gen=baseline;applied=0:0"),
]


@dataclass
class BaselineResult:
    """Records moved; the rate counts those after the first batch, over the time from
    that batch's end to the last commit (how the bench times the gate, too)."""

    records: int = 0
    measured_records: int = 0
    seconds: float = 0.0
    batches: int = 0
    transactions: int = 0

    @property
    def records_per_second(self) -> float:
        return self.measured_records / self.seconds if self.seconds > 0 else 0.0


class BareTransactionalLoop:
    """consume → produce (input key and value, fixed headers) → commit with offsets, nothing else."""

    def __init__(self, *, settings: Settings, input_topic: str, output_topic: str, group_id: str, stop: StopSignal | None = None) -> None:
        self._gate = settings.gate
        self._input = input_topic
        self._output = output_topic
        self._consumer = make_consumer(settings, group_id=group_id, **static_member_config(f"{group_id}-member"))
        self._producer = Producer(transactional_producer_config(settings, transactional_id=f"{group_id}-txn"))
        self._stop = stop or StopSignal()
        self._next_offsets: dict[int, int] = {}
        self._in_transaction = False
        self._transaction_started = 0.0
        self._transaction_messages = 0

    def run(self, *, max_messages: int, timeout_seconds: float = 600.0) -> BaselineResult:
        """Move ``max_messages`` records (or stop after ``timeout_seconds``); the counting mirrors the gate's."""
        result = BaselineResult()
        self._producer.init_transactions(30)
        self._consumer.subscribe([self._input])
        deadline = time.monotonic() + timeout_seconds
        first_done_at: float | None = None
        try:
            while not self._stop.is_set and time.monotonic() < deadline:
                if result.records >= max_messages and not self._in_transaction:
                    break
                batch = self._consumer.consume(self._gate.batch_max_messages, self._gate.poll_timeout_seconds)
                messages = [m for m in batch if _usable(m)]
                if messages:
                    self._produce(messages)
                    result.records += len(messages)
                    result.batches += 1
                    if first_done_at is None:
                        first_done_at = time.monotonic()
                        first_batch = len(messages)
                if self._in_transaction and self._commit_due():
                    self._commit()
                    result.transactions += 1
            if self._in_transaction:
                self._commit()
                result.transactions += 1
        except KafkaException as exc:
            raise KafkaFatal(f"baseline loop: {exc.args[0]}") from exc
        finally:
            self._consumer.close()
        if first_done_at is not None:
            result.seconds = time.monotonic() - first_done_at
            result.measured_records = result.records - first_batch
        return result

    def _produce(self, messages: list[Message]) -> None:
        if not self._in_transaction:
            self._producer.begin_transaction()
            self._in_transaction = True
            self._transaction_started = time.monotonic()
            self._transaction_messages = 0
        produce = self._producer.produce
        output = self._output
        for message in messages:
            while True:
                try:
                    produce(output, value=message.value(), key=message.key(), headers=HEADERS)
                    break
                except BufferError:
                    self._producer.poll(0.05)
            partition, offset = partition_offset(message)
            self._next_offsets[partition] = offset + 1
        self._transaction_messages += len(messages)

    def _commit_due(self) -> bool:
        return (
            self._transaction_messages >= self._gate.commit_every_messages
            or time.monotonic() - self._transaction_started >= self._gate.commit_interval_seconds
        )

    def _commit(self) -> None:
        offsets = [TopicPartition(self._input, p, o) for p, o in self._next_offsets.items()]
        if offsets:
            self._producer.send_offsets_to_transaction(offsets, self._consumer.consumer_group_metadata(), 30)
        self._producer.commit_transaction(60)
        self._in_transaction = False
        self._next_offsets.clear()


def _usable(message: Message) -> bool:
    error = message.error()
    if error is None:
        return True
    if is_fatal(error):
        raise KafkaFatal(f"baseline consumer: {error}")
    if error.code() != KafkaError._PARTITION_EOF:
        logger.warning("baseline consumer error", extra={"error": str(error)})
    return False



# -- the real gate, timed ------------------------------------------------------------
class _DecideTimer:
    """Times ``DecisionPolicy.decide`` inside the gate, which counts it in its produce phase.

    Two ``perf_counter`` calls per request: well under 1 % of a decision's cost.
    """

    def __init__(self, decide: Callable[..., Any]) -> None:
        self._decide = decide
        self.seconds = 0.0

    def __call__(self, prepared: Any, facts: Any) -> Any:
        started = time.perf_counter()
        decision = self._decide(prepared, facts)
        self.seconds += time.perf_counter() - started
        return decision

    @classmethod
    def install(cls, gate: Any) -> _DecideTimer | None:
        policy = getattr(gate, "_policy", None)  # private: degrade to "not separated" if it moves
        if policy is None or not callable(getattr(policy, "decide", None)):
            return None
        timer = cls(policy.decide)
        policy.decide = timer
        return timer


def _profiler() -> Any:
    """A started pyinstrument profiler of the calling thread."""
    from pyinstrument import Profiler  # type: ignore[import-not-found]  # optional (--profile-gate), not a dependency

    profiler = Profiler(interval=0.002)  # coarse enough to keep its own cost small
    profiler.start()
    return profiler


def _phase_sums(registry: Any) -> dict[str, float]:
    name = "sendgate_gate_batch_phase_seconds_sum"
    return {phase: registry.get_sample_value(name, {"phase": phase}) or 0.0 for phase in PHASES}


def _evalsha_calls(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))


def measure_gate(
    settings: Settings, records: int, client: redis.Redis, *, console: Console | None, profile: Path | None = None
) -> dict[str, Any]:
    """Run the real gate over ``records`` waiting input records; counting starts after its first batch.

    With ``profile``, the gate's thread runs under pyinstrument (a sampling
    profiler, installed separately) and its call tree is written there.
    """
    from worker.assembly import Runtime, build_gate

    runtime = Runtime.create(settings)
    gate = build_gate(runtime)
    timer = _DecideTimer.install(gate)
    failure: list[BaseException] = []

    def work() -> None:
        profiler = _profiler() if profile is not None else None
        try:
            gate.run(max_messages=records)
        except BaseException as exc:  # re-raised on this thread
            failure.append(exc)
        finally:
            if profiler is not None and profile is not None:
                profiler.stop()
                profile.parent.mkdir(parents=True, exist_ok=True)
                profile.write_text(profiler.output_text(unicode=False, color=False))

    evalsha_before = _evalsha_calls(client)
    thread = threading.Thread(target=work, name="sendgate-bench-gate", daemon=True)
    thread.start()
    first: tuple[float, int, int, dict[str, float], float] | None = None
    last_change, last_consumed = time.monotonic(), 0
    with progress_bar(console) as progress:
        update = tracked(progress, "gate", records)
        while thread.is_alive():
            thread.join(0.02)
            p = gate.progress
            now = time.monotonic()
            if first is None and p.consumed > 0:
                first = (now, p.consumed, p.batches, _phase_sums(runtime.metrics.registry), timer.seconds if timer else 0.0)
            if p.consumed != last_consumed:
                last_change, last_consumed = now, p.consumed
                update(p.consumed)
            elif now - last_change > NO_PROGRESS_TIMEOUT_SECONDS:
                runtime.stop.set()
                thread.join(30)
                raise GateStalled(f"gate: no progress for {NO_PROGRESS_TIMEOUT_SECONDS:g}s ({p.fail_closed_pauses} fail-closed pauses)")
    ended = time.monotonic()
    evalsha = _evalsha_calls(client) - evalsha_before
    if failure:
        raise GateStalled(f"gate: {type(failure[0]).__name__}: {failure[0]}") from failure[0]
    p = gate.progress
    if first is None or p.consumed < records:
        raise GateStalled(f"gate: decided {p.consumed} of {records} records")
    started, consumed_first, batches_first, sums_first, decide_first = first
    measured = p.consumed - consumed_first
    seconds = ended - started
    sums = {phase: value - sums_first[phase] for phase, value in _phase_sums(runtime.metrics.registry).items()}
    if timer is not None:
        sums["decide"] = timer.seconds - decide_first
        sums["produce"] -= sums["decide"]  # the gate times decide inside produce
    sums["other"] = max(0.0, seconds - sum(sums.values()))
    batches = p.batches - batches_first
    return {
        "records": p.consumed,
        "seconds": round(seconds, 3),
        "records_per_second": round(measured / seconds) if seconds > 0 else 0,
        "allowed": p.allowed,
        "suppressed": p.suppressed,
        "dead_lettered": p.dead_lettered,
        "suppressed_share": round(p.suppressed / p.consumed, 4),
        "batches": p.batches,
        "mean_batch": round(p.consumed / p.batches, 1) if p.batches else 0,
        "transactions": p.committed_transactions,
        "fail_closed_pauses": p.fail_closed_pauses,
        "state_round_trips": p.state_round_trips,
        "round_trips_per_batch": round(p.state_round_trips / p.batches, 3) if p.batches else None,
        "redis_evalsha_calls": evalsha,
        "evalsha_per_batch": round(evalsha / p.batches, 3) if p.batches else None,
        "phases": {
            phase: {
                "seconds": round(value, 3),
                "share": round(value / seconds, 3) if seconds > 0 else 0,
                "us_per_record": round(value / measured * 1e6, 1) if measured else 0,
            }
            for phase, value in sums.items()
        },
        "phase_note": "decode includes prepare; state is the wait for the batch's state read (Redis and the freshness barrier) "
        "that deciding and producing the previous batch did not hide; "
        + ("decide is timed around DecisionPolicy.decide and taken out of produce" if timer else "decide is inside produce"),
        "measured_batches": batches,
    }
