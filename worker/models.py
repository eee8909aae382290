"""The records of SPEC §5 as frozen dataclasses, with their Avro dict forms.

Times are kept as epoch milliseconds (``int``), the way they travel in Avro,
so the hot path never builds ``datetime`` objects.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple


class Channel(enum.StrEnum):
    EMAIL = "EMAIL"
    SMS = "SMS"


class Category(enum.StrEnum):
    MARKETING = "MARKETING"
    TRANSACTIONAL = "TRANSACTIONAL"


class PreferenceSource(enum.StrEnum):
    USER = "USER"
    CONTACT = "CONTACT"
    PREFERENCE_CENTER = "PREFERENCE_CENTER"
    API = "API"
    IMPORT = "IMPORT"
    SYSTEM = "SYSTEM"


class PreferenceEventType(enum.StrEnum):
    EMAIL_OPT_OUT_USER = "EMAIL_OPT_OUT_USER"
    EMAIL_OPT_OUT_ORGANIZATION = "EMAIL_OPT_OUT_ORGANIZATION"
    EMAIL_OPT_OUT_DOMAIN = "EMAIL_OPT_OUT_DOMAIN"
    EMAIL_UNSUBSCRIBE = "EMAIL_UNSUBSCRIBE"
    SMS_OPT_IN = "SMS_OPT_IN"
    SMS_OPT_OUT = "SMS_OPT_OUT"
    CONTACT_SILENCED = "CONTACT_SILENCED"
    CONTACT_UNSILENCED = "CONTACT_UNSILENCED"
    CONTACT_DO_NOT_CONTACT = "CONTACT_DO_NOT_CONTACT"
    CONTACT_OK_TO_EMAIL_SET = "CONTACT_OK_TO_EMAIL_SET"
    ORG_SETTINGS_CHANGED = "ORG_SETTINGS_CHANGED"


class UnsubscribeScope(enum.StrEnum):
    DOMAIN = "DOMAIN"
    ORGANIZATION = "ORGANIZATION"


class UserOptOutScope(enum.StrEnum):
    USER = "USER"
    ORGANIZATION = "ORGANIZATION"


class SuppressionReason(enum.StrEnum):
    """The rows of SPEC §3; declaration order is the primary-reason order."""

    INVALID_ADDRESS = "INVALID_ADDRESS"
    DO_NOT_CONTACT = "DO_NOT_CONTACT"
    SILENCED = "SILENCED"
    EMAIL_OPT_OUT_ORGANIZATION = "EMAIL_OPT_OUT_ORGANIZATION"
    EMAIL_OPT_OUT_DOMAIN = "EMAIL_OPT_OUT_DOMAIN"
    EMAIL_OPT_OUT_USER = "EMAIL_OPT_OUT_USER"
    OK_TO_EMAIL_FALSE = "OK_TO_EMAIL_FALSE"
    SMS_OPT_OUT = "SMS_OPT_OUT"
    SMS_NOT_OPTED_IN = "SMS_NOT_OPTED_IN"


class RejectionReason(enum.StrEnum):
    IRREVERSIBLE = "IRREVERSIBLE"
    SMS_NOT_OPTED_IN = "SMS_NOT_OPTED_IN"
    SOURCE_NOT_ALLOWED = "SOURCE_NOT_ALLOWED"
    MISSING_FIELD = "MISSING_FIELD"
    INVALID_ADDRESS = "INVALID_ADDRESS"
    UNDECODABLE = "UNDECODABLE"


def _lookup(enum_type: type[enum.StrEnum]) -> Any:
    """A value -> member look-up that raises ValueError like ``enum_type(value)``, without Enum's slow call path."""
    members = {member.value: member for member in enum_type}

    def convert(value: Any) -> Any:
        try:
            return members[value]
        except (KeyError, TypeError):
            return enum_type(value)  # raises the usual ValueError

    return convert


