"""Record models: Avro dict forms (their Kafka keys are the policy's: test_event_keys.py)."""

from __future__ import annotations

from worker import models


def test_records_round_trip_through_their_dict_forms():
    channel, category = models.Channel.SMS, models.Category.TRANSACTIONAL
    request = models.SendRequest("m", "org", "u", "c", channel, category, "+14155550100", "12345", 7, None, b"p", {"a": "b"})
    assert models.SendRequest.from_record(request.to_record()) == request
    settings = models.OrgSettings(models.UnsubscribeScope.ORGANIZATION, models.UserOptOutScope.ORGANIZATION)
    changed = models.PreferenceEvent(
        event_id="e1", org_id="org", occurred_at=1, source=models.PreferenceSource.API,
        type=models.PreferenceEventType.ORG_SETTINGS_CHANGED, settings=settings,
    )
    assert models.PreferenceEvent.from_record(changed.to_record()) == changed
