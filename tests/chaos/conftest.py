"""Prints the chaos table (one row per fault run in this session) at the end of pytest's output."""

from __future__ import annotations

import pytest

from tests.chaos import report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not report.ROWS:
        return
    terminalreporter.write_sep("=", "sendgate fault injection")
    terminalreporter.write_line(report.render(report.ROWS))
