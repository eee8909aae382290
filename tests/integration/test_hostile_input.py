"""SPEC §6.5: hostile input never stops the workers and is never silently dropped.

Short version of the chaos run (tests/chaos/test_hostile_chaos.py): fuzzed,
truncated, huge and incompatible values mixed into valid traffic, invalid and
undecodable preference events; every one must land where SPEC §5 says, with its reason.
"""

from __future__ import annotations

from confluent_kafka import Consumer, TopicPartition

from tests.chaos import report
from tests.chaos.hostile import assert_hostile_outcome, run_hostile
from tests.chaos.run import chaos_run, with_services
from tests.chaos.workload import DEAD_LETTER
from tests.integration.support import WorkerThread, running_applier
from worker.assembly import Runtime, build_gate
from worker.models import Category, Channel


def test_hostile_values_and_events_land_with_their_reason_and_the_workers_stay_up(settings, tmp_path):
    settings = with_services(settings, partitions=6)
    with report.fault("hostile input (short)") as row:
        with chaos_run(settings, tmp_path / "logs", audience_size=500) as run:
            verdict, _measured, outcome = run_hostile(run, valid_sends=2000, fuzz=200)
            row.fill(
                [verdict], pause="-",
                note=f"{len(outcome.hostile.poison)} bad values, "
                f"{len(outcome.events.expected) + len(outcome.events.undecodable)} bad preference events",
            )
            assert_hostile_outcome(verdict, outcome, run.ledger)
        assert verdict.clean, verdict.describe()


def test_a_batch_with_poison_before_valid_records_commits_the_offset_after_its_last_record(settings, tmp_path):
    """A dead letter must not move the partition's committed offset back below the requests decided after it.

    worker/gate/pipeline.py (``_process``) sets ``_next_offsets[partition]``
    for the decoded records first and for the poison afterwards, so poison at a
    lower offset of the same batch wins: the transaction commits an offset
    before records it has already decided, and whoever reads the partition next
    (a restarted gate, another gate after a rebalance) decides them again.
    """
    settings = with_services(settings, partitions=1)
    with chaos_run(settings, tmp_path / "logs", audience_size=20) as run:
        producer = run.sends()
        audience = run.audience

        def valid(i: int) -> None:
            request = audience.request(run.ledger.next_id(), i, channel=Channel.EMAIL, category=Category.TRANSACTIONAL, user="user-1")
            producer.send(request)

        for i in range(5):
            valid(i)
        producer.raw(b"\x07 poison between valid requests", expect=DEAD_LETTER, label="poison")
        for i in range(5, 15):
            valid(i)
        producer.flush()
        total = len(run.ledger.sends)
        with running_applier(settings):
            for _ in range(2):  # one batch, then a second gate that must find nothing left to decide
                runtime = Runtime.create(settings)
                gate = build_gate(runtime)
                WorkerThread(runtime, lambda gate=gate: gate.run(idle_exit_seconds=3)).thread.join(60)
        reader = Consumer({**settings.kafka.common_config(), "group.id": settings.gate.group_id})
        try:
            committed = reader.committed([TopicPartition(settings.topics.requested, 0)], timeout=10)[0].offset
        finally:
            reader.close()
        verdict = run.check()
    assert (committed, verdict.duplicated) == (total, []), (
        f"committed offset {committed} of {total}; decided twice: {len(verdict.duplicated)} ({verdict.describe()})"
    )
