"""``sendgate bench``: what the gate costs on this cluster, and whether it meets its targets.

One run (:class:`~worker.bench.run.BenchRun`); results go to a rich table and a
JSON file, next to the machine they ran on. The baseline and the gate are run
alternately, several times each (``--rounds``, ``--min-run-seconds``), so the
figures come with their spread.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path
from typing import Any

import click

from worker.bench.config import QUICK, BenchConfig
from worker.bench.latency import LEAD_IN_SECONDS
from worker.bench.report import default_output, render
from worker.bench.run import BenchRun
from worker.config import Settings
from worker.terminal import console, run_guarded


@click.command("bench")
@click.option("--quick", is_flag=True, help="Small sizes, seconds long (smoke test, CI).")
@click.option("--sends", type=click.IntRange(min=1), default=None, help="Send requests through baseline and gate [500,000].")
@click.option("--opt-outs", type=click.IntRange(min=0), default=None, help="Opt-out events in the store [1,000,000].")
@click.option("--contact-facts", type=click.IntRange(min=0), default=None, help="Contact facts in the store [100,000].")
@click.option("--sms-opt-ins", type=click.IntRange(min=0), default=None, help="SMS opt-ins (allowed SMS) [100,000].")
@click.option("--clean-contacts", type=click.IntRange(min=1), default=None, help="Contacts without facts [250,000].")
@click.option("--orgs", type=click.IntRange(min=1), default=None, help="Organizations [50].")
@click.option("--partitions", type=click.IntRange(min=1), default=None, help="Partitions of the bench topics [6].")
@click.option("--rounds", type=click.IntRange(min=1), default=None,
              help="Gate runs, each between two baseline runs (B G B ... B); medians and spread reported [3].")
@click.option("--min-run-seconds", type=click.FloatRange(min=0), default=None,
              help="Measured time of each baseline and gate run: passes over the sends repeat until reached [3].")
@click.option("--latency-seconds", type=click.FloatRange(min=0.5), default=None,
              help=f"Length of the measured paced run, after {LEAD_IN_SECONDS:g} s unmeasured at the same rate [20].")
@click.option("--latency-rate", type=click.FloatRange(min=1), default=None, help="Offered load, requests/s [half the gate's].")
@click.option("--seed", type=int, default=None, help="Seed of the generated world [1].")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON results [bench-results/bench-<timestamp>.json].")
@click.option("--profile-gate", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Profile the gate run with pyinstrument (pip install pyinstrument) into this text file.")
@click.option("--also-cluster", "cluster_url", metavar="URL", default=None,
              help="Also time the gate on this Redis Cluster (any node, redis://host:port/0) in the same run: after the "
                   "standalone gate rounds, the same preference events are applied into a store there and the gate's rounds "
                   "repeat on the same sends (JSON section 'cluster': rate, ratio, EVALSHA per master per batch). "
                   "Rebuild and latency stay on the configured Redis.")
@click.pass_obj
def bench_command(
    settings: Settings, /, quick: bool, output: Path | None, profile_gate: Path | None, cluster_url: str | None, **sizes: Any
) -> None:
    """Measure the gate against the bare transactional loop, its latency, the rebuild and Redis memory."""

    config = dataclasses.replace(QUICK if quick else BenchConfig(), **{k: v for k, v in sizes.items() if v is not None})
    contacts = config.opt_outs + config.contact_facts + config.sms_opt_ins + config.clean_contacts
    if contacts < config.orgs:
        raise click.BadParameter(f"{contacts} contacts cannot fill {config.orgs} organizations", param_hint="--orgs")
    if profile_gate is not None and importlib.util.find_spec("pyinstrument") is None:
        raise click.BadParameter("needs pyinstrument: pip install pyinstrument", param_hint="--profile-gate")
    if cluster_url is not None and settings.redis.cluster:
        raise click.BadParameter("the configured Redis is already a cluster: point it at a standalone Redis",
                                 param_hint="--also-cluster")
    if cluster_url is not None and not cluster_url.startswith(("redis://", "rediss://")):
        raise click.BadParameter(f"{cluster_url!r} is not a redis:// URL", param_hint="--also-cluster")
    path = output or default_output()

    def body() -> None:
        run = BenchRun(settings, config, console=console, profile_gate=profile_gate, cluster_url=cluster_url)
        try:
            run.run()
        except BaseException as exc:
            run.results["error"] = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(run.results, indent=2, default=str) + "\n")
        render(console, run.results)
        console.print(f"results: {path}")

    run_guarded(body)
