"""``sendgate generate``: realistic preference events and send requests, produced fast.

The generated world (:mod:`worker.loadgen.world`) is fixed by ``--seed``; the
streams are those of :mod:`worker.loadgen.streams`, produced through the bulk
path of :mod:`worker.loadgen.producing`.
"""

from __future__ import annotations

import random
import time

import click
from rich.console import Console
from rich.table import Table

from worker.codec import AvroCodec
from worker.config import Settings
from worker.loadgen.producing import ProduceReport, bulk_producer, produce_events, produce_sends, require_topics
from worker.loadgen.progress import progress_bar, tracked
from worker.loadgen.streams import generate_events, generate_sends
from worker.loadgen.world import World
from worker.terminal import console, run_guarded


@click.command("generate")
@click.option("--orgs", type=click.IntRange(min=1), default=20, show_default=True, help="Organizations.")
@click.option("--contacts", type=click.IntRange(min=1), default=10_000, show_default=True, help="Contacts over all organizations.")
@click.option("--events", "event_count", type=click.IntRange(min=0), default=10_000, show_default=True, help="Preference events.")
@click.option("--sends", "send_count", type=click.IntRange(min=0), default=10_000, show_default=True, help="Send requests.")
@click.option("--rate", type=click.FloatRange(min=0), default=0.0, show_default=True, help="Records per second; 0 = as fast as possible.")
@click.option("--what", type=click.Choice(["events", "sends", "both"]), default="both", show_default=True,
              help="What to produce (events first).")
@click.option("--seed", type=int, default=None, help="Reproduce a world and its traffic (default: random, printed).")
@click.option("--base-time-ms", type=click.IntRange(min=0), default=None, help="Epoch ms of the first event/request (default: now).")
@click.pass_obj
def generate_command(
    settings: Settings, orgs: int, contacts: int, event_count: int, send_count: int, rate: float, what: str,
    seed: int | None, base_time_ms: int | None,
) -> None:
    """Produce realistic traffic: preference events and/or send requests."""

    if contacts < orgs:
        raise click.BadParameter(f"need at least one contact per organization ({contacts} < {orgs})", param_hint="--contacts")
    seed = seed if seed is not None else random.SystemRandom().randrange(1_000_000)
    start_ms = base_time_ms if base_time_ms is not None else int(time.time() * 1000)

    def body() -> None:
        world = World(seed=seed, orgs=orgs, contacts=contacts)
        codec = AvroCodec.from_settings(settings)
        wanted = {"events": [settings.topics.preferences], "sends": [settings.topics.requested]}
        topics = wanted["events"] + wanted["sends"] if what == "both" else wanted[what]
        require_topics(settings, topics)
        producer = bulk_producer(settings)
        reports: list[ProduceReport] = []
        with progress_bar(console) as progress:
            if what in ("events", "both") and event_count:
                events = generate_events(world, event_count, seed=seed, base_time_ms=start_ms)
                reports.append(produce_events(settings, events, codec=codec, producer=producer, rate=rate,
                                              on_progress=tracked(progress, "preference events", event_count)))
            if what in ("sends", "both") and send_count:
                sends = generate_sends(world, send_count, seed=seed, base_time_ms=start_ms + event_count)
                reports.append(produce_sends(settings, sends, codec=codec, producer=producer, rate=rate,
                                             on_progress=tracked(progress, "send requests", send_count)))
        _print_summary(console, reports, seed=seed, orgs=orgs, contacts=contacts)

    run_guarded(body)


def _print_summary(console: Console, reports: list[ProduceReport], *, seed: int, orgs: int, contacts: int) -> None:
    table = Table(title=f"sendgate generate (seed {seed}, {orgs} organizations, {contacts:,} contacts)")
    for column in ("topic", "kind", "records"):
        table.add_column(column, justify="right" if column == "records" else "left")
    for report in reports:
        for kind, n in sorted(report.kinds.items()):
            table.add_row(report.topic, kind, f"{n:,}")
        table.add_row(
            report.topic, "[bold]total[/bold]",
            f"[bold]{report.records:,}[/bold] in {report.seconds:.1f}s ({report.records_per_second:,.0f}/s, {report.bytes / 1e6:.1f} MB)",
        )
    console.print(table)
