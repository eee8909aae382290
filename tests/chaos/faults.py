"""The fault scenarios, shared by the chaos tests and their short versions in ``make test``.

Each returns the checker's verdict and what was measured; the tests assert
and record the table row.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from tests.chaos.checker import Verdict
from tests.chaos.processes import WorkerProcess
from tests.chaos.resume import BrokerAnswers, RestartResume, resume_after, waited_through
from tests.chaos.run import ChaosRun
from tests.chaos.workload import TrafficThreads
from worker.errors import ExitCode
from worker.state.addressing import FactAddressing


@dataclass
class Measured:
    """What a scenario observed besides the verdict."""

    pauses: list[float] = field(default_factory=list)  # seconds, one per fault
    resumes: list[RestartResume] = field(default_factory=list)  # broker restarts: per partition, from the outputs
    # The same pauses counted from the broker's group coordinator answering again (single node only):
    # what the workers took once the broker could serve them.
    coordinator_pauses: list[float] = field(default_factory=list)
    coordinator_waits: list[float] = field(default_factory=list)  # seconds from metadata to coordinator answering
    monitor_pauses: list[float] = field(default_factory=list)  # the same, as the offsets monitor sampled them
    longest_stall: float = 0.0
    exit_codes: dict[str, list[int]] = field(default_factory=dict)
    effective_faults: int = 0  # faults that landed while records were waiting or in flight
    worker_exits: list[tuple[str, int]] = field(default_factory=list)  # (worker, exit code): none may exit on its own
    notes: list[str] = field(default_factory=list)
    duration: float = 0.0


def gate_instances(run: ChaosRun, count: int) -> list[str]:
    return [f"{run.settings.gate.instance_id}-g{i}" for i in range(count)]


def start_fleet(
    run: ChaosRun,
    gates: int,
    extra_env: dict[str, str] | None = None,
    *,
    gate_env: Callable[[int], dict[str, str]] | None = None,
    applier_env: dict[str, str] | None = None,
) -> tuple[WorkerProcess, list[WorkerProcess]]:
    """The applier and ``gates`` gates (instance ids ``<test>-g<i>``); ``gate_env(i)`` adds per-gate settings."""
    applier = run.workers.applier(extra_env={**(extra_env or {}), **(applier_env or {})})
    fleet = [
        run.workers.gate(instance, {**(extra_env or {}), **(gate_env(i) if gate_env else {})})
        for i, instance in enumerate(gate_instances(run, gates))
    ]
    return applier, fleet


def finish(run: ChaosRun, measured: Measured) -> None:
    """SIGTERM every worker: each must drain, commit and exit 0."""
    codes = run.workers.terminate_all()
    for worker in run.workers.all:
        measured.exit_codes[worker.name] = list(worker.exit_codes)
    bad = {name: code for name, code in codes.items() if code != 0}
    assert not bad, f"workers did not stop cleanly on SIGTERM: {bad}\n{run.workers.tails()}"


# --- 1. crash: SIGKILL gates of one group at random moments ------------------------


def run_crash(
    run: ChaosRun,
    *,
    gates: int,
    records: int,
    kills: int,
    sends_per_second: float,
    events_per_second: float = 20.0,
    seed: int = 7,
    catch_up_timeout: float = 300.0,
    extra_env: dict[str, str] | None = None,
    gate_env: Callable[[int], dict[str, str]] | None = None,
    before_finish: Callable[[list[WorkerProcess]], None] | None = None,
) -> tuple[Verdict, Measured]:
    """``gates`` gate processes share the input; ``kills`` times a random one is SIGKILLed and restarted.

    Restarted with the same instance id (static member, same transactional
    id), so its partitions come back to it and its open transaction is aborted.
    """
    rng = random.Random(seed)
    measured = Measured()
    run.setup_preferences()
    _, fleet = start_fleet(run, gates, extra_env, gate_env=gate_env)
    started = time.monotonic()
    with run.monitor() as monitor:
        threads = TrafficThreads(
            run.settings, run.codec, run.traffic,
            sends=records, sends_per_second=sends_per_second, events_per_second=events_per_second,
        ).start()
        production_seconds = records / sends_per_second
        moments = sorted(rng.uniform(0.1, 0.95) * production_seconds for _ in range(kills))
        for moment in moments:
            delay = started + moment - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            run.workers.assert_running()
            victim = rng.choice(fleet)
            sample = monitor.latest()
            if threads.produced < records or (sample is not None and sample.pending):
                measured.effective_faults += 1
            killed_at = time.monotonic()
            victim.kill()
            time.sleep(rng.uniform(0.0, 1.0))
            victim.start()
            measured.pauses.append(time.monotonic() - killed_at)  # down time (the stall is measured below)
        threads.join(timeout=production_seconds * 3 + 120)
        monitor.wait_caught_up(len(run.ledger.sends), timeout=catch_up_timeout)
        measured.longest_stall = monitor.longest_stall()
    measured.duration = time.monotonic() - started
    if before_finish is not None:
        before_finish(fleet)
    finish(run, measured)
    return run.check(), measured


# --- 2. zombie: a gate paused past its session and transaction timeouts ----------


def open_transaction_partitions(run: ChaosRun, *, watch_seconds: float = 2.5) -> list[tuple[str, int]]:
    """Output partitions whose last stable offset stays pinned while records keep arriving after it.

    The running gates commit every ``commit_interval`` (0.2 s), so a stable
    offset that does not move for seconds while the high watermark grows is
    held by somebody else's open transaction: the paused gate's.
    """
    from tests.chaos.checker import _admin, end_offsets

    admin = _admin(run.settings)
    topics = [run.settings.topics.allowed, run.settings.topics.suppressed]
    first = {t: (end_offsets(admin, t, committed=True), end_offsets(admin, t, committed=False)) for t in topics}
    time.sleep(watch_seconds)
    pinned = []
    for topic in topics:
        stable_then, _ = first[topic]
        stable_now, high_now = end_offsets(admin, topic, committed=True), end_offsets(admin, topic, committed=False)
        for p, stable in stable_now.items():
            if stable == stable_then[p] and high_now[p] > stable:
                pinned.append((topic, p))
    return pinned


@dataclass
class ZombieOutcome:
    mid_transaction: bool
    zombie_exit: int | None
    took_over_seconds: float | None  # until the survivor committed on every partition of the zombie
    zombie_log_tail: str
    rejoined: bool = False  # resumed, it recovered in-process and was assigned partitions again

    @property
    def fenced_or_rejoined(self) -> bool:
        """A resumed zombie either exits fenced (10, or 11) or, still running, rejoined the group in-process.

        Which one depends on what it meets first: a transactional call answered
        "fenced" (the coordinator aborted its timed-out transaction and bumped
        the epoch) exits 10; a call its watchdog finds blocked past its timeout
        (the pause counts) rebuilds the producer, whose init_transactions
        fences the old one, and the consumer rejoins. Both keep exactly-once;
        the verdict proves it.
        """
        if self.zombie_exit is None:
            return self.rejoined
        return self.zombie_exit in (ExitCode.FENCED, ExitCode.KAFKA_FATAL)


def run_zombie(
    run: ChaosRun,
    *,
    records: int,
    sends_per_second: float,
    pause_seconds: float,
    transaction_timeout_ms: int = 5000,
    gates: int = 2,
    exit_timeout: float = 60.0,
) -> tuple[Verdict, Measured, ZombieOutcome]:
    """Gate A is SIGSTOPped mid-transaction while traffic flows; the others must take over; A resumed must be fenced.

    The pause must outlast the session timeout (10 s, fixed in
    worker/kafka/clients.py) and the transaction timeout plus the broker's
    abort scan (``transaction.abort.timed.out.transaction.cleanup.interval.ms``,
    10 s by default), so that A's transaction has been aborted by the coordinator.
    """
    measured = Measured()
    run.setup_preferences()
    env = {
        "SENDGATE_GATE__TRANSACTION_TIMEOUT_MS": str(transaction_timeout_ms),
        # Group commit ends a transaction milliseconds after it begins at this
        # load, so a pause rarely caught one open (a fast gate missed all ten
        # tries). Committing on the interval keeps each open for most of its
        # 0.2 s; fencing does not depend on when a transaction ends.
        "SENDGATE_GATE__COMMIT_WHEN_CAUGHT_UP": "false",
    }
    _, fleet = start_fleet(run, gates, env)
    zombie, survivors = fleet[0], fleet[1:]
    started = time.monotonic()
    with run.monitor() as monitor:
        threads = TrafficThreads(
            run.settings, run.codec, run.traffic, sends=records, sends_per_second=sends_per_second, events_per_second=10
        ).start()
        # Both gates must own partitions and be deciding before the pause.
        monitor.wait_deciding()
        deadline = time.monotonic() + 60
        while not all(_owns_partitions(gate) for gate in fleet):
            assert time.monotonic() < deadline, f"the gates never shared the partitions\n{run.workers.tails()}"
            time.sleep(0.2)
        time.sleep(2.0)
        run.workers.assert_running()
        # Pause until caught inside a transaction (a short pause is well within the
        # session timeout, so a miss is resumed and tried again a moment later).
        mid_transaction = False
        for _attempt in range(10):
            zombie_partitions = assigned_partitions(zombie)
            zombie.pause()
            paused_at = time.monotonic()
            if open_transaction_partitions(run, watch_seconds=1.5):
                mid_transaction = True
                break
            zombie.resume()
            time.sleep(random.uniform(0.5, 1.5))
        remaining = pause_seconds - (time.monotonic() - paused_at)
        time.sleep(max(0.0, remaining))
        # The zombie's partitions must have moved on while it slept: the survivor took them over.
        took_over = monitor.partitions_resumed(zombie_partitions, paused_at)
        assert all(s.alive for s in survivors), f"a surviving gate died\n{run.workers.tails()}"
        log_before_resume = _log_size(zombie)
        zombie.resume()
        resumed_at = time.monotonic()
        code, rejoined = _fenced_or_rejoined(zombie, log_before_resume, timeout=exit_timeout)
        measured.pauses.append(time.monotonic() - resumed_at)
        threads.join(timeout=records / sends_per_second * 3 + 120)
        monitor.wait_caught_up(len(run.ledger.sends), timeout=300)
        measured.longest_stall = monitor.longest_stall()
    measured.duration = time.monotonic() - started
    finish(run, measured)
    outcome = ZombieOutcome(mid_transaction, code, took_over, zombie.tail(4000), rejoined)
    return run.check(), measured, outcome


def _log_size(gate: WorkerProcess) -> int:
    return gate.log_paths[-1].stat().st_size if gate.log_paths else 0


def _fenced_or_rejoined(zombie: WorkerProcess, log_offset: int, *, timeout: float) -> tuple[int | None, bool]:
    """Wait until the resumed zombie exits (its code) or logs a new assignment after ``log_offset`` (None, True)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = zombie.poll()
        if code is not None:
            return code, False
        with zombie.log_paths[-1].open("rb") as log:
            log.seek(log_offset)
            if b'"event": "gate assigned"' in log.read():
                return None, True
        time.sleep(0.2)
    return zombie.poll(), False


