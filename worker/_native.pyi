"""The gate's and the applier's compiled per-record core (Rust, ``worker/native``), built by maturin.

One call per consumed batch each way: :meth:`GateCore.prepare` takes the
values of a ``consume()`` batch and returns the read script's arguments;
:meth:`PreparedBatch.decide` takes the script's reply and returns where every
record goes. The applier's :meth:`ApplierCore.plan` and
:meth:`PlannedEvents.apply` do the same for preference events, returning the
fact writes packed for the commit script. The core is pure (no I/O, clock or environment) and releases the
GIL while it works. What it cannot answer exactly like the Python reference it
asks ``fallback`` (see :class:`Fallback`), record by record.
"""

from typing import Any, Protocol

from worker.models import PreferenceEvent, SendHead

__version__: str
FIELD_BYTES: int
"""Bytes of one hash field: subject digest, kind tag, qualifier digest (``worker.state.addressing.FIELD_BYTES``)."""

class Fallback(Protocol):
    """The Python reference, asked by the core for what only it can answer."""

    def decode_head(self, value: Any) -> SendHead | tuple[str, str]:
        """The head of a value the core would not read (other writer schema, unusual encoding, bad header),
        or ``(error_class, detail)`` when it is poison."""

    def normalize_email(self, raw: str) -> str | None:
        """email-validator's answer for an address the core is not sure of."""

    def normalize_phone(self, raw: str) -> str | None:
        """phonenumbers' answer (in the default region) for a number the core is not sure of."""

    def int_text(self, raw: str) -> str | None:
        """``str(int(raw))``, or None where ``int`` refuses it: integers inside stored facts not written canonically."""

    def encode_suppressed(self, value: bytes, decision: dict[str, Any]) -> bytes | tuple[str, str]:
        """The SuppressedSend of a request the core did not decode itself, or ``(error_class, detail)``."""

class GateCore:
    """Built once from settings; the hash secret and layout must be the store's."""

    def __init__(
        self,
        *,
        hash_secret: str,
        key_prefix: str,
        buckets_per_org: int,
        shards: int,
        policy_version: str,
        gate_instance: str,
        send_schema_id: int,
        suppressed_schema_id: int,
        reason_symbols: list[str],
        latency_bounds: list[float],
        fallback: Fallback,
        release_gil: bool = True,
    ) -> None:
        """``release_gil=False`` keeps the GIL while the core works (an A/B switch; the gate releases it)."""
    def prepare(self, values: list[bytes | None]) -> PreparedBatch:
        """Decode and validate each value, normalise ``to``/``from``, name the facts and lay out the read.

        Raises what ``fallback`` raises (e.g. a schema registry that cannot be reached).
        """

class PreparedBatch:
    """A consumed batch ready for its state read."""

    @property
    def keys(self) -> list[str]:
        """Redis hash keys to read (without the meta key), in the read script's order."""
    @property
    def fields(self) -> list[bytes]:
        """Per key, its wanted fields concatenated (``FIELD_BYTES`` each)."""
    @property
    def fact_count(self) -> int:
        """Distinct facts the read asks for; the script must answer for exactly these."""
    def read_state(self, fd: int, meta_keys: list[str], timeout_seconds: float | None) -> tuple[list[int], list[list[bytes]], list[Any]]:
        """:func:`read_facts` of this batch's ``keys`` and ``fields``, without handing them to Python."""
    @property
    def size(self) -> int:
        """Records to decide (the batch less its poison)."""
    @property
    def poison(self) -> list[tuple[int, str, str]]:
        """``(index, error_class, detail)`` of undecodable values, for the dead-letter headers."""
    def describe(self) -> list[tuple[int, str | None, str | None, list[tuple[str, bytes]]]]:
        """Per record ``(index, to, sender_domain, [(key, field), ...])``, facts in ``PreparedRequest.keys`` order."""
    def decide(self, found: list[Any], now_ms: int, state: str) -> Outcome:
        """Decide every record on the read script's reply after its first two items.

        ``found`` holds (position, value) pairs of the facts present; ``state``
        is the store status text for the details and headers. Raises
        ``ValueError`` on a reply or stored value the applier never writes.
        """

class Outcome:
    """A decided batch: per record where it goes, and the tallies for the metrics."""

    allowed: list[int]
    """Indexes allowed with the plain headers."""
    bypassed: list[tuple[int, str]]
    """``(index, "REASON,...")``: allowed transactional email whose opt-outs were bypassed."""
    suppressed: list[tuple[int, bytes, str]]
    """``(index, SuppressedSend value, primary reason)``."""
    poison: list[tuple[int, str, str]]
    """``(index, error_class, detail)`` of records whose SuppressedSend could not be encoded."""
    decisions: dict[tuple[str, str, str, str], int]
    """``(channel, category, "allowed" | "suppressed", primary reason or "NONE") -> count``."""
    reasons: dict[tuple[str, str, str], int]
    """``(channel, category, reason) -> count`` over every reason of every suppressed record."""
    bypasses: dict[str, int]
    """``reason -> count`` of bypassed opt-outs."""
    latency_buckets: list[int]
    """Decision latencies counted per bucket of ``latency_bounds`` (``bisect_left``)."""
    latency_sum: float
    """Sum of the decision latencies, seconds."""
    def latencies(self) -> list[float]:
        """Each decided record's latency in seconds, in the order decided."""
    def verdicts(self) -> list[tuple[int, list[str], dict[str, str], list[str]]]:
        """Per decided record ``(index, reasons, details, bypassed)``; for tests and tools."""

