"""``sendgate explain``: would this send be allowed now, and which facts say so.

It decides through :class:`~worker.ops.live_state.LiveState`, like every
operator tool. Explain is the operator's own question about one address, so
its output shows the address; logs never do.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from worker.config import Settings
from worker.models import Category, Channel, SendRequest
from worker.ops.live_state import LiveState, StateRefused
from worker.ops.tables import echo_json, iso
from worker.policy.decision import Decision, PreparedRequest
from worker.policy.facts import (
    FLAG_SET,
    FactKey,
    FactKind,
    SettingsHistory,
    SmsConsent,
    Stamped,
    decode_unsubscribes,
)
from worker.state.store import StoreStatus
from worker.terminal import console, run_guarded

logger = logging.getLogger(__name__)


_SUBJECT_FIELDS: dict[FactKind, tuple[str, ...]] = {
    FactKind.EMAIL_OPT_OUT_ORGANIZATION: ("email",),
    FactKind.EMAIL_OPT_OUT_DOMAIN: ("email", "sender_domain"),
    FactKind.EMAIL_OPT_OUT_USER: ("email", "user_id"),
    FactKind.EMAIL_OPT_OUT_ANY_USER: ("email",),
    FactKind.EMAIL_UNSUBSCRIBES: ("email",),
    FactKind.SMS_CONSENT: ("phone",),
    FactKind.SILENCED: ("contact_id",),
    FactKind.DO_NOT_CONTACT: ("contact_id",),
    FactKind.OK_TO_EMAIL: ("contact_id",),
    FactKind.ORG_SETTINGS: (),
}


@dataclass(frozen=True)
class Explanation:
    """A decision with the facts it read and the state it read them from."""

    request: SendRequest
    prepared: PreparedRequest
    decision: Decision
    facts: list[dict[str, Any]]
    status: StoreStatus
    barrier: dict[int, int]
    fresh: bool
    note: str

    def to_json(self) -> dict[str, Any]:
        request = self.request.to_record()
        request.pop("payload", None)
        return {
            "request": request,
            "normalized": {"to": self.prepared.to, "sender_domain": self.prepared.sender_domain},
            "decision": {
                "allowed": self.decision.allowed,
                "outcome": "ALLOWED" if self.decision.allowed else "SUPPRESSED",
                "primary_reason": self.decision.primary_reason.value if self.decision.primary_reason else None,
                "reasons": [r.value for r in self.decision.reasons],
                "details": dict(self.decision.details),
                "bypassed": [r.value for r in self.decision.bypassed],
            },
            "facts": self.facts,
            "store": {
                "generation": self.status.generation,
                "ready": self.status.ready,
                "fresh": self.fresh,
                "applied": {str(p): o for p, o in sorted(self.status.progress.items())},
                "barrier": {str(p): o for p, o in sorted(self.barrier.items())},
                "note": self.note,
            },
        }


def explain(live: LiveState, request: SendRequest) -> Explanation:
    """Decide ``request`` on the live store and describe every fact involved."""
    prepared = live.policy.prepare(request)
    read_keys = list(prepared.keys)
    # Every contact fact is shown, even one this channel does not read.
    shown = read_keys + [
        key
        for key in (
            FactKey(request.org_id, kind, (request.contact_id,))
            for kind in (FactKind.DO_NOT_CONTACT, FactKind.SILENCED, FactKind.OK_TO_EMAIL)
        )
        if key not in read_keys
    ]
    settings_key = FactKey(request.org_id, FactKind.ORG_SETTINGS, ())
    if settings_key not in shown:
        shown.append(settings_key)
    try:
        snapshot = live.read(shown)
        fresh, note = True, "complete and past the freshness barrier: the gate would decide the same now"
    except StateRefused as exc:
        snapshot = live.read_unchecked(shown)
        fresh, note = False, f"NOT TRUSTWORTHY: {exc.__cause__ or exc} — the gate would pause instead of deciding"
    barrier = live.barrier()
    decision = live.policy.decide(prepared, snapshot.facts)
    history = SettingsHistory()
    raw_settings = snapshot.facts.get(settings_key)
    if raw_settings:
        with contextlib.suppress(ValueError):
            history = SettingsHistory.decode(raw_settings)
    facts = [describe_fact(key, snapshot.facts.get(key), key in read_keys, history) for key in shown]
    return Explanation(request, prepared, decision, facts, snapshot.status, barrier, fresh, note)


def describe_fact(key: FactKey, raw: str | None, read: bool, history: SettingsHistory) -> dict[str, Any]:
    """A fact as JSON: kind, subject, whether the policy reads it, and its decoded value."""
    names = _SUBJECT_FIELDS.get(key.kind, tuple(f"part{i}" for i in range(len(key.subject))))
    described: dict[str, Any] = {
        "kind": key.kind.name,
        "subject": dict(zip(names, key.subject, strict=True)),
        "read_by_policy": read,
        "present": raw is not None,
        "raw": raw,
        "value": None,
    }
    if raw is None:
        return described
    try:
        described["value"] = _decode(key.kind, raw, history)
    except (ValueError, TypeError, KeyError) as exc:
        described["value"] = {"undecodable": type(exc).__name__}
    return described


def _decode(kind: FactKind, raw: str, history: SettingsHistory) -> Any:
    if kind in (FactKind.SILENCED, FactKind.OK_TO_EMAIL):
        stamped = Stamped.decode(raw)
        return {
            "value": stamped.value,
            "occurred_at": stamped.occurred_at,
            "occurred_at_iso": iso(stamped.occurred_at),
            "event_id": stamped.event_id,
        }
    if kind is FactKind.SMS_CONSENT:
        return _sms_consent(raw)
    if kind is FactKind.EMAIL_UNSUBSCRIBES:
        return [
            {
                "domain": u.domain or None,
                "occurred_at": u.occurred_at,
                "occurred_at_iso": iso(u.occurred_at),
                "scope_in_force": history.at(u.occurred_at).unsubscribe_scope.value,
            }
            for u in decode_unsubscribes(raw)
        ]
    if kind is FactKind.ORG_SETTINGS:
        decoded = SettingsHistory.decode(raw)
        return {
            "current": decoded.current().to_record(),
            "history": [
                {"occurred_at": c.occurred_at, "occurred_at_iso": iso(c.occurred_at), "event_id": c.event_id, **c.settings.to_record()}
                for c in decoded.changes
            ],
        }
    return {"set": raw == FLAG_SET}


def _sms_consent(raw: str) -> dict[str, Any]:
    consent = SmsConsent.decode(raw)
    if consent.encode() != raw:
        return {"undecodable": "SmsConsent"}
    described: dict[str, Any] = {"consent": "out" if consent.opted_out else "in" if consent.opted_in else "none"}
    # The times SPEC §4 judges by; a latest opt-out on a number not opted out is one
    # that was rejected (no earlier opt-in) and is remembered.
    for name in ("earliest_opt_in", "latest_opt_out"):
        at = getattr(consent, name)
        if at is not None:
            described[name] = at
            described[f"{name}_iso"] = iso(at)
    return described


def _sms_consent_text(value: dict[str, Any]) -> str:
    if value["consent"] == "out":
        return "opted out"
    text = f"opted in since {value['earliest_opt_in_iso']}" if value["consent"] == "in" else "not opted in"
    if "latest_opt_out_iso" in value:
        text += f"; remembered opt-out at {value['latest_opt_out_iso']} (rejected: no opt-in at or before it)"
    return text


def _value_text(fact: dict[str, Any]) -> str:
    """A fact's value for a table cell; JSON output keeps the full structure."""
    kind, value = fact["kind"], fact["value"]
    if not fact["present"]:
        return "absent (defaults: unsubscribe DOMAIN, user opt-out USER)" if kind == "ORG_SETTINGS" else "absent"
    if not isinstance(value, (dict, list)) or (isinstance(value, dict) and "undecodable" in value):
        return f"undecodable: {fact['raw']!r}"
    if kind == "EMAIL_UNSUBSCRIBES":
        return "\n".join(f"{u['occurred_at_iso']} domain={u['domain'] or '-'} → scope {u['scope_in_force']}" for u in value)
    if not isinstance(value, dict):
        return f"present: {fact['raw']!r}"
    if kind in ("SILENCED", "OK_TO_EMAIL"):
        return f"{'true' if value['value'] else 'false'} since {value['occurred_at_iso']} (event {value['event_id']})"
    if kind == "SMS_CONSENT":
        return _sms_consent_text(value)
    if kind == "ORG_SETTINGS":
        current = value["current"]
        lines = [f"now: unsubscribe {current['unsubscribe_scope']}, user opt-out {current['user_opt_out_scope']}"]
        lines += [
            f"{c['occurred_at_iso']}: unsubscribe {c['unsubscribe_scope']}, user opt-out {c['user_opt_out_scope']} (event {c['event_id']})"
            for c in value["history"]
        ]
        return "\n".join(lines)
    return "set" if value.get("set") else f"present: {fact['raw']!r}"