def assigned_partitions(gate: WorkerProcess) -> set[int]:
    """The partitions the gate's current incarnation holds, from its "gate assigned/revoked/lost" log lines."""
    held: set[int] = set()
    if not gate.log_paths:
        return held
    for line in gate.log_paths[-1].read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        event, partitions = entry.get("event", ""), set(entry.get("partitions") or [])
        if event == "gate assigned":
            held |= partitions
        elif event.startswith(("gate revoked", "gate partitions lost")):
            held -= partitions
    return held


def _owns_partitions(gate: WorkerProcess) -> bool:
    return bool(assigned_partitions(gate))


class ExitWatch:
    """No supervisor: notes every worker that exits on its own (each one fails the row) and never restarts it.

    Raises at once when no progress is possible any more (the applier or every
    gate gone); otherwise the run goes on, so the row still counts what was
    lost or doubled. Called from the test's main thread only.
    """

    def __init__(self, run: ChaosRun, applier: WorkerProcess, fleet: list[WorkerProcess], measured: Measured) -> None:
        self._run = run
        self._applier = applier
        self._fleet = fleet
        self._measured = measured

    def __call__(self) -> None:
        for worker in [self._applier, *self._fleet]:
            code = worker.poll()
            if code is not None and not any(name == worker.name for name, _ in self._measured.worker_exits):
                self._measured.worker_exits.append((worker.name, code))
                self._measured.notes.append(f"{worker.name} exited {code}")
        if self._applier.poll() is not None or all(gate.poll() is not None for gate in self._fleet):
            raise AssertionError(f"workers exited, nothing can be decided any more: {self._measured.worker_exits}\n{self.post_mortem()}")

    def post_mortem(self) -> str:
        """Fatal errors and recoveries the workers logged, and where each live worker is (its stack, via SIGABRT)."""
        workers = [self._applier, *self._fleet]
        fatal = [
            f"  {worker.name}: {line[:300]}"
            for worker in workers
            for line in worker.logs().splitlines()
            if "FATAL" in line or "fenced" in line or "rebuilding" in line
        ]
        stacks = [f"  {worker.name} (alive):\n{worker.dump_stack()}" for worker in workers if worker.alive]
        return (
            "fatal errors and rebuilds in the workers' logs:\n" + "\n".join(fatal[-30:] or ["  none"])
            + "\nwhere the live workers were (SIGABRT stack dumps):\n" + "\n".join(stacks or ["  none"])
        )


