"""The rows of the chaos table: one per fault, printed at the end of the pytest run."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from tests.chaos.checker import Verdict


@dataclass
class Row:
    fault: str
    runs: int = 0
    records: int | None = None
    lost: int | None = None
    duplicated: int | None = None
    misrouted: int | None = None
    wrongly_allowed: int | None = None
    wrongly_suppressed: int | None = None  # suppressed although no fact the oracle holds explains it
    exits: int | None = None  # workers that exited on their own (rows run without a supervisor)
    pause: str = "-"
    note: str = ""
    result: str = "running"

    def fill(self, verdicts: list[Verdict], *, pause: str, note: str = "", exits: int | None = None) -> Row:
        self.runs = len(verdicts)
        self.records = sum(v.records for v in verdicts)
        self.lost = sum(len(v.lost) for v in verdicts)
        self.duplicated = sum(len(v.duplicated) for v in verdicts)
        self.misrouted = sum(len(v.misrouted) for v in verdicts)
        self.wrongly_allowed = sum(len(v.wrongly_allowed) for v in verdicts)
        self.wrongly_suppressed = sum(len(v.wrongly_suppressed) for v in verdicts)
        self.exits = exits
        self.pause = pause
        self.note = note
        return self


ROWS: list[Row] = []

COLUMNS = (
    "fault",
    "runs",
    "records",
    "lost",
    "duplicated",
    "misrouted",
    "wrongly allowed",
    "wrongly suppressed",
    "worker exits",
    "pause",
    "result",
)


@contextlib.contextmanager
def fault(name: str) -> Iterator[Row]:
    """A table row for the block: filled by the test, marked ok or FAIL (with why) when the block ends."""
    row = Row(name)
    ROWS.append(row)
    try:
        yield row
    except BaseException as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        row.result = f"FAIL: {first[:160]}"
        raise
    row.result = "ok"


def not_supported(name: str, note: str) -> Row:
    row = Row(name, pause="not supported", note=note, result="not supported")
    ROWS.append(row)
    return row


def render(rows: list[Row]) -> str:
    def cell(value: object) -> str:
        return "-" if value is None else str(value)

    table = [COLUMNS] + [
        (
            r.fault,
            cell(r.runs),
            cell(r.records),
            cell(r.lost),
            cell(r.duplicated),
            cell(r.misrouted),
            cell(r.wrongly_allowed),
            cell(r.wrongly_suppressed),
            cell(r.exits),
            r.pause,
            r.result if r.result in ("ok", "not supported", "running") else "FAIL",
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    numeric = range(1, 9)

    def line(values: tuple[str, ...]) -> str:
        return (
            "| "
            + " | ".join(v.rjust(w) if i in numeric else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths, strict=True)))
            + " |"
        )

    out = [line(table[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(values) for values in table[1:]]
    notes = [f"  {r.fault}: {r.note}" for r in rows if r.note]
    failures = [f"  {r.fault}: {r.result}" for r in rows if r.result.startswith("FAIL")]
    if notes:
        out += ["", "notes:", *notes]
    if failures:
        out += ["", "failures:", *failures]
    return "\n".join(out)
