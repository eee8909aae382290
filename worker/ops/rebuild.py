"""``sendgate rebuild-state``: empty the store and replay preferences.changed into it."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from worker.assembly import Runtime, build_applier
from worker.config import Settings


@dataclass(frozen=True)
class RebuildResult:
    events_applied: int
    events_rejected: int
    seconds: float

    @property
    def events_per_second(self) -> float:
        return (self.events_applied + self.events_rejected) / self.seconds if self.seconds > 0 else 0.0


def rebuild(settings: Settings, *, console: Console | None = None, clear: bool = True) -> RebuildResult:
    """Rebuild the state store from the beginning of the topic; returns the counts and rate."""
    runtime = Runtime.create(settings)
    store = runtime.store()
    store.check()
    if clear:
        store.clear()
    applier = build_applier(runtime)
    failure: list[BaseException] = []
    started = time.monotonic()

    def work() -> None:
        try:
            applier.run(until_ready=True)
        except BaseException as exc:  # re-raised on the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=work, name="sendgate-rebuild", daemon=True)
    thread.start()
    progress_bar = Progress(
        TextColumn("rebuilding state"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, disable=console is None, transient=False,
    )
    with progress_bar:
        task = progress_bar.add_task("events", total=None)
        while thread.is_alive():
            status = applier.progress.status
            total = sum(status.targets.values())
            done = sum(min(status.progress.get(p, 0), t) for p, t in status.targets.items())
            progress_bar.update(task, total=total or None, completed=done)
            thread.join(0.2)
        status = applier.progress.status
        progress_bar.update(task, total=sum(status.targets.values()), completed=sum(status.targets.values()))
    if failure:
        raise failure[0]
    result = RebuildResult(
        events_applied=applier.progress.events_applied,
        events_rejected=applier.progress.events_rejected,
        seconds=time.monotonic() - started,
    )
    if console is not None:
        console.print(
            f"rebuilt: {result.events_applied} events applied, {result.events_rejected} rejected "
            f"in {result.seconds:.1f}s ({result.events_per_second:,.0f} events/s)"
        )
    return result
