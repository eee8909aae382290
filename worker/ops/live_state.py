"""How every operator tool decides against the live store.

Reachable services are checked first, then every read goes behind the gate's
freshness barrier (:class:`~worker.gate.freshness.FreshStateReader`), so a
tool never acts on a store that is empty, rebuilding or behind.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from worker.config import Settings
from worker.errors import ExitCode, FatalError, ServiceUnreachable
from worker.gate.freshness import FreshStateReader
from worker.kafka.admin import admin_client
from worker.kafka.offsets import CommittedEndOffsets, OffsetsUnavailable
from worker.metrics import Metrics
from worker.models import SendRequest
from worker.ops.topic_reader import check_topics, with_retries
from worker.policy.decision import Decision, DecisionPolicy
from worker.policy.facts import FactKey
from worker.state.errors import StateNotReady, StateUnavailable
from worker.state.redis_store import RedisStateStore
from worker.state.store import Snapshot

logger = logging.getLogger(__name__)


class StateRefused(FatalError):
    """The state store is not complete and current enough to decide on: the tool stops (fails closed)."""

    exit_code = ExitCode.STATE_FATAL


def redacted_url(url: str) -> str:
    """A Redis URL without its credentials, for error messages."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"


class LiveState:
    """Decides requests against the live store, behind the gate's freshness barrier."""

    def __init__(
        self, *, settings: Settings, store: RedisStateStore, reader: FreshStateReader, end_offsets: CommittedEndOffsets
    ) -> None:
        self.settings = settings
        self.store = store
        self._reader = reader
        self._end_offsets = end_offsets
        self.policy = DecisionPolicy(default_phone_region=settings.state.default_phone_region)

    @classmethod
    def connect(cls, settings: Settings, *, topics: Sequence[str] = (), metrics: Metrics | None = None) -> LiveState:
        """Check Kafka (and ``topics``) and Redis answer before anything is read or written."""
        check_topics(settings, [settings.topics.preferences, *topics])
        store = RedisStateStore.from_settings(settings.redis, settings.state)
        try:
            store.check()  # an evicting Redis could lose an opt-out, or a replay marker
        except StateUnavailable as exc:
            store.close()
            raise ServiceUnreachable(f"Redis unreachable at {redacted_url(settings.redis.url)}: {exc}") from exc
        end_offsets = CommittedEndOffsets(admin_client(settings), settings.topics.preferences)
        reader = FreshStateReader(
            store=store,
            end_offsets=end_offsets,
            metrics=metrics or Metrics(),
            barrier_timeout_seconds=settings.gate.barrier_timeout_seconds,
        )
        return cls(settings=settings, store=store, reader=reader, end_offsets=end_offsets)

    def close(self) -> None:
        self.store.close()

    def read(self, keys: Iterable[FactKey]) -> Snapshot:
        """Facts the gate would trust now; :class:`StateRefused` when the store is not there yet."""
        keys = list(keys)
        try:
            return with_retries(lambda: self._reader.read(keys))
        except StateNotReady as exc:
            raise StateRefused(f"the state store cannot be trusted now ({exc}); nothing was decided on it") from exc
        except StateUnavailable as exc:
            raise ServiceUnreachable(f"Redis unreachable at {redacted_url(self.settings.redis.url)}: {exc}") from exc
        except OffsetsUnavailable as exc:
            raise ServiceUnreachable(f"Kafka unreachable at {self.settings.kafka.bootstrap_servers}: {exc}") from exc

    def read_unchecked(self, keys: Iterable[FactKey]) -> Snapshot:
        """Facts as stored, fresh or not (explain shows them with a warning)."""
        try:
            return self.store.read(keys)
        except StateUnavailable as exc:
            raise ServiceUnreachable(f"Redis unreachable at {redacted_url(self.settings.redis.url)}: {exc}") from exc

    def barrier(self) -> dict[int, int]:
        try:
            return with_retries(self._end_offsets.read)
        except OffsetsUnavailable as exc:
            raise ServiceUnreachable(f"Kafka unreachable at {self.settings.kafka.bootstrap_servers}: {exc}") from exc

    def decide(self, requests: Sequence[SendRequest]) -> list[Decision]:
        """One state round trip for the whole batch, like a gate batch."""
        prepared = [self.policy.prepare(request) for request in requests]
        snapshot = self.read(key for p in prepared for key in p.keys)
        return [self.policy.decide(p, snapshot.facts) for p in prepared]
