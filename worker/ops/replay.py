"""``sendgate replay``: re-submit suppressed sends that the current state now allows.

The run itself, and how the replay ledger keeps every message from being
released twice, is :mod:`worker.ops.replayer`.
"""

from __future__ import annotations

import logging
from typing import Any

import click
from confluent_kafka import Producer
from rich.console import Console

from worker.codec import AvroCodec
from worker.config import Settings
from worker.errors import ExitCode, FatalError, SendgateError
from worker.kafka.clients import idempotent_producer_config
from worker.models import SuppressionReason
from worker.ops.live_state import LiveState
from worker.ops.replay_ledger import ReplayLedger
from worker.ops.replayer import (
    DEFAULT_IN_DOUBT_AFTER,
    DEFAULT_WINDOW,
    DELIVERY_TIMEOUT_MS,
    MIN_IN_DOUBT_AFTER_MS,
    Replayer,
    ReplaySummary,
    marker_ttl_ms,
)
from worker.ops.tables import by_reason_rows, counts_table, echo_json, progress_bar
from worker.ops.topic_reader import DurationParam, RecordFilter, TimeParam
from worker.terminal import console, err_console, run_guarded

logger = logging.getLogger(__name__)


class ReplayIncomplete(FatalError):
    """Some releases of this run could not be confirmed: they are in doubt until a later run resolves them."""

    exit_code = ExitCode.FAILURE


def render_summary(console: Console, summary: ReplaySummary) -> None:
    verb = "would release" if summary.dry_run else "released"
    rows: list[tuple[str, Any]] = [
        ("scanned", summary.scanned),
        ("matched the filters", summary.matched),
        ("  older than the dedupe window (not replayed)", summary.older_than_window),
        ("still suppressed now (by current primary reason)", sum(summary.still_suppressed.values())),
        *by_reason_rows(summary.still_suppressed, indent="    "),
        (f"{verb} (by original primary reason)", sum(summary.released.values())),
        *by_reason_rows(summary.released, indent="    "),
        ("skipped: already replayed", summary.already_replayed),
        ("  of which suppressed again after a replay", summary.resuppressed_after_replay),
        ("in doubt (claimed, not confirmed)", summary.in_doubt),
    ]
    if summary.in_doubt_found_sent or summary.in_doubt_released_again:
        rows += [
            ("earlier in-doubt claims found sent", summary.in_doubt_found_sent),
            ("earlier in-doubt claims released again", summary.in_doubt_released_again),
        ]
    if summary.unconfirmed_this_run:
        rows.append(("[red]unconfirmed releases of this run[/red]", summary.unconfirmed_this_run))
    if summary.undecodable:
        rows.append(("undecodable records skipped", summary.undecodable))
    title = "Replay (dry run: nothing produced)" if summary.dry_run else "Replay"
    console.print(counts_table(title, rows))


_REASONS = [r.value for r in SuppressionReason]


@click.command("replay")
@click.option("--since", type=TimeParam(), default=None,
              help="Only records decided at or after this time (epoch ms or ISO-8601, UTC if no zone).")
@click.option("--until", type=TimeParam(), default=None, help="Only records decided before this time.")
@click.option("--reason", "reasons", multiple=True, metavar="REASON", type=click.Choice(_REASONS, case_sensitive=False),
              help="Only records suppressed for this reason, e.g. SILENCED (matches any of their reasons; repeatable).")
@click.option("--org", "orgs", multiple=True, help="Only this organization (repeatable).")
@click.option("--campaign", "campaigns", multiple=True, help="Only this campaign (repeatable).")
@click.option("--dry-run", is_flag=True, help="Decide and count, produce and record nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--dedupe-window", type=DurationParam(), default=DEFAULT_WINDOW, show_default=True,
              envvar="SENDGATE_REPLAY_DEDUPE_WINDOW",
              help="How long a released message is never released again; older records are not replayed.")
@click.option("--in-doubt-after", type=DurationParam(), default=DEFAULT_IN_DOUBT_AFTER, show_default=True,
              help="Age after which an unconfirmed claim of an earlier run is resolved against sends.requested.")
@click.pass_obj
def replay_command(
    settings: Settings, since: int | None, until: int | None, reasons: tuple[str, ...], orgs: tuple[str, ...],
    campaigns: tuple[str, ...], dry_run: bool, as_json: bool, dedupe_window: int, in_doubt_after: int,
) -> None:
    """Re-submit suppressed sends the current state allows, each message at most once.

    Time filters apply to decided_at (when the gate suppressed the record);
    --since is inclusive, --until exclusive. Each matching record is decided
    again on the live state (fail closed: an unready or lagging store stops
    the run). Those now allowed go to sends.requested with their original key
    and value and the headers sendgate-replay-of (topic/partition/offset),
    sendgate-replayed-at and sendgate-replay-token.
    """

    try:
        record_filter = RecordFilter(since, until, frozenset(r.upper() for r in reasons), frozenset(orgs), frozenset(campaigns))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--since' / '--until'") from None
    if in_doubt_after < MIN_IN_DOUBT_AFTER_MS:
        raise click.BadParameter(
            f"must be at least {MIN_IN_DOUBT_AFTER_MS // 1000}s (the producer's delivery timeout, with margin)",
            param_hint="'--in-doubt-after'",
        )

    def body() -> None:
        live = LiveState.connect(settings, topics=[settings.topics.suppressed, settings.topics.requested])
        producer = None
        if not dry_run:
            producer = Producer({**idempotent_producer_config(settings), "message.timeout.ms": DELIVERY_TIMEOUT_MS, "logger": logger})
        ledger = ReplayLedger(client=live.store.client, state=settings.state, ttl_ms=marker_ttl_ms(dedupe_window))
        bar = progress_bar(err_console, "replaying" if not dry_run else "replay (dry run)", disable=as_json)
        task = bar.add_task("records", total=None)
        replayer = Replayer(
            settings=settings, live=live, ledger=ledger, codec=_codec(settings), producer=producer,
            record_filter=record_filter, window_ms=dedupe_window, in_doubt_after_ms=in_doubt_after,
            on_progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
        try:
            with bar:
                summary = replayer.run()
        except SendgateError:
            if replayer.summary.scanned:
                err_console.print("[red]replay stopped early[/red]; what it did so far:")
                render_summary(err_console, replayer.summary)
            raise
        finally:
            if producer is not None:
                producer.flush(5)
            live.close()
        if as_json:
            echo_json(summary.to_json())
        else:
            render_summary(console, summary)
        if summary.unconfirmed_this_run:
            raise ReplayIncomplete(
                f"{summary.unconfirmed_this_run} release(s) could not be confirmed; they are in doubt, never re-sent "
                f"blindly: run replay again after {in_doubt_after // 1000}s to resolve them"
            )

    run_guarded(body)


def _codec(settings: Settings) -> AvroCodec:
    return AvroCodec.from_settings(settings)
