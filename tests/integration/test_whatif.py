"""`sendgate what-if`: past sends decided against the current state, nothing produced."""

from __future__ import annotations

from tests.integration.support import (
    now_ms,
    preference_event,
    produce_events,
    produce_sends,
    read_committed,
    running_applier,
    running_gate,
    send_request,
    wait_for_outputs,
)
from tests.integration.test_replay import apply_all, cli, json_out, produce_suppressed, sendgate
from worker.codec import AvroCodec
from worker.models import PreferenceEventType as T
from worker.ops.whatif import what_if_command


def test_suppressed_records_are_compared_with_their_recorded_reasons(kafka_topics):
    settings = kafka_topics
    codec = AvroCodec.from_settings(settings)
    produce_events(settings, codec, [preference_event(T.EMAIL_OPT_OUT_ORGANIZATION, email="out@example.com")])
    at = now_ms() - 60_000
    produce_suppressed(settings, codec, [
        # Silenced then, not any more (the store holds no silence).
        (send_request(contact_id="c-1", to="a@example.com"), ["SILENCED"], at),
        (send_request(contact_id="c-1", to="b@example.com", campaign_id="camp-2"), ["SILENCED"], at + 1),
        # Opted out then and now.
        (send_request(contact_id="c-2", to="out@example.com"), ["EMAIL_OPT_OUT_ORGANIZATION"], at + 2),
        (send_request(contact_id="c-3", to="a@example.com", org_id="org-b"), ["DO_NOT_CONTACT"], at + 3),
    ])
    apply_all(settings)

    document = json_out(cli(what_if_command, settings, "--org", "org-a", "--json"))
    assert document["evaluated"] == 3 and document["matched"] == 3 and not document["limit_reached"]
    assert document["then"]["suppressed"] == {"SILENCED": 2, "EMAIL_OPT_OUT_ORGANIZATION": 1}
    assert document["now"]["allowed"] == 2
    assert document["now"]["suppressed"] == {"EMAIL_OPT_OUT_ORGANIZATION": 1}
    assert document["changed"] == 2
    assert {"then": "SUPPRESSED:SILENCED", "now": "ALLOWED", "count": 2} in document["transitions"]

    assert json_out(cli(what_if_command, settings, "--campaign", "camp-2", "--json"))["evaluated"] == 1
    assert json_out(cli(what_if_command, settings, "--reason", "DO_NOT_CONTACT", "--json"))["now"]["allowed"] == 1
    limited = json_out(cli(what_if_command, settings, "--limit", "2", "--json"))
    assert limited["evaluated"] == 2 and limited["limit_reached"]
    table = cli(what_if_command, settings)
    assert table.exit_code == 0, table.output
    assert "SUPPRESSED:SILENCED" in table.stdout and "ALLOWED" in table.stdout
    assert read_committed(settings, settings.topics.requested) == [], "what-if produces nothing"


def test_requested_records_are_joined_with_what_the_gate_decided(kafka_topics):
    settings = kafka_topics
    codec = AvroCodec.from_settings(settings)
    produce_events(settings, codec, [preference_event(T.EMAIL_OPT_OUT_ORGANIZATION, email="out@example.com")])
    decided = [send_request(to="fine@example.com"), send_request(to="out@example.com"), send_request(to="later-out@example.com")]
    produce_sends(settings, codec, decided)
    with running_applier(settings), running_gate(settings):
        wait_for_outputs(settings, 3)
    undecided = send_request(to="fine@example.com")
    produce_sends(settings, codec, [undecided])  # no gate runs: its outcome is unknown
    produce_events(settings, codec, [preference_event(T.EMAIL_OPT_OUT_ORGANIZATION, email="later-out@example.com")])
    apply_all(settings)

    result = sendgate(settings, "what-if", "--topic", "requested", "--json")
    document = json_out(result)
    assert document["evaluated"] == 4
    assert document["then"] == {
        "allowed": 2,
        "suppressed": {"EMAIL_OPT_OUT_ORGANIZATION": 1},
        "suppressed_total": 1,
        "dead_letter": 0,
        "unknown": 1,
    }
    assert document["now"]["allowed"] == 2 and document["now"]["suppressed"] == {"EMAIL_OPT_OUT_ORGANIZATION": 2}
    assert document["changed"] == 1
    assert {"then": "ALLOWED", "now": "SUPPRESSED:EMAIL_OPT_OUT_ORGANIZATION", "count": 1} in document["transitions"]
    assert len(read_committed(settings, settings.topics.allowed)) == 2, "what-if produces nothing"


def test_what_if_rejects_bad_arguments_with_exit_2(settings):
    for args, words in (
        (("--topic", "allowed"), "'allowed' is not one of"),
        (("--topic", "requested", "--reason", "SILENCED"), "--reason selects suppressed records"),
        (("--until", "not-a-date"), "neither epoch milliseconds nor an ISO-8601"),
        (("--limit", "0"), "--limit"),
    ):
        result = cli(what_if_command, settings, *args)
        assert result.exit_code == 2, (args, result.output)
        assert words in result.stderr, result.stderr
