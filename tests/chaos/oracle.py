"""Which sends were *wrongly* allowed (SPEC §6.3) or wrongly suppressed, judged from the preference events.

A send produced after a preference event was acknowledged must be decided
with that event applied; the gate may also have applied events acknowledged
later. So an allowed send is wrong when the state built from the events
acknowledged before its production suppresses it *and* so does the state
built from every event of the run (the run's workloads only ever add
suppression once sends flow; the second condition keeps a legitimately late
opt-in from being blamed).

Two models judge each send; either one finding it suppressed counts:

* :class:`PolicyModel`: ``worker.policy`` itself, with an in-memory fact map
  built by :func:`worker.policy.events.apply_events` — the full rules;
* :class:`SpecModel`: a few lines written from SPEC §2-§4 for the event types
  the runs produce, independent of ``worker.policy`` (a bug shared by the
  gate and its own policy would pass the first model).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Protocol

from tests.chaos.workload import AckedEvent, SentRecord
from worker.models import (
    Category,
    Channel,
    OrgSettings,
    PreferenceEvent,
    PreferenceEventType,
    PreferenceSource,
    SendRequest,
)
from worker.policy.decision import DecisionPolicy
from worker.policy.events import PreferenceRules, apply_events
from worker.policy.facts import FactKey

T = PreferenceEventType


class Model(Protocol):
    def apply(self, event: PreferenceEvent) -> None: ...

    def suppresses(self, request: SendRequest) -> bool: ...


class PolicyModel:
    """The gate's own rules on an in-memory fact map."""

    def __init__(self, region: str = "US") -> None:
        self._rules = PreferenceRules(default_phone_region=region)
        self._policy = DecisionPolicy(default_phone_region=region)
        self._facts: dict[FactKey, str] = {}

    def apply(self, event: PreferenceEvent) -> None:
        writes, _rejected = apply_events(self._rules, [event], self._facts)
        self._facts.update(writes)

    def suppresses(self, request: SendRequest) -> bool:
        prepared = self._policy.prepare(request)
        return not self._policy.decide(prepared, self._facts).allowed


class SpecModel:
    """SPEC §2-§4 for opt-outs, SMS consent, contact flags, on already-normalised addresses.

    Organization settings are the defaults (user-level opt-outs stay per user,
    unsubscribes are domain level). Events it does not model raise, so it is
    never silently wrong; invalid events (which the applier rejects) change nothing.
    """

    def __init__(self) -> None:
        self.org_out: set[tuple[str, str]] = set()
        self.domain_out: set[tuple[str, str, str]] = set()
        self.user_out: set[tuple[str, str, str]] = set()
        # SMS consent in event time (SPEC §4): every opt-in and opt-out time, and the numbers a DNC named.
        self.sms_opt_ins: dict[tuple[str, str], list[int]] = {}
        self.sms_opt_outs: dict[tuple[str, str], list[int]] = {}
        self.sms_dnc: set[tuple[str, str]] = set()
        self.dnc: set[tuple[str, str]] = set()
        self.silenced: dict[tuple[str, str], tuple[int, str, bool]] = {}
        self.ok_to_email: dict[tuple[str, str], tuple[int, str, bool]] = {}

    def apply(self, event: PreferenceEvent) -> None:
        org, kind = event.org_id, event.type
        email = event.email.strip().lower() if event.email else None
        if kind is T.EMAIL_OPT_OUT_ORGANIZATION and email:
            self.org_out.add((org, email))
        elif kind is T.EMAIL_OPT_OUT_USER and email and event.user_id:
            self.user_out.add((org, email, event.user_id))
        elif kind is T.EMAIL_OPT_OUT_DOMAIN and email and event.domain:
            self.domain_out.add((org, email, event.domain.strip().lower()))
        elif kind is T.SMS_OPT_IN and event.phone:
            self.sms_opt_ins.setdefault((org, event.phone), []).append(event.occurred_at)
        elif kind is T.SMS_OPT_OUT and event.phone:
            # Remembered even when rejected (no earlier opt-in): an earlier opt-in applied later meets it.
            self.sms_opt_outs.setdefault((org, event.phone), []).append(event.occurred_at)
        elif kind is T.CONTACT_DO_NOT_CONTACT and event.contact_id:
            self.dnc.add((org, event.contact_id))
            if email:
                self.org_out.add((org, email))
            if event.phone:
                self.sms_dnc.add((org, event.phone))
        elif kind in (T.CONTACT_SILENCED, T.CONTACT_UNSILENCED) and event.contact_id:
            stamp = (event.occurred_at, event.event_id, kind is T.CONTACT_SILENCED)
            current = self.silenced.get((org, event.contact_id))
            if current is None or stamp[:2] > current[:2]:
                self.silenced[(org, event.contact_id)] = stamp
        elif kind is T.CONTACT_OK_TO_EMAIL_SET and event.contact_id and event.ok_to_email is not None:
            if event.source in (PreferenceSource.API, PreferenceSource.IMPORT):
                stamp = (event.occurred_at, event.event_id, event.ok_to_email)
                current = self.ok_to_email.get((org, event.contact_id))
                if current is None or stamp[:2] > current[:2]:
                    self.ok_to_email[(org, event.contact_id)] = stamp
        elif kind is T.ORG_SETTINGS_CHANGED and (event.settings is None or event.settings == OrgSettings()):
            pass  # rejected (MISSING_FIELD), or the defaults this model assumes anyway
        elif kind in (T.ORG_SETTINGS_CHANGED, T.EMAIL_UNSUBSCRIBE):
            raise NotImplementedError(f"SpecModel does not model {kind}")

    def sms_opted_in(self, org: str, phone: str) -> bool:
        """Opted in, and no opt-out at or after any opt-in, and no do-not-contact naming it."""
        opt_ins = self.sms_opt_ins.get((org, phone), [])
        opt_outs = self.sms_opt_outs.get((org, phone), [])
        if not opt_ins or (org, phone) in self.sms_dnc:
            return False
        return not any(out >= opt_in for out in opt_outs for opt_in in opt_ins)

    def suppresses(self, request: SendRequest) -> bool:
        org, contact = request.org_id, request.contact_id
        silenced = self.silenced.get((org, contact))
        if (org, contact) in self.dnc or (silenced is not None and silenced[2]):
            return True
        if request.channel is Channel.SMS:
            return not self.sms_opted_in(org, request.to)
        ok_to_email = self.ok_to_email.get((org, contact))
        if ok_to_email is not None and not ok_to_email[2]:
            return True
        if request.category is Category.TRANSACTIONAL:
            return False
        to = request.to.strip().lower()
        domain = request.from_.rpartition("@")[2].strip().lower()
        return (
            (org, to) in self.org_out
            or (org, to, domain) in self.domain_out
            or (org, to, request.user_id) in self.user_out
        )


