"""Process plumbing shared by the workers: the stop flag and signal handling."""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading

from worker.errors import ExitCode

logger = logging.getLogger(__name__)


class StopSignal:
    """A flag the run loops poll; signals only set it (the first drains, the second kills)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    @property
    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, waking early when stopped; returns True when stopped."""
        return self._event.wait(seconds)

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: first finish the batch, commit and exit 0; second exits at once."""

        def handle(signum: int, _frame: object) -> None:
            if self._event.is_set():
                logger.warning("second signal: exiting immediately", extra={"signal": signal.Signals(signum).name})
                os._exit(ExitCode.INTERRUPTED)
            logger.info("signal received: finishing the current batch", extra={"signal": signal.Signals(signum).name})
            self._event.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)


# Batches keep thousands of short-lived objects alive next to large long-lived
# caches (normalised addresses, bucket keys); with the default gen-0 threshold
# of 700 the collector runs several times a batch and promotes batch-lived
# objects into older generations it then rescans. Measured: 20-35 % less CPU
# per gate record, 35-40 % per applier event.
GC_THRESHOLDS = (50_000, 20, 100)


def tune_garbage_collector() -> None:
    """Set the workers' collector thresholds (process-wide, so once per worker process is enough)."""
    gc.set_threshold(*GC_THRESHOLDS)


class Backoff:
    """Bounded exponential back-off for fail-closed retries."""

    def __init__(self, initial: float, maximum: float) -> None:
        self._initial = initial
        self._maximum = maximum
        self._next = initial

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self._maximum)
        return delay

    def reset(self) -> None:
        self._next = self._initial
