"""The decision table of SPEC §3, as a pure function of a request and the facts it names.

Deciding is split in two so the state store can fetch everything in one round
trip: :meth:`DecisionPolicy.prepare` normalises the request and lists the facts
it needs, :meth:`DecisionPolicy.decide` applies the table to their values. Both
run once per send request, so they avoid decoding any fact that is absent and
keep the common (allowed) path to a handful of dictionary look-ups.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

from worker.models import (
    Category,
    Channel,
    SendRequest,
    SuppressionReason,
    UnsubscribeScope,
    UserOptOutScope,
)
from worker.policy.addresses import email_domain, normalize_email, normalize_phone
from worker.policy.facts import (
    SMS_OUT,
    FactKey,
    FactKind,
    FactValues,
    SettingsHistory,
    SmsConsent,
    Stamped,
    Unsubscribe,
    decode_unsubscribes,
)

_R = SuppressionReason

# Positions of the facts in PreparedRequest.keys (see DecisionPolicy.prepare).
# Contact facts come first so they are there even when `to` is invalid.
_DNC, _SILENCED, _OK_TO_EMAIL = 0, 1, 2
_EO, _EU, _EA, _UN, _OS, _ED = 3, 4, 5, 6, 7, 8
_SMS_CONSENT = 2

_EMPTY_HISTORY = SettingsHistory()


class PreparedRequest(NamedTuple):
    """A request with its normalised addresses and every fact its decision reads.

    A tuple: one is built per send request on the gate's hot path.
    """

    request: SendRequest
    to: str | None  # normalised address or E.164 phone; None if invalid
    sender_domain: str | None  # EMAIL only; None if `from` is invalid
    invalid: bool  # row 1 applies
    keys: tuple[FactKey, ...]  # no duplicates; contact facts even when `to` is invalid


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one request: every applying reason in table order (empty = allowed).

    ``details`` names, per reason, the fact that matched (never an address or
    phone number). ``bypassed`` lists the email opt-outs (rows 4-6) that would
    have applied but were ignored because the request is transactional email.
    """

    reasons: tuple[SuppressionReason, ...]
    details: dict[str, str]
    bypassed: tuple[SuppressionReason, ...] = ()

    @property
    def allowed(self) -> bool:
        return not self.reasons

    @property
    def primary_reason(self) -> SuppressionReason | None:
        return self.reasons[0] if self.reasons else None


# The common outcome, shared: nothing reads an allowed decision's details but to copy them.
ALLOWED = Decision((), {}, ())


# Fact values repeat across requests (one settings history per organization,
# few unsubscribes per address): decode each distinct string once.
@lru_cache(maxsize=10_000)
def _history(raw: str) -> SettingsHistory:
    return SettingsHistory.decode(raw)


@lru_cache(maxsize=10_000)
def _unsubscribes(raw: str) -> tuple[Unsubscribe, ...]:
    return decode_unsubscribes(raw)


# FactKey(...) runs NamedTuple's Python-level __new__; tuple.__new__ builds the
# same tuple at C speed. The key tuples are not cached: most requests of a
# campaign name a recipient the gate has not seen recently, and cached tuples
# are what the garbage collector would scan over and over.
_new = tuple.__new__
_DO_NOT_CONTACT, _SILENCED_KIND, _OK_TO_EMAIL_KIND = FactKind.DO_NOT_CONTACT, FactKind.SILENCED, FactKind.OK_TO_EMAIL
_EMAIL_ORG, _EMAIL_USER, _EMAIL_ANY_USER = (
    FactKind.EMAIL_OPT_OUT_ORGANIZATION,
    FactKind.EMAIL_OPT_OUT_USER,
    FactKind.EMAIL_OPT_OUT_ANY_USER,
)
_UNSUBSCRIBES, _SETTINGS, _EMAIL_DOMAIN = FactKind.EMAIL_UNSUBSCRIBES, FactKind.ORG_SETTINGS, FactKind.EMAIL_OPT_OUT_DOMAIN
_SMS = FactKind.SMS_CONSENT


