"""The progress bar the generator and the bench share: counts and the rate so far."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def progress_bar(console: Console | None) -> Progress:
    """The rich progress bar the generator and the bench share (disabled without a console)."""
    return Progress(
        TextColumn("{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
        disable=console is None,
    )


def tracked(progress: Progress, description: str, total: int | None) -> Callable[[int], None]:
    """A progress callback for ``produce_*`` that also shows the rate so far."""
    task = progress.add_task(description, total=total, rate="")
    started = time.monotonic()

    def update(done: int) -> None:
        elapsed = time.monotonic() - started
        rate = f"{done / elapsed:,.0f}/s" if elapsed > 0 else ""
        progress.update(task, completed=done, rate=rate)

    return update
