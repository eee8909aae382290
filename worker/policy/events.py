"""Preference-event semantics (SPEC §2, §4): which facts an event reads and writes.

Every rule here is written so that the resulting state does not depend on the
order in which events of *different* subjects are applied, and applying the
same event twice changes nothing more:

* irreversible facts are flags that are only ever set;
* unsubscribes are recorded raw and resolved against the settings history at
  decision time (:mod:`worker.policy.decision`);
* reversible facts (silence, ok-to-email) are last-writer-wins by
  ``(occurred_at, event_id)``, and the settings are a history keyed the same way;
* SMS consent is judged in event time (:class:`~worker.policy.facts.SmsConsent`):
  the earliest opt-in and the latest opt-out (rejected ones included) decide,
  and opted out is absorbing, so no order of application re-opens a number.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

from worker.models import (
    OrgSettings,
    PreferenceEvent,
    PreferenceEventType,
    PreferenceSource,
    RejectionReason,
)
from worker.policy.addresses import normalize_domain, normalize_email, normalize_phone
from worker.policy.facts import (
    FLAG_SET,
    SMS_OUT,
    FactKey,
    FactKind,
    FactValues,
    SettingsChange,
    SettingsHistory,
    SmsConsent,
    Stamped,
    Unsubscribe,
    decode_unsubscribes,
    encode_unsubscribes,
)

_T = PreferenceEventType

# Fields each type needs (SPEC §4). DO_NOT_CONTACT's email and phone are optional.
_REQUIRED: dict[PreferenceEventType, tuple[str, ...]] = {
    _T.EMAIL_OPT_OUT_USER: ("email", "user_id"),
    _T.EMAIL_OPT_OUT_ORGANIZATION: ("email",),
    _T.EMAIL_OPT_OUT_DOMAIN: ("email", "domain"),
    _T.EMAIL_UNSUBSCRIBE: ("email",),
    _T.SMS_OPT_IN: ("phone",),
    _T.SMS_OPT_OUT: ("phone",),
    _T.CONTACT_SILENCED: ("contact_id",),
    _T.CONTACT_UNSILENCED: ("contact_id",),
    _T.CONTACT_DO_NOT_CONTACT: ("contact_id",),
    _T.CONTACT_OK_TO_EMAIL_SET: ("contact_id", "ok_to_email"),
    _T.ORG_SETTINGS_CHANGED: ("settings",),
}

_EMAIL_EVENTS = frozenset(
    {
        _T.EMAIL_OPT_OUT_USER,
        _T.EMAIL_OPT_OUT_ORGANIZATION,
        _T.EMAIL_OPT_OUT_DOMAIN,
        _T.EMAIL_UNSUBSCRIBE,
    }
)
_OK_TO_EMAIL_SOURCES = frozenset({PreferenceSource.API, PreferenceSource.IMPORT})


@dataclass(frozen=True, slots=True)
class EventOutcome:
    """What applying one event does: the facts it changes, and why it was rejected if it was.

    A rejected event changes no decision. Its ``writes`` are empty, except for
    an ``SMS_OPT_OUT`` rejected as ``SMS_NOT_OPTED_IN``, which is remembered
    (SPEC §4) so that an earlier opt-in applied after it leaves the number
    opted out. The detail never contains an address or phone number.
    """

    writes: dict[FactKey, str]
    rejection: tuple[RejectionReason, str] | None = None


@dataclass(frozen=True, slots=True)
class _Plan:
    """A valid event with its normalised subject fields and the facts it touches."""

    keys: tuple[FactKey, ...]
    domain: str = ""  # EMAIL_UNSUBSCRIBE only: "" = no (usable) domain


EventPlan = _Plan | EventOutcome
"""What :meth:`PreferenceRules.plan` returns: a valid event's plan, or its rejection."""


def subject_key(plan: EventPlan) -> str | None:
    """SPEC §4's Kafka key for a planned event: its normalised subject, ``None`` when it has none (rejected).

    The first fact an event touches names its subject: the address for email
    and SMS events, the contact for contact events, nothing but the
    organization for settings.
    """
    if not isinstance(plan, _Plan):
        return None
    first = plan.keys[0]
    return f"{first.org_id}:{first.subject[0]}" if first.subject else first.org_id


