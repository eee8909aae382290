"""Rich output shared by the operator tools: progress bars, count tables, times."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


def iso(millis: int | None) -> str:
    """Epoch milliseconds as an ISO-8601 UTC time ("-" for none)."""
    if millis is None:
        return "-"
    return datetime.fromtimestamp(millis / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def progress_bar(console: Console, description: str, *, disable: bool = False) -> Progress:
    """A bar over a window's offsets; the console should be stderr so stdout stays parseable."""
    return Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=disable,
        transient=False,
    )


def counts_table(title: str, rows: Iterable[tuple[str, Any]], *, columns: tuple[str, str] = ("", "count")) -> Table:
    """Two columns: a label and a right-aligned number (or text)."""
    table = Table(title=title, title_justify="left")
    table.add_column(columns[0])
    table.add_column(columns[1], justify="right")
    for label, value in rows:
        table.add_row(label, str(value))
    return table


def by_reason_rows(counts: Mapping[str, int], *, indent: str = "  ") -> list[tuple[str, int]]:
    """``reason → count`` rows, largest first, for nesting under a total."""
    return [(f"{indent}{reason}", n) for reason, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]


def echo_json(document: Any) -> None:
    """Machine-readable output on stdout, one document, stable key order."""
    click.echo(json.dumps(document, indent=2, sort_keys=True))
