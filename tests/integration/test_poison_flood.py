"""SPEC §6.5: a flood of poison never stops the gate (stopping on a burst is opt-in, off by default).

5,000 undecodable values sit ahead of valid requests on every partition. The
gate, started with default settings, must dead-letter every one of them with
its source position, decide every valid record behind them (opt-outs
honoured), and still be running afterwards. With the old default (exit 12
after more than 1,000 dead letters in 10 s) it stopped here and decided
nothing behind the flood.
"""

from __future__ import annotations

import struct

from tests.integration.support import (
    headers_of,
    preference_event,
    produce_events,
    produce_raw,
    produce_sends,
    running_applier,
    send_request,
    start_cli,
    wait_for_outputs,
)
from worker.codec import AvroCodec
from worker.models import PreferenceEventType as T

POISON = 5000
VALID = 600


def poison_values(codec: AvroCodec, n: int) -> list[bytes | None]:
    """Every kind of undecodable value, round robin: not Avro, wrong magic, unknown schema id, truncated, empty."""
    good = codec.encode("SendRequest", send_request(message_id="template").to_record())
    kinds = [
        lambda i: b"not avro at all " + str(i).encode(),
        lambda i: b"\x07" + good[1:],  # wrong magic byte
        lambda i: good[:1] + struct.pack(">I", 99_999) + good[5:],  # a schema id nobody registered
        lambda i: good[: max(6, len(good) // 2)],  # cut off in the middle
        lambda i: b"",
    ]
    return [kinds[i % len(kinds)](i) for i in range(n)]


def test_a_flood_of_poison_is_dead_lettered_and_the_valid_records_behind_it_are_decided(kafka_topics):
    settings = kafka_topics
    codec = AvroCodec.from_settings(settings)
    opted_out = {f"flood{i}@example.com" for i in range(0, 50, 5)}
    produce_events(settings, codec, [preference_event(T.EMAIL_OPT_OUT_ORGANIZATION, email=a) for a in opted_out])
    # Poison first, with keys that spread it over every partition; valid requests behind it.
    produce_raw(settings, settings.topics.requested, [(f"poison-{i}".encode(), v) for i, v in enumerate(poison_values(codec, POISON))])
    requests = [send_request(message_id=f"valid-{i}", to=f"flood{i % 50}@example.com") for i in range(VALID)]
    produce_sends(settings, codec, requests)
    with running_applier(settings):
        gate = start_cli(settings, "gate")
        try:
            outputs = wait_for_outputs(settings, POISON + VALID, timeout=180)
            running = gate.poll()
            assert running is None, f"the gate stopped (exit {running}):\n{gate.output()[-3000:]}"
            assert gate.terminate() == 0, gate.output()[-3000:]
        finally:
            gate.close()
    dead = outputs.dead_letter
    assert len(dead) == POISON, f"{len(dead)} of {POISON} poison values dead-lettered"
    assert {m.key().decode() for m in dead} == {f"poison-{i}" for i in range(POISON)}
    assert all(headers_of(m).get("sendgate-source-topic") == settings.topics.requested for m in dead)
    decided = [m.key().decode() for m in outputs.allowed + outputs.suppressed]
    assert sorted(decided) == sorted(r.message_id for r in requests), "every valid record decided exactly once"
    allowed = {m.key().decode() for m in outputs.allowed}
    assert [r.message_id for r in requests if r.to in opted_out and r.message_id in allowed] == [], "wrongly allowed"
