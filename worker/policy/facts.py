"""Suppression facts: what the state store holds, and how each value is written.

A fact is identified by a :class:`FactKey` (organization, kind, subject) and
holds a short string. The store is a dumb key/value map of these; only this
module and the policy know what the strings mean. Subjects hold *normalised*
addresses in memory; the store replaces them by keyed digests before anything
reaches Redis.

Value formats (all ASCII):

* flags (``EMAIL_OPT_OUT_*``, ``DO_NOT_CONTACT``): ``"1"`` when set, absent otherwise;
* ``SMS_CONSENT``: ``"in"`` or ``"out"``;
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
from dataclasses import dataclass
from collections.abc import Mapping
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
SMS_IN = "in"
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
