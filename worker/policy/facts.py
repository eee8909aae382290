"""Suppression facts: what the state store holds, and how each value is written.

A fact is identified by a :class:`FactKey` (organization, kind, subject) and
holds a short string. The store is a dumb key/value map of these; only this
module and the policy know what the strings mean. Subjects hold *normalised*
addresses in memory; the store replaces them by keyed digests before anything
reaches Redis.

Value formats (all ASCII):

* flags (``EMAIL_OPT_OUT_*``, ``DO_NOT_CONTACT``): ``"1"`` when set, absent otherwise;
* ``SMS_CONSENT``: :class:`SmsConsent`, judged in event time (SPEC §4):
  ``"out"`` once the number is opted out (absorbing), else
  ``"<earliest opt-in>|<latest opt-out>"`` in epoch milliseconds, either side
  empty when there is none (``"100|"`` opted in, ``"|150"`` a remembered
  rejected opt-out, ``"200|150"`` opted in after an earlier opt-out);
* last-writer-wins flags (``SILENCED``, ``OK_TO_EMAIL``): :class:`Stamped`,
  ``"<0|1>|<occurred_at>|<event_id>"``;
* ``EMAIL_UNSUBSCRIBES``: the unsubscribes recorded for an address, resolved
  against the organization's settings history at decision time so the result
  does not depend on the order events of different subjects were applied in;
* ``ORG_SETTINGS``: the organization's settings history.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from worker.models import OrgSettings, UnsubscribeScope, UserOptOutScope


class FactKind(enum.Enum):
    """What a fact says; the value is a short tag that goes into the key digest."""

    EMAIL_OPT_OUT_ORGANIZATION = "eo"  # subject: (email,)
    EMAIL_OPT_OUT_DOMAIN = "ed"  # subject: (email, sender_domain)
    EMAIL_OPT_OUT_USER = "eu"  # subject: (email, user_id)
    EMAIL_OPT_OUT_ANY_USER = "ea"  # subject: (email,) — set with every user-level opt-out
    EMAIL_UNSUBSCRIBES = "un"  # subject: (email,)
    SMS_CONSENT = "sm"  # subject: (phone_e164,)
    SILENCED = "cs"  # subject: (contact_id,)
    DO_NOT_CONTACT = "cd"  # subject: (contact_id,)
    OK_TO_EMAIL = "ck"  # subject: (contact_id,)
    ORG_SETTINGS = "os"  # subject: ()

    # Members are singletons: identity hashing (C level) instead of Enum's
    # Python-level name hash, on the hot path of every FactKey lookup.
    __hash__ = object.__hash__


class FactKey(NamedTuple):
    """Names one fact. A tuple, because the gate builds and hashes nine per request."""

    org_id: str
    kind: FactKind
    subject: tuple[str, ...] = ()


FLAG_SET = "1"
SMS_OUT = "out"

FactValues = Mapping[FactKey, str | None]


@dataclass(frozen=True, slots=True, order=True)
class Stamped:
    """A last-writer-wins value: compared by (occurred_at, event_id), the tie-break of SPEC §4."""

    occurred_at: int
    event_id: str
    value: bool

    def encode(self) -> str:
        return f"{int(self.value)}|{self.occurred_at}|{self.event_id}"

    @classmethod
    def decode(cls, raw: str) -> Stamped:
        flag, occurred_at, event_id = raw.split("|", 2)
        return cls(occurred_at=int(occurred_at), event_id=event_id, value=flag == "1")

    def supersedes(self, other: Stamped | None) -> bool:
        return other is None or (self.occurred_at, self.event_id) > (other.occurred_at, other.event_id)


@dataclass(frozen=True, slots=True)
class SettingsChange:
    occurred_at: int
    event_id: str
    settings: OrgSettings


class SettingsHistory:
    """An organization's settings changes, ordered by (occurred_at, event_id)."""

    __slots__ = ("changes",)

    def __init__(self, changes: tuple[SettingsChange, ...] = ()) -> None:
        self.changes = tuple(sorted(changes, key=lambda c: (c.occurred_at, c.event_id)))

    @classmethod
    def decode(cls, raw: str | None) -> SettingsHistory:
        if not raw:
            return cls()
        return cls(
            tuple(
                SettingsChange(at, event_id, OrgSettings(UnsubscribeScope(unsub), UserOptOutScope(user)))
                for at, event_id, unsub, user in json.loads(raw)
            )
        )

    def encode(self) -> str:
        return json.dumps(
            [
                [c.occurred_at, c.event_id, c.settings.unsubscribe_scope.value, c.settings.user_opt_out_scope.value]
                for c in self.changes
            ],
            separators=(",", ":"),
        )

    def with_change(self, change: SettingsChange) -> SettingsHistory:
        if any(c.event_id == change.event_id for c in self.changes):
            return self
        return SettingsHistory((*self.changes, change))

    def current(self) -> OrgSettings:
        return self.changes[-1].settings if self.changes else OrgSettings()

    def at(self, occurred_at: int) -> OrgSettings:
        """The settings in force at ``occurred_at`` (a change at that very instant counts)."""
        in_force = OrgSettings()
        for change in self.changes:
            if change.occurred_at > occurred_at:
                break
            in_force = change.settings
        return in_force


