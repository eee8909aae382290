"""sendgate worker subprocesses whose JSON logs are kept for the checker and the privacy scan."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any, Self

from tests.integration.support import settings_env
from worker.config import Settings

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Linux: SIGKILL the worker when the test process dies, so an aborted run leaves no orphans."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class WorkerProcess:
    """One logical worker (``sendgate gate``, ``preferences``, …) that may be killed and restarted.

    Every incarnation writes stdout and stderr to its own file under
    ``log_dir`` (a pipe nobody reads would block the worker); the files stay
    after the run so the privacy test can scan them and failures can show them.
    """

    def __init__(
        self,
        settings: Settings,
        command: str,
        *,
        name: str,
        log_dir: Path,
        args: tuple[str, ...] = (),
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        # PYTHONFAULTHANDLER: SIGABRT makes a stuck worker print where it is stuck (see stacks()).
        self.env = {**settings_env(settings), "PYTHONFAULTHANDLER": "1", **(extra_env or {})}
        self.argv = [sys.executable, "-m", "worker", command, *args]
        self.log_dir = log_dir
        self.log_paths: list[Path] = []
        self.exit_codes: list[int] = []
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self) -> WorkerProcess:
        assert not self.alive, f"{self.name} is already running"
        path = self.log_dir / f"{self.name}.{len(self.log_paths)}.log"
        self.log_paths.append(path)
        self._log = open(path, "wb")  # noqa: SIM115 - closed in _reap
        self.process = subprocess.Popen(
            self.argv, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
        )
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self) -> int:
        """SIGKILL: no flush, no commit, no goodbye."""
        return self._signal_and_reap(signal.SIGKILL, timeout=30)

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM: the worker finishes its batch, commits and exits (0 expected)."""
        return self._signal_and_reap(signal.SIGTERM, timeout=timeout)

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets and state but runs no code (a zombie-to-be)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        code = self.process.wait(timeout)
        self._reap(code)
        return code

    def poll(self) -> int | None:
        if self.process is None:
            return None
        code = self.process.poll()
        if code is not None:
            self._reap(code)
        return code

    def dump_stack(self, timeout: float = 10.0) -> str:
        """SIGABRT a stuck worker: Python's fault handler writes every thread's stack to its log first."""
        if not self.alive:
            return ""
        assert self.process is not None
        self.process.send_signal(signal.SIGABRT)
        try:
            self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        text = self.log_paths[-1].read_text(encoding="utf-8", errors="replace")
        marker = text.find("Current thread")
        return text[marker : marker + 2500] if marker >= 0 else "(no stack written)"

    def logs(self) -> str:
        """Every incarnation's output, oldest first."""
        parts = []
        for path in self.log_paths:
            parts.append(f"===== {path.name}\n" + path.read_text(encoding="utf-8", errors="replace"))
        return "\n".join(parts)

    def tail(self, chars: int = 3000) -> str:
        return self.logs()[-chars:]

    def close(self) -> None:
        """Stop whatever still runs (a test that failed half way must not leave workers behind)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGCONT)  # a stopped process cannot die of SIGKILL's reaping otherwise
            self.kill()
        elif self.process is not None:
            self._reap(self.process.returncode)

    def _signal_and_reap(self, signum: int, *, timeout: float) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signum)
        code = self.process.wait(timeout)
        self._reap(code)
        return code

    def _reap(self, code: int) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
            self.exit_codes.append(code)


class Workers:
    """The subprocesses of one run; closing it stops them all."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.all: list[WorkerProcess] = []

    def applier(self, name: str = "applier", extra_env: dict[str, str] | None = None) -> WorkerProcess:
        worker = WorkerProcess(self.settings, "preferences", name=name, log_dir=self.log_dir, extra_env=extra_env)
        self.all.append(worker)
        return worker.start()

    def gate(self, instance: str, extra_env: dict[str, str] | None = None) -> WorkerProcess:
        env = {"SENDGATE_GATE__INSTANCE_ID": instance, **(extra_env or {})}
        worker = WorkerProcess(self.settings, "gate", name=f"gate-{instance}", log_dir=self.log_dir, extra_env=env)
        self.all.append(worker)
        return worker.start()

    def logs(self) -> str:
        return "\n".join(w.logs() for w in self.all)

    def tails(self, chars: int = 2000) -> str:
        return "\n".join(f"--- {w.name} (exit codes {w.exit_codes}):\n{w.tail(chars)}" for w in self.all)

    def assert_running(self) -> None:
        dead = [(w.name, w.poll()) for w in self.all if w.process is not None and w.poll() is not None]
        assert not dead, f"workers exited unexpectedly: {dead}\n{self.tails()}"

    def terminate_all(self, timeout: float = 60.0) -> dict[str, int]:
        codes = {}
        for worker in self.all:
            if worker.alive:
                codes[worker.name] = worker.terminate(timeout)
        return codes

    def close(self) -> None:
        for worker in self.all:
            worker.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def wait_for(predicate: Any, *, timeout: float, interval: float = 0.1, message: str = "condition") -> float:
    """Poll ``predicate`` until true; returns the seconds it took."""
    started = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {message}")
        time.sleep(interval)

