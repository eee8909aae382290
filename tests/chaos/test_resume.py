"""The broker-restart pause is read from the committed outputs as documented (no services needed)."""

from __future__ import annotations

from tests.chaos.checker import ALLOWED, Output
from tests.chaos.resume import resume_after, summary, waited_through
from tests.chaos.workload import DECISION, SentRecord

BACK = 1_000.0  # time.time() the broker answered again
WALL = 900.0  # time.time() - time.monotonic() during the run


def _record(message_id: str, partition: int, *, acked: float) -> SentRecord:
    """A send acknowledged at wall time ``acked``."""
    return SentRecord(message_id, b"v", DECISION, None, produced_at=acked - WALL, partition=partition, offset=0, acked_at=acked - WALL)


def _decided(at: float) -> list[Output]:
    return [Output(ALLOWED, None, "", int(at * 1000))]


def test_each_partition_is_measured_from_the_broker_answering_to_its_first_decision_after_it() -> None:
    sends = [
        _record("before", 0, acked=BACK - 5),  # decided before the restart: not part of this pause
        _record("waiting-0", 0, acked=BACK - 2),
        _record("waiting-1", 1, acked=BACK - 2),
        _record("later-1", 1, acked=BACK + 1),
    ]
    outputs = {
        "before": _decided(BACK - 4),
        "waiting-0": _decided(BACK + 1.5),
        "waiting-1": _decided(BACK + 3.0),
        "later-1": _decided(BACK + 3.1),
    }
    resume = resume_after(BACK, sends, outputs, wall_offset=WALL)
    assert resume.per_partition == {0: 1.5, 1: 3.0}
    assert (resume.first, resume.every_partition, resume.slowest_partition) == (1.5, 3.0, 1)


def test_a_partition_with_nothing_waiting_counts_from_its_next_acknowledged_record() -> None:
    # Nothing of partition 2 was waiting when the broker came back: a record
    # acknowledged 4 s later and decided 0.5 s after that is a 0.5 s pause, not 4.5 s.
    sends = [_record("late", 2, acked=BACK + 4)]
    resume = resume_after(BACK, sends, {"late": _decided(BACK + 4.5)}, wall_offset=WALL)
    assert resume.per_partition == {2: 0.5}


def test_an_aborted_early_decision_does_not_count_only_the_committed_one() -> None:
    # The committed output carries the decision that was committed; an earlier
    # decision that was aborted never reached the output and cannot shorten the pause.
    sends = [_record("redone", 0, acked=BACK - 1)]
    resume = resume_after(BACK, sends, {"redone": _decided(BACK + 6)}, wall_offset=WALL)
    assert resume.every_partition == 6.0


def test_summary_reports_median_max_and_how_many_exceed_the_bound() -> None:
    assert summary([1.0, 2.0, 6.0, 3.0]) == "median 2.5 s, max 6.0 s, 1 of 4 > 5 s"
    assert summary([]) == "no pauses measured"


def test_records_handed_over_before_the_broker_was_back_and_decided_after_it_prove_the_restart_landed_on_traffic() -> None:
    sends = [
        _record("decided-before", 0, acked=BACK - 3),
        _record("waited", 0, acked=BACK + 0.2),  # handed over during the outage, acknowledged once back
        _record("after", 1, acked=BACK + 2),
        _record("undecided", 1, acked=BACK - 1),
    ]
    for record in sends:
        record.produced_at = record.acked_at - 0.5 if record.message_id != "waited" else BACK - 4 - WALL
    outputs = {"decided-before": _decided(BACK - 2.5), "waited": _decided(BACK + 0.3), "after": _decided(BACK + 2.1)}
    assert waited_through(BACK, sends, outputs, wall_offset=WALL) == 1
    assert waited_through(BACK - 10, sends, outputs, wall_offset=WALL) == 0, "nothing was handed over before then"