@dataclass(frozen=True, slots=True, order=True)
class Unsubscribe:
    """One recorded ``EMAIL_UNSUBSCRIBE``; ``domain`` is "" when the event named none."""

    domain: str
    occurred_at: int


def decode_unsubscribes(raw: str | None) -> tuple[Unsubscribe, ...]:
    if not raw:
        return ()
    return tuple(Unsubscribe(domain, at) for domain, at in json.loads(raw))


def encode_unsubscribes(unsubscribes: tuple[Unsubscribe, ...]) -> str:
    return json.dumps([[u.domain, u.occurred_at] for u in sorted(set(unsubscribes))], separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class SmsConsent:
    """One number's SMS consent in event time (SPEC §4).

    The number is opted out once its latest opt-out is at or after its earliest
    opt-in, or a do-not-contact named it. Opted out is absorbing, and then the
    times no longer matter, so it is stored as ``"out"`` alone. Otherwise the
    two times are kept: minimum and maximum do not depend on the order in
    which events are applied, and applying one twice changes nothing, so every
    order of application leaves the same value.
    """

    earliest_opt_in: int | None = None
    latest_opt_out: int | None = None
    opted_out: bool = False

    @classmethod
    def decode(cls, raw: str | None) -> SmsConsent:
        """The consent a stored value holds; an absent or unreadable value holds none."""
        if raw == SMS_OUT:
            return _OPTED_OUT
        opt_in, separator, opt_out = (raw or "").partition("|")
        if not separator or not _MILLIS.fullmatch(opt_in) or not _MILLIS.fullmatch(opt_out):
            return _NO_CONSENT
        return cls(int(opt_in) if opt_in else None, int(opt_out) if opt_out else None)

    def encode(self) -> str:
        if self.opted_out:
            return SMS_OUT
        return f"{_optional(self.earliest_opt_in)}|{_optional(self.latest_opt_out)}"

    @property
    def opted_in(self) -> bool:
        return not self.opted_out and self.earliest_opt_in is not None

    def with_opt_in(self, occurred_at: int) -> SmsConsent:
        """This consent after an ``SMS_OPT_IN`` at ``occurred_at`` (for a number not opted out)."""
        earliest = occurred_at if self.earliest_opt_in is None else min(self.earliest_opt_in, occurred_at)
        return SmsConsent(earliest, self.latest_opt_out)._settled()

    def with_opt_out(self, occurred_at: int) -> SmsConsent:
        """This consent after an ``SMS_OPT_OUT`` at ``occurred_at``, accepted or remembered."""
        if self.opted_out:
            return self
        latest = occurred_at if self.latest_opt_out is None else max(self.latest_opt_out, occurred_at)
        return SmsConsent(self.earliest_opt_in, latest)._settled()

    def _settled(self) -> SmsConsent:
        if (
            self.earliest_opt_in is not None
            and self.latest_opt_out is not None
            and self.latest_opt_out >= self.earliest_opt_in
        ):
            return _OPTED_OUT
        return self


# Exactly what encode() writes: int() alone would also take " 1", "+1" or "1_0".
_MILLIS = re.compile(r"(-?[0-9]+)?")


def _optional(value: int | None) -> str:
    return "" if value is None else str(value)


_OPTED_OUT = SmsConsent(opted_out=True)
_NO_CONSENT = SmsConsent()
