"""The operator commands registered on the ``sendgate`` group."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