def _contact_keys(org: str, contact_id: str) -> tuple[FactKey, ...]:
    contact = (contact_id,)
    return (
        _new(FactKey, (org, _DO_NOT_CONTACT, contact)),
        _new(FactKey, (org, _SILENCED_KIND, contact)),
        _new(FactKey, (org, _OK_TO_EMAIL_KIND, contact)),
    )


def _email_keys(org: str, to: str, user_id: str, sender_domain: str | None) -> tuple[FactKey, ...]:
    address = (to,)
    keys: tuple[FactKey, ...] = (
        _new(FactKey, (org, _EMAIL_ORG, address)),
        _new(FactKey, (org, _EMAIL_USER, (to, user_id))),
        _new(FactKey, (org, _EMAIL_ANY_USER, address)),
        _new(FactKey, (org, _UNSUBSCRIBES, address)),
        _new(FactKey, (org, _SETTINGS, ())),
    )
    if sender_domain is not None:
        keys += (_new(FactKey, (org, _EMAIL_DOMAIN, (to, sender_domain))),)
    return keys


def _stamp(raw: str) -> str:
    try:
        stamped = Stamped.decode(raw)
    except ValueError:
        return "stamp=?"
    return f"stamp={stamped.occurred_at}/{stamped.event_id}"


class DecisionPolicy:
    """SPEC §3: which rows apply to a request, given the facts held for it."""

    def __init__(self, *, default_phone_region: str = "US") -> None:
        self._region = default_phone_region

    def prepare(self, request: SendRequest) -> PreparedRequest:
        org = request.org_id
        if request.channel == Channel.EMAIL:
            to = normalize_email(request.to)
            sender = normalize_email(request.from_)
            sender_domain = email_domain(sender) if sender is not None else None
            keys = _contact_keys(org, request.contact_id)
            if to is not None:
                keys += _email_keys(org, to, request.user_id, sender_domain)
            return _new(
                PreparedRequest,
                (request, to, sender_domain, to is None or sender is None, keys),
            )
        # SMS: `from` may be a short code, so only `to` is validated.
        to = normalize_phone(request.to, self._region)
        contact = (request.contact_id,)
        keys = (_new(FactKey, (org, _DO_NOT_CONTACT, contact)), _new(FactKey, (org, _SILENCED_KIND, contact)))
        if to is not None:
            keys += (_new(FactKey, (org, _SMS, (to,))),)
        return _new(PreparedRequest, (request, to, None, to is None, keys))

    def decide(self, prepared: PreparedRequest, facts: FactValues) -> Decision:
        request = prepared.request
        keys = prepared.keys
        get = facts.get
        reasons: list[SuppressionReason] = []
        details: dict[str, str] = {}
        email = request.channel == Channel.EMAIL

        # Row 1
        if prepared.invalid:
            reasons.append(_R.INVALID_ADDRESS)
            if email and prepared.sender_domain is None:
                details[_R.INVALID_ADDRESS.value] = (
                    "field=to,from" if prepared.to is None else "field=from"
                )
            else:
                details[_R.INVALID_ADDRESS.value] = "field=to"
        # Rows 2, 3: keyed by contact, so they apply even to an invalid `to`.
        if get(keys[_DNC]):
            reasons.append(_R.DO_NOT_CONTACT)
            details[_R.DO_NOT_CONTACT.value] = f"contact={request.contact_id}"
        silenced = get(keys[_SILENCED])
        if silenced is not None and silenced[:1] == "1":
            reasons.append(_R.SILENCED)
            details[_R.SILENCED.value] = (
                f"contact={request.contact_id} {_stamp(silenced)}"
            )

        if email:
            bypassed: tuple[SuppressionReason, ...] = ()
            if prepared.to is not None:
                opt_outs = _email_opt_outs(prepared, get)
                if opt_outs:
                    if request.category == Category.TRANSACTIONAL:
                        bypassed = tuple(opt_outs)
                    else:
                        reasons.extend(opt_outs)
                        for reason, detail in opt_outs.items():
                            details[reason.value] = detail
            # Row 7: a contact fact, no transactional exception.
            ok_to_email = get(keys[_OK_TO_EMAIL])
            if ok_to_email is not None and ok_to_email[:1] == "0":
                reasons.append(_R.OK_TO_EMAIL_FALSE)
                details[_R.OK_TO_EMAIL_FALSE.value] = (
                    f"contact={request.contact_id} {_stamp(ok_to_email)}"
                )
            if not reasons and not bypassed:
                return ALLOWED
            return Decision(tuple(reasons), details, bypassed)

        # Rows 8, 9: keyed by phone, so they need a valid `to`.
        if prepared.to is not None:
            consent_raw = get(keys[_SMS_CONSENT])
            if consent_raw == SMS_OUT:
                reasons.append(_R.SMS_OPT_OUT)
                details[_R.SMS_OPT_OUT.value] = "sms_consent=out"
            else:
                consent = SmsConsent.decode(consent_raw)
                if not consent.opted_in:
                    reasons.append(_R.SMS_NOT_OPTED_IN)
                    details[_R.SMS_NOT_OPTED_IN.value] = _not_opted_in_detail(consent)
        if not reasons:
            return ALLOWED
        return Decision(tuple(reasons), details, ())


