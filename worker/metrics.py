"""Every Prometheus metric of sendgate, on one injected registry.

Labels are low-cardinality enums only (channel, category, decision, reason,
phase, result, event type): never an address, organization or message id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PHASE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """Holds the metric objects; create one per process (or per test) with its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.decisions = Counter(
            "sendgate_decisions_total",
            "Send requests decided, by channel, category, decision and primary reason.",
            ["channel", "category", "decision", "reason"],
            registry=r,
        )
        self.suppression_reasons = Counter(
            "sendgate_suppression_reasons_total",
            "Every reason that applied to a suppressed request (a request may count under several).",
            ["channel", "category", "reason"],
            registry=r,
        )
        self.transactional_bypasses = Counter(
            "sendgate_transactional_bypass_total",
            "Transactional emails allowed although an email opt-out would have stopped them, by reason.",
            ["reason"],
            registry=r,
        )
        self.dead_letters = Counter(
            "sendgate_dead_letters_total", "Undecodable send requests routed to the dead-letter topic.", ["error_class"], registry=r
        )
        self.batch_phase = Histogram(
            "sendgate_gate_batch_phase_seconds",
            "Time spent per gate batch in each phase.",
            ["phase"],
            buckets=PHASE_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "sendgate_gate_batch_messages", "Messages per consumed gate batch.", buckets=(1, 10, 50, 100, 250, 500, 1000, 5000), registry=r
        )
        self.decision_latency = Histogram(
            "sendgate_decision_latency_seconds",
            "From a request's requested_at to its decision being produced.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.transactions = Counter(
            "sendgate_transactions_total", "Kafka transactions of the gate, by result.", ["result"], registry=r
        )
        self.kafka_errors = Counter(
            "sendgate_kafka_errors_total", "Kafka errors seen by the workers, by kind.", ["kind"], registry=r
        )
        self.kafka_recoveries = Counter(
            "sendgate_kafka_recoveries_total",
            "Kafka clients rebuilt in-process instead of exiting (a fatal transactional producer, "
            "a consumer fenced by its own rejoin), by worker and client.",
            ["worker", "client"],
            registry=r,
        )
        self.state_errors = Counter(
            "sendgate_state_errors_total", "State-store (Redis) errors and not-ready conditions, by kind.", ["kind"], registry=r
        )
        self.state_ready = Gauge(
            "sendgate_state_ready", "1 when the state store is complete and current enough to decide, else 0.", registry=r
        )
        self.fail_closed_pauses = Counter(
            "sendgate_fail_closed_pauses_total", "Times the gate paused instead of deciding, by cause.", ["cause"], registry=r
        )
        self.fail_closed_seconds = Counter(
            "sendgate_fail_closed_seconds_total", "Seconds the gate spent paused (failing closed).", registry=r
        )
        self.barrier_waits = Counter(
            "sendgate_barrier_waits_total", "Batches that waited for the applier to reach the freshness barrier.", registry=r
        )
        self.barrier_wait_seconds = Histogram(
            "sendgate_barrier_wait_seconds",
            "Time a batch waited for the applier to apply every acknowledged preference event.",
            buckets=PHASE_BUCKETS,
            registry=r,
        )
        self.preference_events = Counter(
            "sendgate_preference_events_total",
            "Preference events handled by the applier, by type and result.",
            ["type", "result"],
            registry=r,
        )
        self.preference_events_miskeyed = Counter(
            "sendgate_preference_events_miskeyed_total",
            "Preference events whose Kafka key is not SPEC §4's key of their normalised subject (applied all the same), by type.",
            ["type"],
            registry=r,
        )
        self.preference_lag = Gauge(
            "sendgate_preference_lag_events", "Preference events acknowledged by Kafka but not yet applied.", registry=r
        )
        self.preference_batch_seconds = Histogram(
            "sendgate_preference_batch_seconds", "Time to apply one batch of preference events.", buckets=PHASE_BUCKETS, registry=r
        )
        self.state_generation_resets = Counter(
            "sendgate_state_rebuilds_total", "Times the applier found the store emptied and rebuilt it.", registry=r
        )
