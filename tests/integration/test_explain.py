"""`sendgate explain` against the live store."""

from __future__ import annotations

from tests.integration.support import now_ms, preference_event, produce_events
from tests.integration.test_replay import apply_all, cli, json_out, sendgate
from worker.codec import AvroCodec
from worker.models import OrgSettings, PreferenceSource, UnsubscribeScope, UserOptOutScope
from worker.models import PreferenceEventType as T
from worker.ops.explain import explain_command

EMAIL = (
    "--org",
    "org-a",
    "--user",
    "user-1",
    "--contact",
    "c-1",
    "--channel",
    "EMAIL",
    "--to",
    " Jane@Example.com ",
    "--from",
    "agent@lender.example",
)


def facts_by_kind(document):
    return {fact["kind"]: fact for fact in document["facts"]}


def test_a_suppressed_send_is_explained_with_its_reasons_and_facts(kafka_topics):
    settings = kafka_topics
    codec = AvroCodec.from_settings(settings)
    t0 = now_ms() - 60_000
    produce_events(
        settings,
        codec,
        [
            preference_event(
                T.ORG_SETTINGS_CHANGED,
                event_id="settings-1",
                occurred_at=t0,
                source=PreferenceSource.API,
                settings=OrgSettings(UnsubscribeScope.ORGANIZATION, UserOptOutScope.USER),
            ),
            preference_event(T.CONTACT_SILENCED, event_id="silence-1", contact_id="c-1", occurred_at=t0 + 1, source=PreferenceSource.USER),
            preference_event(T.EMAIL_UNSUBSCRIBE, email="jane@example.com", domain="lender.example", occurred_at=t0 + 2),
            preference_event(T.EMAIL_OPT_OUT_USER, email="jane@example.com", user_id="user-2"),
            preference_event(T.SMS_OPT_IN, phone="+14155550100", occurred_at=t0 + 3, source=PreferenceSource.CONTACT),
            # Rejected (no earlier opt-in) but remembered: SPEC §4's event-time rule.
            preference_event(T.SMS_OPT_OUT, phone="+14155550101", occurred_at=t0 + 4, source=PreferenceSource.CONTACT),
        ],
    )
    apply_all(settings)

    document = json_out(cli(explain_command, settings, *EMAIL, "--json"))
    decision = document["decision"]
    assert decision["outcome"] == "SUPPRESSED" and not decision["allowed"]
    assert decision["reasons"] == ["SILENCED", "EMAIL_OPT_OUT_ORGANIZATION"]
    assert decision["primary_reason"] == "SILENCED"
    assert "silence-1" in decision["details"]["SILENCED"]
    assert "scope=ORGANIZATION" in decision["details"]["EMAIL_OPT_OUT_ORGANIZATION"]
    assert document["normalized"] == {"to": "jane@example.com", "sender_domain": "lender.example"}

    facts = facts_by_kind(document)
    silenced = facts["SILENCED"]
    assert silenced["present"] and silenced["read_by_policy"] and silenced["subject"] == {"contact_id": "c-1"}
    assert silenced["value"] == {
        "value": True,
        "occurred_at": t0 + 1,
        "occurred_at_iso": silenced["value"]["occurred_at_iso"],
        "event_id": "silence-1",
    }
    unsubscribes = facts["EMAIL_UNSUBSCRIBES"]["value"]
    assert unsubscribes == [
        {
            "domain": "lender.example",
            "occurred_at": t0 + 2,
            "occurred_at_iso": unsubscribes[0]["occurred_at_iso"],
            "scope_in_force": "ORGANIZATION",
        }
    ]
    assert facts["ORG_SETTINGS"]["value"]["current"] == {"unsubscribe_scope": "ORGANIZATION", "user_opt_out_scope": "USER"}
    assert facts["EMAIL_OPT_OUT_ANY_USER"]["value"] == {"set": True}, "another user's opt-out is held for the address"
    assert facts["EMAIL_OPT_OUT_USER"]["present"] is False, "not by this user"
    assert facts["DO_NOT_CONTACT"]["present"] is False and facts["EMAIL_OPT_OUT_ORGANIZATION"]["present"] is False
    assert facts["EMAIL_OPT_OUT_DOMAIN"]["subject"] == {"email": "jane@example.com", "sender_domain": "lender.example"}
    store = document["store"]
    assert store["ready"] and store["fresh"] and store["generation"]
    assert sum(store["applied"].values()) == 6

    table = cli(explain_command, settings, *EMAIL)
    assert table.exit_code == 0, table.output
    for words in ("SUPPRESSED", "SILENCED", "EMAIL_OPT_OUT_ORGANIZATION", "jane@example.com", "silence-1", "Facts held", "generation"):
        assert words in table.stdout, words

    sms = json_out(
        cli(explain_command, settings, "--org", "org-a", "--contact", "c-2", "--channel", "sms", "--to", "(415) 555-0100", "--json")
    )
    assert sms["decision"]["outcome"] == "ALLOWED" and sms["decision"]["reasons"] == []
    sms_facts = facts_by_kind(sms)
    assert sms_facts["SMS_CONSENT"]["value"] == {
        "consent": "in",
        "earliest_opt_in": t0 + 3,
        "earliest_opt_in_iso": sms_facts["SMS_CONSENT"]["value"]["earliest_opt_in_iso"],
    }
    assert sms_facts["SMS_CONSENT"]["subject"] == {"phone": "+14155550100"}
    assert sms_facts["OK_TO_EMAIL"]["read_by_policy"] is False

    remembered_args = ("--org", "org-a", "--contact", "c-2", "--channel", "sms", "--to", "+14155550101")
    remembered = json_out(cli(explain_command, settings, *remembered_args, "--json"))
    assert remembered["decision"]["reasons"] == ["SMS_NOT_OPTED_IN"]
    assert remembered["decision"]["details"]["SMS_NOT_OPTED_IN"] == f"sms_consent=none opt-out@{t0 + 4}"
    assert facts_by_kind(remembered)["SMS_CONSENT"]["value"]["latest_opt_out"] == t0 + 4
    remembered_table = cli(explain_command, settings, *remembered_args)
    assert "remembered opt-out at" in remembered_table.stdout, remembered_table.stdout

    transactional = json_out(cli(explain_command, settings, *EMAIL, "--contact", "c-3", "--category", "TRANSACTIONAL", "--json"))
    assert transactional["decision"]["allowed"] and transactional["decision"]["bypassed"] == ["EMAIL_OPT_OUT_ORGANIZATION"]