def _present(value: object) -> bool:
    if value is None:
        return False
    return not isinstance(value, str) or bool(value.strip())


def _reject(reason: RejectionReason, detail: str) -> EventOutcome:
    return EventOutcome({}, (reason, detail))


def _invalid(kind: PreferenceEventType, field: str) -> EventOutcome:
    return _reject(
        RejectionReason.INVALID_ADDRESS, f"{kind.value}: {field} cannot be parsed"
    )


class PreferenceRules:
    """SPEC §4: validates preference events and turns them into fact writes."""

    def __init__(self, *, default_phone_region: str = "US") -> None:
        self._region = default_phone_region
        self._handlers: dict[
            PreferenceEventType,
            Callable[[PreferenceEvent, _Plan, FactValues], EventOutcome],
        ] = {
            _T.EMAIL_OPT_OUT_USER: self._set_flags,
            _T.EMAIL_OPT_OUT_ORGANIZATION: self._set_flags,
            _T.EMAIL_OPT_OUT_DOMAIN: self._set_flags,
            _T.EMAIL_UNSUBSCRIBE: self._unsubscribe,
            _T.SMS_OPT_IN: self._sms_opt_in,
            _T.SMS_OPT_OUT: self._sms_opt_out,
            _T.CONTACT_SILENCED: self._last_writer_wins,
            _T.CONTACT_UNSILENCED: self._last_writer_wins,
            _T.CONTACT_DO_NOT_CONTACT: self._do_not_contact,
            _T.CONTACT_OK_TO_EMAIL_SET: self._last_writer_wins,
            _T.ORG_SETTINGS_CHANGED: self._settings,
        }

    def keys_for(self, event: PreferenceEvent) -> tuple[FactKey, ...]:
        """The facts to read before :meth:`apply`; empty when the event will be rejected as invalid."""
        plan = self._plan(event)
        return plan.keys if isinstance(plan, _Plan) else ()

    def apply(self, event: PreferenceEvent, facts: FactValues) -> EventOutcome:
        """The outcome of ``event`` given the current values of (at least) ``keys_for(event)``."""
        return self.apply_planned(event, self.plan(event), facts)

    def plan(self, event: PreferenceEvent) -> _Plan | EventOutcome:
        """Validate and normalise ``event`` once: its plan (``.keys`` are the facts it reads), or its rejection."""
        return self._plan(event)

    def apply_planned(self, event: PreferenceEvent, plan: _Plan | EventOutcome, facts: FactValues) -> EventOutcome:
        """:meth:`apply` for an event already planned with :meth:`plan`."""
        if not isinstance(plan, _Plan):
            return plan
        return self._handlers[event.type](event, plan, facts)

    # -- validation ---------------------------------------------------------

    def _plan(self, event: PreferenceEvent) -> _Plan | EventOutcome:
        kind = event.type
        missing = [
            name
            for name in ("org_id", *_REQUIRED[kind])
            if not _present(getattr(event, name))
        ]
        if missing:
            return _reject(
                RejectionReason.MISSING_FIELD,
                f"{kind.value} needs {', '.join(missing)}",
            )
        if (
            kind is _T.CONTACT_OK_TO_EMAIL_SET
            and event.source not in _OK_TO_EMAIL_SOURCES
        ):
            return _reject(
                RejectionReason.SOURCE_NOT_ALLOWED,
                f"ok-to-email can only be set by API or IMPORT, not {event.source}",
            )

        org = event.org_id
        if kind in _EMAIL_EVENTS:
            email = normalize_email(cast(str, event.email))
            if email is None:
                return _invalid(kind, "email")
            address = (email,)
            if kind is _T.EMAIL_OPT_OUT_USER:
                user = cast(str, event.user_id)
                return _Plan(
                    (
                        FactKey(org, FactKind.EMAIL_OPT_OUT_USER, (email, user)),
                        FactKey(org, FactKind.EMAIL_OPT_OUT_ANY_USER, address),
                    )
                )
            if kind is _T.EMAIL_OPT_OUT_ORGANIZATION:
                return _Plan(
                    (FactKey(org, FactKind.EMAIL_OPT_OUT_ORGANIZATION, address),)
                )
            if kind is _T.EMAIL_OPT_OUT_DOMAIN:
                domain = normalize_domain(cast(str, event.domain))
                if domain is None:
                    return _invalid(kind, "domain")
                return _Plan(
                    (FactKey(org, FactKind.EMAIL_OPT_OUT_DOMAIN, (email, domain)),)
                )
            # EMAIL_UNSUBSCRIBE. A missing or unusable domain is recorded as none:
            # organization level even under DOMAIN scope, never narrower than
            # the recipient intended.
            domain = normalize_domain(event.domain) if event.domain else None
            return _Plan(
                (FactKey(org, FactKind.EMAIL_UNSUBSCRIBES, address),), domain or ""
            )
        if kind is _T.SMS_OPT_IN or kind is _T.SMS_OPT_OUT:
            phone = normalize_phone(cast(str, event.phone), self._region)
            if phone is None:
                return _invalid(kind, "phone")
            return _Plan((FactKey(org, FactKind.SMS_CONSENT, (phone,)),))
        if kind is _T.ORG_SETTINGS_CHANGED:
            return _Plan((FactKey(org, FactKind.ORG_SETTINGS, ()),))

        contact = (cast(str, event.contact_id),)
        if kind is _T.CONTACT_SILENCED or kind is _T.CONTACT_UNSILENCED:
            return _Plan((FactKey(org, FactKind.SILENCED, contact),))
        if kind is _T.CONTACT_OK_TO_EMAIL_SET:
            return _Plan((FactKey(org, FactKind.OK_TO_EMAIL, contact),))
        # CONTACT_DO_NOT_CONTACT: email and phone when the contact has them.
        keys = [FactKey(org, FactKind.DO_NOT_CONTACT, contact)]
        if _present(event.email):
            email = normalize_email(cast(str, event.email))
            if email is None:
                return _invalid(kind, "email")
            keys.append(FactKey(org, FactKind.EMAIL_OPT_OUT_ORGANIZATION, (email,)))
        if _present(event.phone):
            phone = normalize_phone(cast(str, event.phone), self._region)
            if phone is None:
                return _invalid(kind, "phone")
            keys.append(FactKey(org, FactKind.SMS_CONSENT, (phone,)))
        return _Plan(tuple(keys))

    # -- effects ------------------------------------------------------------

    @staticmethod
    def _set_flags(
        event: PreferenceEvent, plan: _Plan, facts: FactValues
    ) -> EventOutcome:
        return EventOutcome(
            {key: FLAG_SET for key in plan.keys if facts.get(key) != FLAG_SET}
        )

    @staticmethod
    def _unsubscribe(
        event: PreferenceEvent, plan: _Plan, facts: FactValues
    ) -> EventOutcome:
        (key,) = plan.keys
        recorded = decode_unsubscribes(facts.get(key))
        unsubscribe = Unsubscribe(plan.domain, event.occurred_at)
        if unsubscribe in recorded:
            return EventOutcome({})
        return EventOutcome({key: encode_unsubscribes((*recorded, unsubscribe))})

    @staticmethod
    def _sms_opt_in(
        event: PreferenceEvent, plan: _Plan, facts: FactValues
    ) -> EventOutcome:
        (key,) = plan.keys
        consent = SmsConsent.decode(facts.get(key))
        if consent.opted_out:
            return _reject(
                RejectionReason.IRREVERSIBLE,
                "SMS_OPT_IN for a number that has opted out",
            )
        return _sms_write(key, consent, consent.with_opt_in(event.occurred_at))

    @staticmethod
    def _sms_opt_out(
        event: PreferenceEvent, plan: _Plan, facts: FactValues
    ) -> EventOutcome:
        (key,) = plan.keys
        consent = SmsConsent.decode(facts.get(key))
        after = consent.with_opt_out(event.occurred_at)
        outcome = _sms_write(key, consent, after)
        if after.opted_out:
            return outcome
        # No opt-in at or before it: rejected, but remembered (SPEC §4).
        return EventOutcome(
            outcome.writes,
            (RejectionReason.SMS_NOT_OPTED_IN, "SMS_OPT_OUT for a number with no earlier opt-in"),
        )

    @staticmethod
    def _last_writer_wins(
        event: PreferenceEvent, plan: _Plan, facts: FactValues
    ) -> EventOutcome:
        (key,) = plan.keys
        if event.type is _T.CONTACT_OK_TO_EMAIL_SET:
            value = bool(event.ok_to_email)
        else:
            value = event.type is _T.CONTACT_SILENCED
        stamped = Stamped(
            occurred_at=event.occurred_at, event_id=event.event_id, value=value
        )
        # Written even when it clears the flag: the stamp must outrank older events applied later.
        current = facts.get(key)
        if current is not None and not stamped.supersedes(Stamped.decode(current)):
            return EventOutcome({})
        return EventOutcome({key: stamped.encode()})

    @staticmethod
    def _do_not_contact(
        event: PreferenceEvent, plan: _Plan, facts: FactValues
    ) -> EventOutcome:
        writes: dict[FactKey, str] = {}
        for key in plan.keys:
            # The SMS opt-out is recorded whatever the consent was (SPEC §8).
            value = SMS_OUT if key.kind is FactKind.SMS_CONSENT else FLAG_SET
            if facts.get(key) != value:
                writes[key] = value
        return EventOutcome(writes)

    @staticmethod
    def _settings(
        event: PreferenceEvent, plan: _Plan, facts: FactValues
    ) -> EventOutcome:
        (key,) = plan.keys
        history = SettingsHistory.decode(facts.get(key))
        change = SettingsChange(
            event.occurred_at, event.event_id, cast(OrgSettings, event.settings)
        )
        updated = history.with_change(change)
        if updated is history:
            return EventOutcome({})
        return EventOutcome({key: updated.encode()})


