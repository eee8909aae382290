"""What one bench run is: its sizes, and the names (topics, groups, key prefix) of its parts."""

from __future__ import annotations

import dataclasses
import time

from worker.config import Settings
from worker.errors import SendgateError


class BenchFailed(SendgateError):
    """A bench stage could not complete; the message names the stage and why."""


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """Sizes of one run; :data:`QUICK` is the seconds-long preset the tests use."""

    sends: int = 500_000
    opt_outs: int = 1_000_000
    contact_facts: int = 100_000
    sms_opt_ins: int = 100_000
    clean_contacts: int = 250_000
    orgs: int = 50
    partitions: int = 6
    rounds: int = 3  # gate runs, each between two baseline runs
    min_run_seconds: float = 3.0  # measured time of each baseline and gate run, passes repeated until reached
    latency_seconds: float = 20.0
    latency_rate: float | None = None  # None: half the gate's measured throughput
    suppressed_share: float = 0.2
    seed: int = 1


# Sends: several of the gate's batches (2,000 at most each), since a run counts
# from the end of its first batch; 2,000 sends could be one batch, measuring nothing.
QUICK = BenchConfig(
    sends=10_000, opt_outs=3_000, contact_facts=300, sms_opt_ins=300, clean_contacts=1_000,
    orgs=3, partitions=3, latency_seconds=2.0, rounds=1, min_run_seconds=0.0,
)


@dataclasses.dataclass(frozen=True)
class BenchSettings:
    """The settings of each part of a run: all names carry the run's prefix."""

    prefix: str
    main: Settings  # preload, rebuild and the gate
    baseline: Settings  # same input, its own output topic and group
    latency: Settings  # same state, its own send topics and group

    def topics(self) -> list[str]:
        names = [*self.main.topics.all_names(), self.baseline.topics.allowed, *self.latency.topics.all_names()]
        return sorted(set(names))

    def groups(self) -> list[str]:
        return [self.main.gate.group_id, self.main.preferences.group_id, self.baseline.gate.group_id, self.latency.gate.group_id]


def bench_settings(base: Settings, *, run_id: str, partitions: int) -> BenchSettings:
    prefix = f"bench-{run_id}"
    topics = base.topics.model_copy(
        update={
            "requested": f"{prefix}.sends.requested", "allowed": f"{prefix}.sends.allowed",
            "suppressed": f"{prefix}.sends.suppressed", "dead_letter": f"{prefix}.sends.dead-letter",
            "preferences": f"{prefix}.preferences.changed", "rejected": f"{prefix}.preferences.rejected",
            "partitions": partitions, "preference_partitions": partitions,
        }
    )
    common = {
        "topics": topics,
        "state": base.state.model_copy(update={"key_prefix": f"sg{prefix}"}),
        "preferences": base.preferences.model_copy(update={"group_id": f"{prefix}-prefs"}),
        "http": base.http.model_copy(update={"enabled": False}),
    }
    main = base.model_copy(
        update={**common, "gate": base.gate.model_copy(update={"group_id": f"{prefix}-gate", "instance_id": f"{prefix}-gate"})}
    )
    baseline = main.model_copy(
        update={
            "topics": topics.model_copy(update={"allowed": f"{prefix}.baseline.out"}),
            "gate": main.gate.model_copy(update={"group_id": f"{prefix}-baseline", "instance_id": f"{prefix}-baseline"}),
        }
    )
    latency = main.model_copy(
        update={
            "topics": topics.model_copy(
                update={
                    name: f"{prefix}.latency.{name.replace('_', '-')}" for name in ("requested", "allowed", "suppressed", "dead_letter")
                }
            ),
            "gate": main.gate.model_copy(update={"group_id": f"{prefix}-latency-gate", "instance_id": f"{prefix}-latency"}),
        }
    )
    return BenchSettings(prefix, main, baseline, latency)


def now_ms() -> int:
    return int(time.time() * 1000)
