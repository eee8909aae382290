"""The gate's compiled core alone, without Kafka or Redis: µs per record of prepare and decide.

Not a test (pytest does not collect it): a CPU measurement of
``GateCore.prepare`` and ``PreparedBatch.decide`` on the medium bench's send
stream, with an empty state reply (every fact absent, the common case), so a
change to the core can be timed back to back in seconds:

    .venv/bin/python -m tests.perf.bench_core --sends 50000 --passes 5

Prints per pass µs per record of each phase, the facts and Redis hashes per
record, and how often the core asked the Python reference (fallbacks).
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time

from tests.unit.native_reference import RecordingFallback
from worker.bench.plan import BenchPlan
from worker.codec import AvroCodec
from worker.config import Settings
from worker.gate.core import build_core
from worker.loadgen.producing import encoded_sends


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=2000, help="records per prepare call (the gate's batch_max_messages)")
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args()

    settings = Settings()
    codec = AvroCodec.from_settings(settings)
    plan = BenchPlan(seed=7, orgs=50, opt_outs=100_000, contact_facts=20_000, sms_opt_ins=10_000, clean_contacts=50_000)
    kinds: collections.Counter[str] = collections.Counter()
    values = [value for _, value in encoded_sends(plan.sends(args.sends, base_time_ms=1_700_000_000_000), codec, kinds)]
    batches = [values[at : at + args.batch] for at in range(0, len(values), args.batch)]
    fallback = RecordingFallback(codec=codec, default_phone_region=settings.state.default_phone_region)
    core = build_core(settings, codec, fallback=fallback)

    prepare_us: list[float] = []
    decide_us: list[float] = []
    for number in range(1, args.passes + 1):
        fallback.emails.clear()
        fallback.phones.clear()
        fallback.heads = 0
        facts = hashes = 0
        prepare_s = decide_s = 0.0
        for batch in batches:
            started = time.perf_counter()
            prepared = core.prepare(batch)
            prepared_at = time.perf_counter()
            prepared.decide([], 1_700_000_000_000, "bench")
            prepare_s += prepared_at - started
            decide_s += time.perf_counter() - prepared_at
            facts += prepared.fact_count
            hashes += len(prepared.keys)
        prepare_us.append(prepare_s / len(values) * 1e6)
        decide_us.append(decide_s / len(values) * 1e6)
        asked = f"decode_head {fallback.heads}, normalize_email {len(fallback.emails)}, normalize_phone {len(fallback.phones)}"
        print(
            f"pass {number}: prepare {prepare_us[-1]:.2f} µs/record, decide {decide_us[-1]:.2f} µs/record, "
            f"{facts / len(values):.2f} facts and {hashes / len(values):.2f} hashes per record; fallbacks: {asked}"
        )
    prepare, decide = statistics.median(prepare_us), statistics.median(decide_us)
    print(f"median of {args.passes}: prepare {prepare:.2f} µs, decide {decide:.2f} µs per record")


if __name__ == "__main__":
    main()
