"""The rebuild phase of ``sendgate bench`` alone: preload the bench's preference topic, rebuild, tear down.

Not a test (pytest does not collect it): a measurement to rerun back to back,
with the bench's own stages and sizes, so the figures compare with the full
bench's ``rebuild`` row. ``--profile FILE`` writes a cProfile of the rebuild.

    .venv/bin/python -m tests.perf.bench_rebuild --opt-outs 100000 --contact-facts 20000 \\
        --sms-opt-ins 10000 --clean-contacts 50000 --runs 3
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import json
import logging
import time

from worker.bench.config import BenchConfig
from worker.bench.run import BenchRun
from worker.config import Settings


def profile_rebuild(settings: Settings, path: str) -> None:
    """The rebuild on this thread under cProfile (the command runs it on a thread cProfile does not see)."""
    from worker.assembly import Runtime, build_applier

    runtime = Runtime.create(settings)
    runtime.store().clear()
    applier = build_applier(runtime)
    profiler = cProfile.Profile()
    started = time.monotonic()
    profiler.runcall(applier.run, until_ready=True)
    events = applier.progress.events_applied + applier.progress.events_rejected
    print(f"profiled rebuild: {events} events in {time.monotonic() - started:.2f} s")
    profiler.dump_stats(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in (("opt-outs", 100_000), ("contact-facts", 20_000), ("sms-opt-ins", 10_000), ("clean-contacts", 50_000)):
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--profile", default=None, help="cProfile output of the (last) rebuild")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    config = dataclasses.replace(
        BenchConfig(), sends=1, opt_outs=args.opt_outs, contact_facts=args.contact_facts,
        sms_opt_ins=args.sms_opt_ins, clean_contacts=args.clean_contacts,
    )
    for _ in range(args.runs):
        run = BenchRun(Settings(), config)
        try:
            run._setup()
            run._preload()
            if args.profile:
                profile_rebuild(run.names.main, args.profile)
            else:
                run._rebuild()
        finally:
            run._teardown()
        print(json.dumps(run.results.get("rebuild", {})))


if __name__ == "__main__":
    main()