def _not_opted_in_detail(consent: SmsConsent) -> str:
    if consent.latest_opt_out is None:
        return "sms_consent=none"
    # A remembered (rejected) opt-out: it is why a later-applied earlier opt-in stays out.
    return f"sms_consent=none opt-out@{consent.latest_opt_out}"


def _email_opt_outs(
    prepared: PreparedRequest, get: Callable[[FactKey], str | None]
) -> dict[SuppressionReason, str]:
    """Rows 4-6 in table order, reason -> detail; empty (the usual case) when none applies."""
    keys = prepared.keys
    org_flag = get(keys[_EO])
    user_flag = get(keys[_EU])
    any_user_flag = get(keys[_EA])
    unsubscribes_raw = get(keys[_UN])
    domain_flag = get(keys[_ED]) if len(keys) > _ED else None
    if not (org_flag or user_flag or any_user_flag or unsubscribes_raw or domain_flag):
        return {}
    # Settings are only needed to resolve an opt-out that is present.
    settings_raw = get(keys[_OS])
    history = _history(settings_raw) if settings_raw else _EMPTY_HISTORY
    sender_domain = prepared.sender_domain
    org_detail: list[str] = ["opt-out"] if org_flag else []
    domain_detail: list[str] = [f"domain={sender_domain}"] if domain_flag else []
    if unsubscribes_raw:
        # Each unsubscribe took the scope in force when it happened (SPEC §2).
        for unsubscribe in _unsubscribes(unsubscribes_raw):
            scope = history.at(unsubscribe.occurred_at).unsubscribe_scope
            if scope == UnsubscribeScope.ORGANIZATION:
                if not org_detail:
                    org_detail.append(
                        f"unsubscribe@{unsubscribe.occurred_at} scope=ORGANIZATION"
                    )
            elif not unsubscribe.domain:
                # DOMAIN scope without a domain: organization level, never narrower.
                if not org_detail:
                    org_detail.append(
                        f"unsubscribe@{unsubscribe.occurred_at} scope=DOMAIN domain=none"
                    )
            elif unsubscribe.domain == sender_domain and not domain_detail:
                domain_detail.append(
                    f"unsubscribe@{unsubscribe.occurred_at} scope=DOMAIN domain={sender_domain}"
                )
    found: dict[SuppressionReason, str] = {}
    if org_detail:
        found[_R.EMAIL_OPT_OUT_ORGANIZATION] = org_detail[0]
    if domain_detail:
        found[_R.EMAIL_OPT_OUT_DOMAIN] = domain_detail[0]
    if user_flag:
        found[_R.EMAIL_OPT_OUT_USER] = f"user={prepared.request.user_id}"
    elif (
        any_user_flag
        and history.current().user_opt_out_scope == UserOptOutScope.ORGANIZATION
    ):
        found[_R.EMAIL_OPT_OUT_USER] = "any-user scope=ORGANIZATION"
    return found
