//! `PreferenceEvent`s: their fields, and the strict reader of a body written with our
//! own schema (a mirror of `worker/codec/preference_event.py`).
//!
//! Like the `SendRequest` reader, it declines (`None`) on anything unusual (a negative
//! length, a varint of more than nine bytes or in an over-long form, an enum, boolean or
//! union index out of range, invalid UTF-8, a truncated body, trailing bytes), and the
//! Python codec decides the value with fastavro. So every body it accepts is one
//! fastavro accepts with the same field values.

use std::borrow::Cow;

use crate::avro::Reader;
use crate::facts::{OrgSettings, UnsubscribeScope, UserOptOutScope};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    User,
    Contact,
    PreferenceCenter,
    Api,
    Import,
    System,
}

impl Source {
    const ALL: [Source; 6] = [Source::User, Source::Contact, Source::PreferenceCenter, Source::Api, Source::Import, Source::System];

    pub fn name(self) -> &'static str {
        match self {
            Source::User => "USER",
            Source::Contact => "CONTACT",
            Source::PreferenceCenter => "PREFERENCE_CENTER",
            Source::Api => "API",
            Source::Import => "IMPORT",
            Source::System => "SYSTEM",
        }
    }

    pub fn parse(name: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|s| s.name() == name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    EmailOptOutUser,
    EmailOptOutOrganization,
    EmailOptOutDomain,
    EmailUnsubscribe,
    SmsOptIn,
    SmsOptOut,
    ContactSilenced,
    ContactUnsilenced,
    ContactDoNotContact,
    ContactOkToEmailSet,
    OrgSettingsChanged,
}

impl EventType {
    /// In the schema's symbol order: the Avro enum index is the position here.
    const ALL: [EventType; 11] = [
        EventType::EmailOptOutUser,
        EventType::EmailOptOutOrganization,
        EventType::EmailOptOutDomain,
        EventType::EmailUnsubscribe,
        EventType::SmsOptIn,
        EventType::SmsOptOut,
        EventType::ContactSilenced,
        EventType::ContactUnsilenced,
        EventType::ContactDoNotContact,
        EventType::ContactOkToEmailSet,
        EventType::OrgSettingsChanged,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventType::EmailOptOutUser => "EMAIL_OPT_OUT_USER",
            EventType::EmailOptOutOrganization => "EMAIL_OPT_OUT_ORGANIZATION",
            EventType::EmailOptOutDomain => "EMAIL_OPT_OUT_DOMAIN",
            EventType::EmailUnsubscribe => "EMAIL_UNSUBSCRIBE",
            EventType::SmsOptIn => "SMS_OPT_IN",
            EventType::SmsOptOut => "SMS_OPT_OUT",
            EventType::ContactSilenced => "CONTACT_SILENCED",
            EventType::ContactUnsilenced => "CONTACT_UNSILENCED",
            EventType::ContactDoNotContact => "CONTACT_DO_NOT_CONTACT",
            EventType::ContactOkToEmailSet => "CONTACT_OK_TO_EMAIL_SET",
            EventType::OrgSettingsChanged => "ORG_SETTINGS_CHANGED",
        }
    }

    pub fn parse(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// A decoded event: borrowed from the value, or owned when Python decoded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    pub event_id: Cow<'a, str>,
    pub org_id: Cow<'a, str>,
    pub occurred_at: i64,
    pub source: Source,
    pub kind: EventType,
    pub email: Option<Cow<'a, str>>,
    pub phone: Option<Cow<'a, str>>,
    pub user_id: Option<Cow<'a, str>>,
    pub domain: Option<Cow<'a, str>>,
    pub contact_id: Option<Cow<'a, str>>,
    pub ok_to_email: Option<bool>,
    pub settings: Option<OrgSettings>,
}

/// The event in a `PreferenceEvent` body (the value after its header).
pub fn read_event(body: &[u8]) -> Option<Event<'_>> {
    let mut r = Reader::new(body);
    let event_id = Cow::Borrowed(r.string()?);
    let org_id = Cow::Borrowed(r.string()?);
    let occurred_at = r.long()?;
    let source = Source::ALL[r.symbol(Source::ALL.len())?];
    let kind = EventType::ALL[r.symbol(EventType::ALL.len())?];
    let email = r.optional_string()?.map(Cow::Borrowed);
    let phone = r.optional_string()?.map(Cow::Borrowed);
    let user_id = r.optional_string()?.map(Cow::Borrowed);
    let domain = r.optional_string()?.map(Cow::Borrowed);
    let contact_id = r.optional_string()?.map(Cow::Borrowed);
    let ok_to_email = if r.choice()? {
        match r.byte()? {
            0 => Some(false),
            1 => Some(true),
            _ => return None,
        }
    } else {
        None
    };
    let settings = if r.choice()? {
        let unsubscribe_scope = [UnsubscribeScope::Domain, UnsubscribeScope::Organization][r.symbol(2)?];
        let user_opt_out_scope = [UserOptOutScope::User, UserOptOutScope::Organization][r.symbol(2)?];
        Some(OrgSettings { unsubscribe_scope, user_opt_out_scope })
    } else {
        None
    };
    if !r.at_end() {
        return None;
    }
    Some(Event { event_id, org_id, occurred_at, source, kind, email, phone, user_id, domain, contact_id, ok_to_email, settings })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::avro::{put_long, put_string};

    fn body(kind: u8, tail: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_string(&mut out, "e1");
        put_string(&mut out, "org");
        put_long(&mut out, 1_700_000_000_000);
        out.push(2 * 3); // API
        out.push(2 * kind);
        out.extend_from_slice(tail);
        out
    }

    #[test]
    fn reads_an_sms_opt_in() {
        let mut tail = vec![0, 2];
        put_string(&mut tail, "+15550001111");
        tail.extend_from_slice(&[0, 0, 0, 0, 0]);
        let value = body(4, &tail);
        let event = read_event(&value).expect("plain body");
        assert_eq!(event.kind, EventType::SmsOptIn);
        assert_eq!(event.source, Source::Api);
        assert_eq!(event.phone.as_deref(), Some("+15550001111"));
        assert_eq!(event.occurred_at, 1_700_000_000_000);
        assert!(event.email.is_none() && event.settings.is_none());
    }

    #[test]
    fn reads_settings_and_ok_to_email() {
        let value = body(10, &[0, 0, 0, 0, 0, 2, 1, 2, 2, 0]);
        let event = read_event(&value).expect("settings");
        assert_eq!(event.ok_to_email, Some(true));
        let settings = event.settings.expect("settings");
        assert_eq!(settings.unsubscribe_scope, UnsubscribeScope::Organization);
        assert_eq!(settings.user_opt_out_scope, UserOptOutScope::User);
    }

    #[test]
    fn declines_the_unusual() {
        assert!(read_event(&body(4, &[0, 0, 0, 0, 0, 0, 0])).is_some());
        assert!(read_event(&body(4, &[0, 0, 0, 0, 0, 0, 0, 0])).is_none(), "trailing byte");
        assert!(read_event(&body(4, &[0, 0, 0, 0, 0, 0])).is_none(), "truncated");
        assert!(read_event(&body(11, &[0, 0, 0, 0, 0, 0, 0])).is_none(), "unknown type");
        assert!(read_event(&body(4, &[4, 0, 0, 0, 0, 0, 0])).is_none(), "bad union branch");
        assert!(read_event(&body(4, &[0, 0, 0, 0, 0, 2, 2, 0])).is_none(), "boolean byte 2");
        assert!(read_event(&body(10, &[0, 0, 0, 0, 0, 0, 2, 4, 0])).is_none(), "scope index 2");
    }
}