class ApplierFallback(Fallback, Protocol):
    """What the applier's core asks the Python reference besides :class:`Fallback`."""

    def decode_event(self, value: Any) -> PreferenceEvent | tuple[str, str]:
        """The event of a value the core would not read, or ``(error_class, detail)`` when it is undecodable."""

    def normalize_domain(self, raw: str) -> str | None:
        """``normalize_domain``'s answer for a sender domain the core is not sure of."""

class ApplierCore:
    """The applier's per-event core; built once from settings, the hash secret and layout must be the store's."""

    def __init__(
        self,
        *,
        hash_secret: str,
        key_prefix: str,
        buckets_per_org: int,
        shards: int,
        event_schema_id: int,
        fallback: ApplierFallback,
        release_gil: bool = True,
    ) -> None: ...
    def plan(self, values: list[bytes | None], keys: list[bytes | None]) -> PlannedEvents:
        """Decode and validate each value, normalise its addresses, name its facts and lay out the read.

        ``keys`` are the messages' Kafka keys, for the miskeyed count. Raises what ``fallback`` raises.
        """

class PlannedEvents:
    """A consumed batch of preference events ready for its state read."""

    @property
    def keys(self) -> list[str]:
        """Redis hash keys to read (without the meta key), in the read script's order."""
    @property
    def fields(self) -> list[bytes]:
        """Per key, its wanted fields concatenated (``FIELD_BYTES`` each)."""
    @property
    def fact_count(self) -> int:
        """Distinct facts the read asks for; the script must answer for exactly these."""
    @property
    def size(self) -> int:
        """Events decoded (the batch less its undecodable values)."""
    @property
    def undecodable(self) -> list[tuple[int, str, str]]:
        """``(index, error_class, detail)`` of values that cannot be decoded (``UNDECODABLE``)."""
    @property
    def miskeyed(self) -> list[tuple[int, str, str]]:
        """``(index, type, event_id)`` of valid events whose Kafka key is not their normalised subject."""
    def describe(self) -> list[tuple[int, list[tuple[str, bytes]]]]:
        """Per decoded event ``(index, [(key, field), ...])``, its facts in plan order; for tests and tools."""
    def apply(self, found: list[Any]) -> AppliedEvents:
        """Apply the events in batch order, each seeing the writes of the ones before it.

        ``found`` is the read script's reply after its first two items. Raises
        ``ValueError`` on a reply or stored value the applier never writes.
        """

class AppliedEvents:
    """An applied batch: the fact writes packed for the commit script, the rejections, the tallies."""

    keys: list[str]
    """The Redis hashes written."""
    writes: list[bytes]
    """Per hash of ``keys``, one string: for each fact its field, its value's length (4 bytes, big-endian), its value."""
    write_count: int
    """Facts written."""
    rejections: list[tuple[int, str, str]]
    """``(index, reason, detail)`` of rejected events; a rejected ``SMS_OPT_OUT`` may still write (SPEC §4)."""
    tallies: dict[tuple[str, str], int]
    """``(type, "applied" | "rejected") -> count`` over the decoded events."""


def read_facts(
    fd: int, keys: list[str], fields: list[bytes], shards: list[int], meta_keys: list[str], timeout_seconds: float | None
) -> tuple[list[int], list[list[bytes]], list[Any]]:
    """Facts read on a standalone Redis, sent and answered on the connected socket ``fd`` without the GIL.

    ``fields[i]`` are the wanted fields of ``keys[i]`` concatenated, ``shards[i]``
    its shard. One ``MULTI``; per shard (ascending) ``HGETALL`` of its meta key
    (from ``meta_keys``) and an ``HMGET`` of each of its hashes; ``EXEC``.
    Answers ``(shards, metas, found)``: the shards read, each one's meta hash as
    a flat name/value list, and the facts present as the flat ``[position,
    value, ...]`` the read script answers after its first two items. Raises
    ``ConnectionError`` (the socket failed or closed), ``TimeoutError`` (no
    whole answer within ``timeout_seconds``; ``None`` waits) or ``ValueError``
    (an error or unexpected reply, a shard without a meta key, lists of unequal
    length); after any of them the socket is unusable.
    """