def render(console: Console, explanation: Explanation) -> None:
    """The explanation as rich tables: decision, facts, store status."""
    data = explanation.to_json()
    decision = data["decision"]
    colour = "green" if decision["allowed"] else "red"
    head = Table(title="Decision", title_justify="left", show_header=False)
    head.add_column("field")
    head.add_column("value")
    head.add_row("outcome", f"[{colour}]{decision['outcome']}[/{colour}]")
    head.add_row("primary reason", decision["primary_reason"] or "-")
    for reason in decision["reasons"]:
        head.add_row(f"reason {reason}", decision["details"].get(reason, ""))
    if decision["bypassed"]:
        head.add_row("bypassed (transactional)", ", ".join(decision["bypassed"]))
    head.add_row("to (normalised)", str(data["normalized"]["to"]))
    if explanation.request.channel is Channel.EMAIL:
        head.add_row("sender domain", str(data["normalized"]["sender_domain"]))
    console.print(head)

    facts = Table(title="Facts held", title_justify="left")
    for column in ("fact", "subject", "read", "value"):
        facts.add_column(column, overflow="fold")
    for fact in data["facts"]:
        subject = ", ".join(f"{k}={v}" for k, v in fact["subject"].items()) or "(organization)"
        facts.add_row(fact["kind"], subject, "yes" if fact["read_by_policy"] else "no", _value_text(fact))
    console.print(facts)

    store = data["store"]
    status = Table(title="State store", title_justify="left", show_header=False)
    status.add_column("field")
    status.add_column("value", overflow="fold")
    status.add_row("generation", str(store["generation"]))
    status.add_row("ready", "yes" if store["ready"] else "[red]no[/red]")
    status.add_row("applied (partition: offset)", ", ".join(f"{p}: {o}" for p, o in store["applied"].items()) or "-")
    status.add_row("freshness barrier", ", ".join(f"{p}: {o}" for p, o in store["barrier"].items()) or "-")
    status.add_row("fresh", ("[green]yes[/green] " if explanation.fresh else "[red]no[/red] ") + store["note"])
    console.print(status)