def test_explain_on_a_store_not_yet_built_says_it_cannot_be_trusted(kafka_topics):
    result = cli(explain_command, kafka_topics, *EMAIL, "--json")
    document = json_out(result)
    assert document["store"]["fresh"] is False and "NOT TRUSTWORTHY" in document["store"]["note"]
    assert document["decision"]["allowed"] is True  # what the (empty) store would say: hence the warning


def test_explain_rejects_bad_arguments_with_exit_2(settings):
    for args, words in (
        (("--org", "o", "--contact", "c", "--channel", "FAX", "--to", "x"), "'FAX' is not one of"),
        (("--org", "o", "--contact", "c", "--channel", "EMAIL", "--to", "a@b.example", "--user", "u"), "--from is required for EMAIL"),
        (("--org", "o", "--contact", "c", "--channel", "SMS", "--to", "x", "--category", "NEWSLETTER"), "'NEWSLETTER' is not one of"),
        (("--contact", "c", "--channel", "SMS", "--to", "x"), "Missing option '--org'"),
    ):
        result = cli(explain_command, settings, *args)
        assert result.exit_code == 2, (args, result.output)
        assert words in result.stderr, result.stderr
    real = sendgate(settings, "explain", "--org", "o", "--contact", "c", "--channel", "FAX", "--to", "x")
    assert real.returncode == 2 and "Invalid value for '--channel'" in real.stderr


def test_explain_fails_clearly_when_redis_is_unreachable(kafka_topics):
    result = sendgate(kafka_topics, "explain", *EMAIL, env={"SENDGATE_REDIS__URL": "redis://:hunter2@127.0.0.1:1/0"})
    assert result.returncode == 15, result.stderr  # ExitCode.UNREACHABLE
    assert "Redis unreachable at redis://127.0.0.1:1/0" in result.stderr
    assert "hunter2" not in result.stderr and "Traceback" not in result.stderr
