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

from worker.config import Settings
from worker.ops.bench import BenchConfig, BenchRun


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
                profiler = cProfile.Profile()
                profiler.runcall(run._rebuild)
                profiler.dump_stats(args.profile)
            else:
                run._rebuild()
        finally:
            run._teardown()
        print(json.dumps(run.results["rebuild"]))


if __name__ == "__main__":
    main()
