"""Stop flag, signal handling and back-off."""

from __future__ import annotations

import os
import signal

import pytest

from worker.errors import ExitCode
from worker.runtime import Backoff, StopSignal


def test_the_first_signal_sets_the_flag_and_the_second_exits_at_once(monkeypatch):
    exits: list[int] = []
    monkeypatch.setattr(os, "_exit", exits.append)
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    stop = StopSignal()
    try:
        stop.install_signal_handlers()
        handler = signal.getsignal(signal.SIGTERM)
        handler(signal.SIGTERM, None)
        assert stop.is_set and exits == []
        handler(signal.SIGTERM, None)
        assert exits == [ExitCode.INTERRUPTED]
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def test_wait_returns_early_once_stopped():
    stop = StopSignal()
    stop.set()
    assert stop.wait(10) is True


def test_backoff_doubles_up_to_its_maximum_and_resets():
    backoff = Backoff(0.1, 0.5)
    assert [backoff.next_delay() for _ in range(5)] == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])
    backoff.reset()
    assert backoff.next_delay() == pytest.approx(0.1)
