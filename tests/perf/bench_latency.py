"""The latency phase of ``sendgate bench`` alone, at a rate you choose: preload, rebuild, paced run, tear down.

Not a test (pytest does not collect it): a measurement to rerun back to back,
with the bench's own stages and sizes, so the figures compare with the full
bench's latency row. Prints, per run, p50/p99 end to end and split at the
gate's produce() (waiting for the gate / waiting for the commit), and the gate
process's mean commit time. ``--py-spy FILE`` records the gate process during
the paced run with py-spy (pip install py-spy; every thread, idle included).

    .venv/bin/python -m tests.perf.bench_latency --rate 20000 --runs 3
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import subprocess
import threading
import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from worker.bench.config import BenchConfig
from worker.bench.latency import measure_latency
from worker.bench.run import BenchRun
from worker.config import Settings
from worker.kafka.admin import create_topics, delete_topics


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of ``pid`` from /proc (Linux), None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuWatch:
    """CPU seconds per process from a start until each process ends or :meth:`stop` (sampled every 0.2 s)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._first = {name: cpu_seconds(pid) for name, pid in pids.items()}
        self._pids = pids
        self.used: dict[str, float] = {}
        self._started = time.monotonic()
        self.seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        for name, pid in self._pids.items():
            now, first = cpu_seconds(pid), self._first[name]
            if now is not None and first is not None:
                self.used[name] = round(now - first, 2)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self._sample()

    def stop(self) -> dict[str, float]:
        self._sample()
        self._stop.set()
        self.seconds = time.monotonic() - self._started
        return {**self.used, "wall": round(self.seconds, 2)}


LATENCY_TOPICS = ("requested", "allowed", "suppressed", "dead_letter")


def fresh_latency_settings(settings: Settings, index: int) -> Settings:
    """The latency part's settings with its send topics and gate group suffixed by the run's number."""
    topics = settings.topics.model_copy(update={name: f"{getattr(settings.topics, name)}-{index}" for name in LATENCY_TOPICS})
    gate = settings.gate.model_copy(update={"group_id": f"{settings.gate.group_id}-{index}"})
    return settings.model_copy(update={"topics": topics, "gate": gate})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in (("opt-outs", 100_000), ("contact-facts", 20_000), ("sms-opt-ins", 10_000), ("clean-contacts", 50_000)):
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--rate", type=float, required=True, help="offered requests/s")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--py-spy", default=None, help="py-spy recording of the gate process (speedscope JSON)")
    parser.add_argument("--also-pid", action="append", default=[], metavar="NAME=PID", help="CPU of another process, e.g. broker=1234")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    config = dataclasses.replace(
        BenchConfig(), sends=1, opt_outs=args.opt_outs, contact_facts=args.contact_facts,
        sms_opt_ins=args.sms_opt_ins, clean_contacts=args.clean_contacts,
    )
    recorders: list[subprocess.Popen[bytes]] = []
    watches: list[CpuWatch] = []
    others = {name: int(pid) for name, pid in (item.split("=", 1) for item in args.also_pid)}

    def record(pid: int) -> None:
        watches.append(CpuWatch({"gate": pid, "bench (producer, probe)": os.getpid(), **others}))
        spy = shutil.which("py-spy")
        if not args.py_spy or spy is None:
            return
        recorders.append(subprocess.Popen(
            [spy, "record", "--pid", str(pid), "--idle", "--threads", "--rate", "250", "--format", "speedscope",
             "--duration", str(int(args.seconds)), "--output", args.py_spy],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))

    # One preload and rebuild; each run gets send topics and a gate group of its own.
    run = BenchRun(Settings(), config)
    try:
        run._setup()
        run._preload()
        run._rebuild()
        for index in range(args.runs):
            settings = fresh_latency_settings(run.names.latency, index)
            create_topics(settings)
            try:
                latency = measure_latency(
                    settings, run._plan, run.codec, rate=args.rate, seconds=args.seconds, first_index=1 + index * 10_000_000,
                    console=None, on_gate_started=record,
                )
                cpu = watches[-1].stop() if watches else {}
            finally:
                delete_topics(settings, [*(getattr(settings.topics, n) for n in LATENCY_TOPICS)])
                for recorder in recorders:
                    recorder.wait(60)
            phases = latency["gate_process"].get("phases", {})
            print(json.dumps({
                "rate": args.rate, "achieved": latency["achieved_rate"], "p50_ms": latency["p50_ms"], "p99_ms": latency["p99_ms"],
                "split_ms": latency["split_ms"], "gate_mean_batch": latency["gate_mean_batch"],
                "commit_mean_ms": phases.get("commit", {}).get("mean_ms"), "commits": phases.get("commit", {}).get("count"),
                "cpu_seconds": cpu, "phases": phases,
            }), flush=True)
    finally:
        run._teardown()
        groups = [f"{run.names.latency.gate.group_id}-{i}{probe}" for i in range(args.runs) for probe in ("", "-probe")]
        for future in AdminClient(run.names.main.kafka.common_config()).delete_consumer_groups(groups, request_timeout=10).values():
            # A group that never committed does not exist; and an answer that never
            # comes (seen after a run's gate group was deleted) must not hang the tool.
            with contextlib.suppress(KafkaException, concurrent.futures.TimeoutError):
                future.result(timeout=15)


if __name__ == "__main__":
    main()
