"""``sendgate event``: publish one preference event, e.g. to unsilence a contact before a replay.

Operators (and the README's walk-through) need a way to record a preference
change without a CRM at hand. The event is validated by the same rules the
applier uses before it is produced, so a rejected event is reported here
instead of silently landing in ``preferences.rejected``.
"""

from __future__ import annotations

import time
import uuid

import click
from confluent_kafka import Producer

from worker.codec import AvroCodec
from worker.config import Settings
from worker.errors import ServiceUnreachable
from worker.kafka.clients import idempotent_producer_config
from worker.models import (
    OrgSettings,
    PreferenceEvent,
    PreferenceEventType,
    PreferenceSource,
    UnsubscribeScope,
    UserOptOutScope,
)
from worker.policy.event_keys import kafka_key
from worker.policy.events import PreferenceRules
from worker.terminal import console, run_guarded

CHOICE = {"case_sensitive": False}


def build_event(
    *, org: str, type_: str, source: str, email: str | None, phone: str | None, user: str | None,
    domain: str | None, contact: str | None, ok_to_email: bool | None, unsubscribe_scope: str | None,
    user_opt_out_scope: str | None,
) -> PreferenceEvent:
    settings = None
    if unsubscribe_scope or user_opt_out_scope:
        settings = OrgSettings(
            UnsubscribeScope((unsubscribe_scope or "DOMAIN").upper()),
            UserOptOutScope((user_opt_out_scope or "USER").upper()),
        )
    return PreferenceEvent(
        event_id=f"cli-{uuid.uuid4().hex}", org_id=org, occurred_at=int(time.time() * 1000),
        source=PreferenceSource(source.upper()), type=PreferenceEventType(type_.upper()), email=email, phone=phone,
        user_id=user, domain=domain, contact_id=contact, ok_to_email=ok_to_email, settings=settings,
    )


def publish(settings: Settings, event: PreferenceEvent, *, timeout_seconds: float = 15.0) -> None:
    codec = AvroCodec.from_settings(settings)
    producer = Producer({**idempotent_producer_config(settings), "message.timeout.ms": int(timeout_seconds * 1000)})
    errors: list[str] = []
    producer.produce(
        settings.topics.preferences,
        key=kafka_key(event, settings.state.default_phone_region).encode(),
        value=codec.encode("PreferenceEvent", event.to_record()),
        on_delivery=lambda error, _msg: errors.append(str(error)) if error is not None else None,
    )
    if producer.flush(timeout_seconds + 5) or errors:
        raise ServiceUnreachable(f"Kafka did not acknowledge the event: {errors[0] if errors else 'timed out'}")


@click.command("event")
@click.option("--org", required=True, help="Organization id.")
@click.option("--type", "type_", required=True, type=click.Choice([t.value for t in PreferenceEventType], **CHOICE))
@click.option("--source", type=click.Choice([s.value for s in PreferenceSource], **CHOICE), default="API", show_default=True)
@click.option("--email", help="Email address (email events, do-not-contact).")
@click.option("--phone", help="Phone number (SMS events, do-not-contact).")
@click.option("--user", help="Sending user id (EMAIL_OPT_OUT_USER).")
@click.option("--domain", help="Sender domain (EMAIL_OPT_OUT_DOMAIN, EMAIL_UNSUBSCRIBE).")
@click.option("--contact", help="Contact id (CONTACT_* events).")
@click.option("--ok-to-email/--not-ok-to-email", default=None, help="CONTACT_OK_TO_EMAIL_SET value.")
@click.option("--unsubscribe-scope", type=click.Choice([s.value for s in UnsubscribeScope], **CHOICE), help="ORG_SETTINGS_CHANGED.")
@click.option("--user-opt-out-scope", type=click.Choice([s.value for s in UserOptOutScope], **CHOICE), help="ORG_SETTINGS_CHANGED.")
@click.pass_obj
def event_command(settings: Settings, /, **options: object) -> None:
    """Publish one preference event to preferences.changed (checked by the applier's rules first)."""
    event = build_event(**options)  # type: ignore[arg-type]
    rules = PreferenceRules(default_phone_region=settings.state.default_phone_region)
    outcome = rules.apply(event, {})
    if outcome.rejection is not None and outcome.rejection[0].value in ("MISSING_FIELD", "INVALID_ADDRESS", "SOURCE_NOT_ALLOWED"):
        reason, detail = outcome.rejection
        raise click.UsageError(f"the applier would reject this event ({reason.value}): {detail}")

    def body() -> None:
        publish(settings, event)
        console.print(f"published {event.type.value} for organization {event.org_id} (event id {event.event_id})")

    run_guarded(body)