def _require_for_email(ctx: click.Context, channel: str, user: str | None, sender: str | None) -> None:
    if channel == Channel.EMAIL.value:
        if not user:
            raise click.UsageError("--user is required for EMAIL (user-level opt-outs are per user)", ctx)
        if not sender:
            raise click.UsageError("--from is required for EMAIL (domain-level opt-outs are per sender domain)", ctx)


@click.command("explain")
@click.option("--org", "org_id", required=True, help="Organization id.")
@click.option("--user", "user_id", default=None, help="Sending user id (required for EMAIL).")
@click.option("--contact", "contact_id", required=True, help="Contact id.")
@click.option("--channel", type=click.Choice([c.value for c in Channel], case_sensitive=False), required=True)
@click.option(
    "--category", type=click.Choice([c.value for c in Category], case_sensitive=False), default=Category.MARKETING.value, show_default=True
)
@click.option("--to", "to", required=True, help="Recipient email address or phone number.")
@click.option("--from", "sender", default=None, help="Sender address (required for EMAIL; its domain is the sender domain).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.pass_context
def explain_command(
    ctx: click.Context,
    org_id: str,
    user_id: str | None,
    contact_id: str,
    channel: str,
    category: str,
    to: str,
    sender: str | None,
    as_json: bool,
) -> None:
    """Would this send be allowed now? Shows the decision, every reason and the facts held.

    Reads the live state store (behind the gate's freshness barrier) and lists
    every fact the policy reads for the address, phone and contact, decoded.
    Nothing is written.
    """

    _require_for_email(ctx, channel.upper(), user_id, sender)
    settings: Settings = ctx.obj
    request = SendRequest(
        message_id="explain",
        org_id=org_id,
        user_id=user_id or "",
        contact_id=contact_id,
        channel=Channel(channel.upper()),
        category=Category(category.upper()),
        to=to,
        from_=sender or "",
        requested_at=int(time.time() * 1000),
    )

    def body() -> None:
        live = LiveState.connect(settings)
        try:
            result = explain(live, request)
        finally:
            live.close()
        logger.info(
            "explained a hypothetical send",
            extra={"channel": request.channel.value, "allowed": result.decision.allowed, "fresh": result.fresh},
        )
        if as_json:
            echo_json(result.to_json())
        else:
            render(Console(width=max(console.width, 120)), result)

    run_guarded(body)
