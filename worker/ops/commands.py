"""The operator commands registered on the ``sendgate`` group."""

from __future__ import annotations

import click

from worker.bench.command import bench_command
from worker.loadgen.generate import generate_command
from worker.ops.event import event_command
from worker.ops.explain import explain_command
from worker.ops.replay import replay_command
from worker.ops.whatif import what_if_command

COMMANDS: list[click.Command] = [
    bench_command,
    event_command,
    explain_command,
    generate_command,
    replay_command,
    what_if_command,
]
