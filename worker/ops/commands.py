"""The operator commands registered on the ``sendgate`` group."""

from __future__ import annotations

import click

from worker.ops.bench import bench_command
from worker.ops.generate import generate_command

COMMANDS: list[click.Command] = [
    bench_command,
    generate_command,
]
