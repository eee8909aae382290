"""The ``sendgate`` command: workers, topic creation, state rebuild and operator tools.

Logging is configured here and nowhere else. Errors reach the user as one
clear line and a named exit code (see :class:`worker.errors.ExitCode`).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from worker import __version__, logs
from worker.config import Settings
from worker.kafka.admin import check_credentials
from worker.terminal import console, load_settings, run_guarded

logger = logging.getLogger(__name__)

WORKER_COMMANDS = frozenset({"gate", "preferences", "run"})


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sendgate")
@click.pass_context
def main(ctx: click.Context) -> None:
    """sendgate: decide every outbound email/SMS request against communication preferences.

    Settings come from SENDGATE_* environment variables (``__`` nests), e.g.
    SENDGATE_KAFKA__BOOTSTRAP_SERVERS, SENDGATE_REDIS__URL.
    """
    settings = load_settings()
    log_settings = settings.log
    if ctx.invoked_subcommand not in WORKER_COMMANDS and "SENDGATE_LOG__LEVEL" not in os.environ:
        # An operator command's output is its tables; its info lines would only clutter them.
        log_settings = log_settings.model_copy(update={"level": "WARNING", "format": "console"})
    logs.configure(log_settings)
    ctx.obj = settings


def _serve_http(runtime: Any) -> Any:
    from worker.health import HealthServer

    if not runtime.settings.http.enabled:
        return None
    return HealthServer(settings=runtime.settings.http, health=runtime.health, metrics=runtime.metrics).start()


@main.command()
@click.option("--max-messages", type=click.IntRange(min=1), default=None, help="Stop after this many input records (tests, bench).")
@click.option("--idle-exit", type=click.FloatRange(min=0), default=None, help="Stop after this many idle seconds.")
@click.pass_obj
def gate(settings: Settings, max_messages: int | None, idle_exit: float | None) -> None:
    """Run the gate worker: sends.requested → allowed / suppressed / dead-letter."""
    from worker.assembly import Runtime, build_gate

    def body() -> None:
        check_credentials(settings)
        runtime = Runtime.create(settings)
        runtime.stop.install_signal_handlers()
        _serve_http(runtime)
        progress = build_gate(runtime).run(max_messages=max_messages, idle_exit_seconds=idle_exit)
        logger.info("gate stopped", extra=vars(progress))

    run_guarded(body)


@main.command()
@click.option("--idle-exit", type=click.FloatRange(min=0), default=None, help="Stop after this many idle seconds.")
@click.pass_obj
def preferences(settings: Settings, idle_exit: float | None) -> None:
    """Run the preference applier: preferences.changed → Redis state (+ preferences.rejected)."""
    from worker.assembly import Runtime, build_applier

    def body() -> None:
        check_credentials(settings)
        runtime = Runtime.create(settings)
        runtime.stop.install_signal_handlers()
        runtime.health.set_ready(True)
        _serve_http(runtime)
        progress = build_applier(runtime).run(idle_exit_seconds=idle_exit)
        logger.info("applier stopped", extra={"applied": progress.events_applied, "rejected": progress.events_rejected})

    run_guarded(body)


@main.command()
@click.option("--max-messages", type=click.IntRange(min=1), default=None, help="Stop after this many input records.")
@click.option("--idle-exit", type=click.FloatRange(min=0), default=None, help="Stop after this many idle seconds.")
@click.pass_obj
def run(settings: Settings, max_messages: int | None, idle_exit: float | None) -> None:
    """Run the applier and the gate in one process (small deployments, demos)."""
    from worker.assembly import Runtime, build_applier, build_gate

    def body() -> None:
        check_credentials(settings)
        runtime = Runtime.create(settings)
        runtime.stop.install_signal_handlers()
        _serve_http(runtime)
        applier = build_applier(runtime)
        failure: list[BaseException] = []

        def run_applier() -> None:
            try:
                applier.run()
            except BaseException as exc:  # surfaced on the main thread below
                failure.append(exc)
                runtime.stop.set()

        thread = threading.Thread(target=run_applier, name="sendgate-applier", daemon=True)
        thread.start()
        try:
            build_gate(runtime).run(max_messages=max_messages, idle_exit_seconds=idle_exit)
        finally:
            runtime.stop.set()
            thread.join(timeout=30)
        if failure:
            raise failure[0]

    run_guarded(body)


@main.group()
def topics() -> None:
    """Manage the Kafka topics of SPEC §5."""


@topics.command("create")
@click.pass_obj
def topics_create(settings: Settings) -> None:
    """Create every topic idempotently and report what was done."""
    from worker.kafka.admin import create_topics

    def body() -> None:
        reports = create_topics(settings)
        table = Table(title="sendgate topics")
        for column in ("topic", "partitions", "status"):
            table.add_column(column)
        for report in reports:
            table.add_row(report.name, str(report.partitions), report.status)
        console.print(table)

    run_guarded(body)


@main.command("rebuild-state")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def rebuild_state(settings: Settings, yes: bool) -> None:
    """Empty the state store and rebuild it from preferences.changed (gates pause meanwhile)."""
    from worker.ops.rebuild import rebuild

    if not yes:
        click.confirm("This empties the state store; gates fail closed until it is rebuilt. Continue?", abort=True)
    run_guarded(lambda: rebuild(settings, console=console))


@main.command()
@click.option("--timeout", type=click.FloatRange(min=1), default=120.0, show_default=True, help="Seconds to wait for every decision.")
@click.pass_obj
def demo(settings: Settings, timeout: float) -> None:
    """Run a scripted scenario touching every reason through a real applier and gate."""
    from worker.loadgen.demo import run_demo

    demo_settings = settings.model_copy(update={"http": settings.http.model_copy(update={"enabled": False})})
    wide = Console(width=max(console.width, 140))
    run_guarded(lambda: run_demo(demo_settings, console=wide, timeout_seconds=timeout))


def _register_operator_commands() -> None:
    from worker.ops import commands

    for command in commands.COMMANDS:
        main.add_command(command)


_register_operator_commands()