def _sms_write(key: FactKey, before: SmsConsent, after: SmsConsent) -> EventOutcome:
    return EventOutcome({} if after == before else {key: after.encode()})


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What a batch does: the merged fact writes, and its rejected events by position in the batch."""

    writes: dict[FactKey, str]
    rejections: list[tuple[int, RejectionReason, str]]


class PreferenceBatch:
    """A batch of events validated and normalised once: the facts it reads, then what it does.

    The applier reads :attr:`keys` from the store and hands the values to
    :meth:`apply`; nothing about the events is computed twice.
    """

    __slots__ = ("_rules", "events", "plans")

    def __init__(self, rules: PreferenceRules, events: Sequence[PreferenceEvent]) -> None:
        self._rules = rules
        self.events = tuple(events)
        self.plans = tuple(rules.plan(event) for event in self.events)

    @property
    def keys(self) -> list[FactKey]:
        """Every fact the batch reads (those of rejected events: none)."""
        return [key for plan in self.plans if isinstance(plan, _Plan) for key in plan.keys]

    def subject_keys(self) -> list[str | None]:
        """SPEC §4's Kafka key of each event (see :func:`subject_key`)."""
        return [subject_key(plan) for plan in self.plans]

    def apply(self, facts: FactValues) -> BatchOutcome:
        """Apply the events in order, each seeing the writes of the ones before it.

        ``facts`` must hold the current values of :attr:`keys` (a missing key
        means an absent fact); it is not changed.
        """
        writes: dict[FactKey, str] = {}
        view: dict[FactKey, str | None] = dict(facts)  # facts overlaid by the batch's writes so far
        rejections: list[tuple[int, RejectionReason, str]] = []
        apply = self._rules.apply_planned
        for index, (event, plan) in enumerate(zip(self.events, self.plans, strict=True)):
            outcome = apply(event, plan, view)
            if outcome.rejection is not None:
                rejections.append((index, *outcome.rejection))
            if outcome.writes:
                writes.update(outcome.writes)
                view.update(outcome.writes)
        return BatchOutcome(writes, rejections)


def apply_events(
    rules: PreferenceRules, events: Sequence[PreferenceEvent], facts: FactValues
) -> tuple[dict[FactKey, str], list[tuple[PreferenceEvent, RejectionReason, str]]]:
    """:class:`PreferenceBatch` in one call: the merged writes and the rejected events with reason and detail."""
    batch = PreferenceBatch(rules, events)
    outcome = batch.apply(facts)
    return outcome.writes, [(batch.events[index], reason, detail) for index, reason, detail in outcome.rejections]