def recoveries_logged(workers: list[WorkerProcess]) -> dict[str, int]:
    """How often each worker rebuilt a dead Kafka client in-process (its "rebuilding" log lines)."""
    counts: dict[str, int] = {}
    for worker in workers:
        n = sum(1 for line in worker.logs().splitlines() if "Kafka client dead: rebuilding it in-process" in line)
        if n:
            counts[worker.name] = n
    return counts


# --- 3. broker restarts -------------------------------------------------------------


def run_broker_faults(
    run: ChaosRun,
    *,
    gates: int,
    sends_per_second: float,
    faults: list[Callable[[], None]],
    settle_seconds: float = 5.0,
    resume_bound: float,
    tail_seconds: float = 5.0,
) -> tuple[Verdict, Measured]:
    """Paced traffic flows while each of ``faults`` (a broker restart) runs in turn, with no supervisor.

    The traffic lasts until the last fault is over (plus ``tail_seconds``), so
    every fault lands with records in flight whatever the gates' speed
    (``effective_faults`` counts the faults that did: traffic still flowing
    and records waiting once the broker was back). ``pauses`` are, per fault,
    the seconds from the broker answering again (:class:`BrokerAnswers`; when
    the cluster never stopped answering, the moment the fault was over) until
    every partition had decided a record again, read from the committed
    outputs (:mod:`tests.chaos.resume`); ``worker_exits`` lists the workers
    that exited.
    """
    measured = Measured()
    run.setup_preferences()
    applier, fleet = start_fleet(run, gates)
    watch = ExitWatch(run, applier, fleet, measured)
    started = time.monotonic()
    wall_offset = time.time() - time.monotonic()
    backs: list[float] = []
    coordinator_backs: list[float] = []
    flowed: list[bool] = []  # per fault: traffic flowing when it began and when the broker was back
    with run.monitor() as monitor:
        threads = TrafficThreads(
            run.settings, run.codec, run.traffic, sends=10**9, sends_per_second=sends_per_second, events_per_second=10
        ).start()
        try:
            monitor.wait_deciding()
            for fault in faults:
                deadline = time.monotonic() + settle_seconds
                while time.monotonic() < deadline:
                    watch()
                    time.sleep(0.2)
                flowing = threads.running
                fault_started = time.monotonic()
                bootstrap = run.settings.kafka.bootstrap_servers
                answers = None
                if "," in bootstrap:  # a cluster answers throughout: "back" is the fault's end (back in sync)
                    fault()
                    answered_at = None
                else:
                    with BrokerAnswers(bootstrap, group=run.settings.gate.group_id, topic=run.settings.topics.requested) as answers:
                        fault()
                    answered_at = answers.back_at
                over = time.monotonic()
                back_at = answered_at if answered_at is not None else over + wall_offset
                backs.append(back_at)
                back = back_at - wall_offset
                measured.notes.append(
                    f"fault took {over - fault_started:.1f} s, broker answered {max(0.0, over - back):.1f} s before it was over"
                )
                try:
                    # Only a liveness check here (a partition that never moves fails at once);
                    # the pauses are read from the outputs once the run is checked.
                    measured.monitor_pauses.append(
                        monitor.every_partition_resumed_after(back, timeout=resume_bound, tick=watch)
                    )
                except AssertionError as exc:
                    raise AssertionError(f"{exc}\n{watch.post_mortem()}") from None
                if answers is not None and answered_at is not None:
                    coordinator_at = answers.coordinator_back(timeout=30)
                    if coordinator_at is not None:
                        coordinator_backs.append(coordinator_at)
                        measured.coordinator_waits.append(coordinator_at - answered_at)
                flowed.append(flowing and threads.running)
            time.sleep(tail_seconds)
        finally:
            threads.stop()
        threads.join(timeout=120)
        try:
            monitor.wait_caught_up(len(run.ledger.sends), timeout=300, tick=watch)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{watch.post_mortem()}") from None
        measured.longest_stall = monitor.longest_stall()
    watch()
    measured.duration = time.monotonic() - started
    recoveries = recoveries_logged([applier, *fleet])
    measured.notes.append(f"in-process Kafka client rebuilds {recoveries or 'none'}")
    finish(run, measured)
    verdict = run.check()
    sends = list(run.ledger.sends.values())
    measured.resumes = [resume_after(back_at, sends, verdict.outputs, wall_offset=wall_offset) for back_at in backs]
    measured.pauses = [r.every_partition for r in measured.resumes]
    measured.effective_faults = sum(
        1
        for back_at, flowing in zip(backs, flowed, strict=True)
        if flowing and waited_through(back_at, sends, verdict.outputs, wall_offset=wall_offset) > 0
    )
    measured.coordinator_pauses = [
        resume_after(at, sends, verdict.outputs, wall_offset=wall_offset).every_partition for at in coordinator_backs
    ]
    return verdict, measured