class Oracle:
    """Judges allowed sends against the events of a run, in acknowledgement order."""

    def __init__(self, events: Iterable[AckedEvent], *, spec_model: bool = True) -> None:
        self._events = sorted(events, key=lambda e: e.acked_at)
        self._spec_model = spec_model

    def _models(self) -> list[Model]:
        return [PolicyModel(), SpecModel()] if self._spec_model else [PolicyModel()]

    def wrongly_allowed(self, allowed: Sequence[SentRecord]) -> list[str]:
        """The ids among ``allowed`` that every state between production and the end suppresses."""
        return self._misjudged(allowed, suppress=True)

    def wrongly_suppressed(self, suppressed: Sequence[SentRecord]) -> list[str]:
        """The ids among ``suppressed`` that no state between production and the end suppresses.

        Once sends flow the runs' events only add suppression, so a send both
        the state at its production and the final state allow was allowed by
        every state in between, whichever the gate decided with.
        """
        return self._misjudged(suppressed, suppress=False)

    def _misjudged(self, decided: Sequence[SentRecord], *, suppress: bool) -> list[str]:
        """The ids among ``decided`` that both the state at production and the final state judge ``suppress``.

        A wrong allow is one that either model finds suppressed; a wrong
        suppression must be allowed by both (SpecModel does not model invalid
        addresses, which suppress).
        """
        judged = sorted((r for r in decided if r.request is not None), key=lambda r: r.produced_at)
        final = self._models()
        for acked in self._events:
            for model in final:
                model.apply(acked.event)
        at_production = self._models()
        suspicious: dict[str, set[int]] = defaultdict(set)
        next_event = 0
        for record in judged:
            while next_event < len(self._events) and self._events[next_event].acked_at < record.produced_at:
                for model in at_production:
                    model.apply(self._events[next_event].event)
                next_event += 1
            request = record.request
            assert request is not None
            for index, (then, end) in enumerate(zip(at_production, final, strict=True)):
                if then.suppresses(request) is suppress and end.suppresses(request) is suppress:
                    suspicious[record.message_id].add(index)
        needed = 1 if suppress else len(final)
        return sorted(message_id for message_id, models in suspicious.items() if len(models) >= needed)