@dataclass(frozen=True, slots=True)
class SendRequest:
    message_id: str
    org_id: str
    user_id: str
    contact_id: str
    channel: Channel
    category: Category
    to: str
    from_: str
    requested_at: int
    campaign_id: str | None = None
    payload: bytes | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> SendRequest:
        return cls(
            message_id=record["message_id"],
            org_id=record["org_id"],
            user_id=record["user_id"],
            contact_id=record["contact_id"],
            channel=_channel(record["channel"]),
            category=_category(record["category"]),
            to=record["to"],
            from_=record["from"],
            requested_at=record["requested_at"],
            campaign_id=record.get("campaign_id"),
            payload=record.get("payload"),
            attributes=record.get("attributes") or {},
        )

    def to_record(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "org_id": self.org_id,
            "user_id": self.user_id,
            "contact_id": self.contact_id,
            "channel": self.channel.value,
            "category": self.category.value,
            "to": self.to,
            "from": self.from_,
            "requested_at": self.requested_at,
            "campaign_id": self.campaign_id,
            "payload": self.payload,
            "attributes": dict(self.attributes),
        }


class SendHead(NamedTuple):
    """The leading fields of a :class:`SendRequest`: all a decision reads.

    The gate's compiled core reads them without building the rest of the
    request (``worker._native``); the reference decodes the whole value
    (``AvroCodec.decode_send_head``). Same field names as ``SendRequest``.
    """

    message_id: str
    org_id: str
    user_id: str
    contact_id: str
    channel: Channel
    category: Category
    to: str
    from_: str
    requested_at: int

    @classmethod
    def from_request(cls, request: SendRequest) -> SendHead:
        return cls(
            request.message_id,
            request.org_id,
            request.user_id,
            request.contact_id,
            request.channel,
            request.category,
            request.to,
            request.from_,
            request.requested_at,
        )


_channel = _lookup(Channel)
_category = _lookup(Category)


@dataclass(frozen=True, slots=True)
class OrgSettings:
    unsubscribe_scope: UnsubscribeScope = UnsubscribeScope.DOMAIN
    user_opt_out_scope: UserOptOutScope = UserOptOutScope.USER

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> OrgSettings:
        return cls(
            unsubscribe_scope=_unsubscribe_scope(record["unsubscribe_scope"]),
            user_opt_out_scope=_user_opt_out_scope(record["user_opt_out_scope"]),
        )

    def to_record(self) -> dict[str, Any]:
        return {
            "unsubscribe_scope": self.unsubscribe_scope.value,
            "user_opt_out_scope": self.user_opt_out_scope.value,
        }


_unsubscribe_scope = _lookup(UnsubscribeScope)
_user_opt_out_scope = _lookup(UserOptOutScope)
_source = _lookup(PreferenceSource)
_event_type = _lookup(PreferenceEventType)


@dataclass(frozen=True, slots=True)
class PreferenceEvent:
    event_id: str
    org_id: str
    occurred_at: int
    source: PreferenceSource
    type: PreferenceEventType
    email: str | None = None
    phone: str | None = None
    user_id: str | None = None
    domain: str | None = None
    contact_id: str | None = None
    ok_to_email: bool | None = None
    settings: OrgSettings | None = None

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> PreferenceEvent:
        settings = record.get("settings")
        return cls(
            event_id=record["event_id"],
            org_id=record["org_id"],
            occurred_at=record["occurred_at"],
            source=_source(record["source"]),
            type=_event_type(record["type"]),
            email=record.get("email"),
            phone=record.get("phone"),
            user_id=record.get("user_id"),
            domain=record.get("domain"),
            contact_id=record.get("contact_id"),
            ok_to_email=record.get("ok_to_email"),
            settings=OrgSettings.from_record(settings) if settings is not None else None,
        )

    def to_record(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "org_id": self.org_id,
            "occurred_at": self.occurred_at,
            "source": self.source.value,
            "type": self.type.value,
            "email": self.email,
            "phone": self.phone,
            "user_id": self.user_id,
            "domain": self.domain,
            "contact_id": self.contact_id,
            "ok_to_email": self.ok_to_email,
            "settings": self.settings.to_record() if self.settings is not None else None,
        }