# --- 4. Redis faults ------------------------------------------------------------------

REDIS_STOPPED = "stopped"  # SHUTDOWN SAVE, down for a while, back with its data
REDIS_EMPTY = "restarted-empty"  # down for a while, back empty: rebuilt from the topic
REDIS_FLUSHALL = "flushall"  # emptied under the running workers


@dataclass
class RedisFaultOutcome:
    resumed_after: float  # seconds from "state back" (Redis answers / the flush) to the next commit
    ready_after: float | None  # seconds from "state back" until the store's ready flag was seen again
    decided_while_unavailable: int  # decisions stamped while Redis was down or the store not ready


def _store_ready(client, meta_keys: list[str]) -> bool:  # type: ignore[no-untyped-def]
    """Every shard's meta holds a generation and is ready (a shard not yet rebuilt: not ready)."""
    try:
        pipe = client.pipeline(transaction=False)
        for key in meta_keys:
            pipe.hgetall(key)
        metas = pipe.execute()
    except redis.RedisError:  # down: not ready
        return False
    return all(bool(meta.get(b"generation")) and meta.get(b"ready") == b"1" for meta in metas)


def run_redis_fault(
    run: ChaosRun,
    server,  # tests.chaos.instances.RedisServer the run's settings point at
    *,
    fault: str,
    records: int,
    sends_per_second: float,
    outage_seconds: float = 5.0,
    warmup_seconds: float = 2.0,
    resume_bound: float = 60.0,
) -> tuple[Verdict, Measured, RedisFaultOutcome]:
    """Traffic flows; Redis fails once (``fault``); nothing may be decided until state is back and current."""
    measured = Measured()
    run.setup_preferences()
    start_fleet(run, 2)
    meta_keys = FactAddressing(run.settings.state).meta_keys
    started = time.monotonic()
    with run.monitor() as monitor:
        threads = TrafficThreads(
            run.settings, run.codec, run.traffic, sends=records, sends_per_second=sends_per_second, events_per_second=20
        ).start()
        monitor.wait_deciding()
        time.sleep(warmup_seconds)
        run.workers.assert_running()
        unavailable_from = time.time()
        if fault == REDIS_FLUSHALL:
            server.client().flushall()
        else:
            server.stop(keep_data=fault == REDIS_STOPPED)
            time.sleep(outage_seconds)
            server.start()
        back_wall, back = time.time(), time.monotonic()
        # Watch the store's ready flag: decisions stamped before it is seen again are suspect.
        client = server.client()
        last_not_ready = back_wall if fault != REDIS_STOPPED else unavailable_from
        ready_after: float | None = None
        deadline = back + resume_bound
        while time.monotonic() < deadline:
            if _store_ready(client, meta_keys):
                ready_after = time.monotonic() - back
                break
            last_not_ready = time.time()
            time.sleep(0.02)
        client.close()
        resumed = monitor.resumed_after(back, timeout=resume_bound)
        measured.pauses.append(resumed)
        measured.effective_faults = 1
        threads.join(timeout=records / sends_per_second * 3 + 120)
        monitor.wait_caught_up(len(run.ledger.sends), timeout=300)
        measured.longest_stall = monitor.longest_stall()
    run.workers.assert_running()
    measured.duration = time.monotonic() - started
    finish(run, measured)
    verdict = run.check()
    # One second of slack: a batch read just before the fault is stamped just after it.
    window = (int((unavailable_from + 1.0) * 1000), int(last_not_ready * 1000))
    decided_inside = sum(
        1
        for outs in verdict.outputs.values()
        for o in outs
        if o.decided_at_ms is not None and window[0] <= o.decided_at_ms <= window[1]
    )
    return verdict, measured, RedisFaultOutcome(resumed, ready_after, decided_inside)
