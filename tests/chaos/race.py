"""SPEC §6.3 under a race: sends for an address produced milliseconds after its opt-out was acknowledged.

One thread produces opt-outs one at a time and waits for each
acknowledgement; the other produces sends, most of them to addresses whose
opt-out was acknowledged a moment ago (they must be suppressed), some to the
address about to be opted out (either outcome is right), some to anyone. The
two kinds of record have different keys, so they land on different partitions.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass

from tests.chaos.checker import Verdict
from tests.chaos.faults import Measured, finish, start_fleet
from tests.chaos.run import ChaosRun
from tests.chaos.workload import T
from worker.models import Category, Channel


@dataclass
class RaceOutcome:
    opt_outs: int
    sends: int
    after_ack: int  # sends produced after their subject's opt-out was acknowledged: must be suppressed
    within_10ms: int  # ... of which produced within 10 ms of the acknowledgement
    median_gap_ms: float


def run_race(
    run: ChaosRun,
    *,
    opt_outs: int,
    sends_per_opt_out: int = 8,
    gates: int = 2,
    seed: int = 5,
    opt_out_spacing: float = 0.01,
) -> tuple[Verdict, Measured, RaceOutcome]:
    """Subjects ``0..opt_outs-1`` opt out one by one; the rest of the audience never does."""
    rng = random.Random(seed)
    audience = run.audience
    assert opt_outs < len(audience.emails), "part of the audience must never opt out (their sends are allowed)"
    run.setup_preferences()
    start_fleet(run, gates)
    events, sends = run.events(), run.sends()
    # subject i -> (channel, the opt-out event); SMS opt-outs only for numbers that opted in.
    order = list(range(opt_outs))
    rng.shuffle(order)
    opted_in = set(run.traffic.opted_in)
    acked: deque[int] = deque(maxlen=8)
    upcoming: list[int] = [order[0]]
    done = threading.Event()
    failure: list[BaseException] = []

    def channel_of(i: int) -> Channel:
        return Channel.SMS if i in opted_in and i % 2 else Channel.EMAIL

    def opt_out_thread() -> None:
        try:
            for n, i in enumerate(order):
                upcoming[0] = order[n + 1] if n + 1 < len(order) else i
                if channel_of(i) is Channel.SMS:
                    events.emit([audience.event(T.SMS_OPT_OUT, i)])
                else:
                    events.emit([audience.event(T.EMAIL_OPT_OUT_ORGANIZATION, i)])
                acked.append(i)  # only after emit() returned: the acknowledgement is in the ledger
                time.sleep(rng.uniform(0, 2 * opt_out_spacing))
        except BaseException as exc:
            failure.append(exc)
        finally:
            done.set()

    started = time.monotonic()
    bystanders = range(opt_outs, len(audience.emails))
    with run.monitor() as monitor:
        # The gates must be deciding before the race starts, or they would only see its end.
        for _ in range(20):
            i = rng.choice(bystanders)
            sends.send(audience.request(run.ledger.next_id(), i, channel=Channel.EMAIL, category=Category.MARKETING, user="user-1"))
        sends.flush()
        monitor.wait_deciding()
        thread = threading.Thread(target=opt_out_thread, name="race-opt-outs", daemon=True)
        thread.start()
        send_rng = random.Random(seed + 1)
        while not done.is_set():
            for _ in range(sends_per_opt_out):
                roll = send_rng.random()
                if roll < 0.6 and acked:
                    i = acked[-1] if send_rng.random() < 0.5 else send_rng.choice(list(acked))
                elif roll < 0.85:
                    i = upcoming[0]
                else:
                    i = send_rng.choice(bystanders)
                channel = channel_of(i)
                request = audience.request(run.ledger.next_id(), i, channel=channel, category=Category.MARKETING, user="user-1")
                sends.send(request)
            time.sleep(0.001)
        thread.join(30)
        if failure:
            raise failure[0]
        sends.flush()
        monitor.wait_caught_up(len(run.ledger.sends), timeout=300)
        measured = Measured(longest_stall=monitor.longest_stall())
    measured.duration = time.monotonic() - started
    finish(run, measured)
    verdict = run.check()
    return verdict, measured, _race_outcome(run, opt_outs)


def _race_outcome(run: ChaosRun, opt_outs: int) -> RaceOutcome:
    acked_at: dict[str, float] = {}
    for acked in run.ledger.events:
        event = acked.event
        if event.type in (T.EMAIL_OPT_OUT_ORGANIZATION, T.SMS_OPT_OUT):
            acked_at[event.email or event.phone or ""] = acked.acked_at
    gaps = [
        record.produced_at - acked_at[record.request.to]
        for record in run.ledger.sends.values()
        if record.request is not None and record.request.to in acked_at and record.produced_at > acked_at[record.request.to]
    ]
    return RaceOutcome(
        opt_outs=opt_outs,
        sends=len(run.ledger.sends),
        after_ack=len(gaps),
        within_10ms=sum(1 for g in gaps if g < 0.010),
        median_gap_ms=statistics.median(gaps) * 1000 if gaps else 0.0,
    )
