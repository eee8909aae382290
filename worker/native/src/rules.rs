//! Preference-event semantics (SPEC §2, §4): which facts an event reads and what it
//! writes. A mirror of `worker/policy/events.py` and the value formats of
//! `worker/policy/facts.py`, which stay the reference; the property tests hold the two
//! equal.

use crate::address::Normalised;
use crate::events::{Event, EventType, Source};
use crate::facts::{decode_unsubscribes, FactKind, IntReader, OrgSettings, SettingsHistory, UnsubscribeScope, UserOptOutScope};

pub const FLAG_SET: &str = "1";
pub const SMS_OUT: &str = "out";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Irreversible,
    SmsNotOptedIn,
    SourceNotAllowed,
    MissingField,
    InvalidAddress,
}

impl Reason {
    pub fn name(self) -> &'static str {
        match self {
            Reason::Irreversible => "IRREVERSIBLE",
            Reason::SmsNotOptedIn => "SMS_NOT_OPTED_IN",
            Reason::SourceNotAllowed => "SOURCE_NOT_ALLOWED",
            Reason::MissingField => "MISSING_FIELD",
            Reason::InvalidAddress => "INVALID_ADDRESS",
        }
    }
}

pub type Rejection = (Reason, String);

/// `str.strip()`: Rust's White_Space plus the four separators 0x1C-0x1F that Python also strips.
pub fn py_strip(text: &str) -> &str {
    text.trim_matches(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c))
}

/// `_present`: set and, for text, not blank.
fn present(value: Option<&str>) -> bool {
    value.is_some_and(|v| !py_strip(v).is_empty())
}

fn is_email_event(kind: EventType) -> bool {
    matches!(
        kind,
        EventType::EmailOptOutUser | EventType::EmailOptOutOrganization | EventType::EmailOptOutDomain | EventType::EmailUnsubscribe
    )
}

fn text<'v>(value: &'v Option<std::borrow::Cow<'_, str>>) -> Option<&'v str> {
    value.as_deref()
}

/// Which subject fields of a (so far valid) event must be normalised.
#[derive(Debug, Default, Clone, Copy)]
pub struct Wants {
    pub email: bool,
    pub phone: bool,
    pub domain: bool,
}

/// The normalised subject fields, `None` where not wanted.
#[derive(Debug, Default, Clone)]
pub struct Addresses {
    pub email: Option<Normalised>,
    pub phone: Option<Normalised>,
    pub domain: Option<Normalised>,
}

/// `_plan`'s checks before any address: the missing fields and the source; then what to normalise.
pub fn check(event: &Event<'_>) -> Result<Wants, Rejection> {
    let kind = event.kind;
    let required: &[(&str, bool)] = &[
        ("email", present(text(&event.email))),
        ("phone", present(text(&event.phone))),
        ("user_id", present(text(&event.user_id))),
        ("domain", present(text(&event.domain))),
        ("contact_id", present(text(&event.contact_id))),
        ("ok_to_email", event.ok_to_email.is_some()),
        ("settings", event.settings.is_some()),
    ];
    let needs: &[&str] = match kind {
        EventType::EmailOptOutUser => &["email", "user_id"],
        EventType::EmailOptOutOrganization | EventType::EmailUnsubscribe => &["email"],
        EventType::EmailOptOutDomain => &["email", "domain"],
        EventType::SmsOptIn | EventType::SmsOptOut => &["phone"],
        EventType::ContactSilenced | EventType::ContactUnsilenced | EventType::ContactDoNotContact => &["contact_id"],
        EventType::ContactOkToEmailSet => &["contact_id", "ok_to_email"],
        EventType::OrgSettingsChanged => &["settings"],
    };
    let mut missing: Vec<&str> = Vec::new();
    if !present(Some(event.org_id.as_ref())) {
        missing.push("org_id");
    }
    for name in needs {
        if !required.iter().any(|(field, ok)| field == name && *ok) {
            missing.push(name);
        }
    }
    if !missing.is_empty() {
        return Err((Reason::MissingField, format!("{} needs {}", kind.name(), missing.join(", "))));
    }
    if kind == EventType::ContactOkToEmailSet && !matches!(event.source, Source::Api | Source::Import) {
        return Err((
            Reason::SourceNotAllowed,
            format!("ok-to-email can only be set by API or IMPORT, not {}", event.source.name()),
        ));
    }
    Ok(match kind {
        EventType::EmailOptOutDomain => Wants { email: true, domain: true, ..Wants::default() },
        // A missing or unusable domain is recorded as none (organization level).
        EventType::EmailUnsubscribe => Wants { email: true, domain: event.domain.as_deref().is_some_and(|d| !d.is_empty()), ..Wants::default() },
        k if is_email_event(k) => Wants { email: true, ..Wants::default() },
        EventType::SmsOptIn | EventType::SmsOptOut => Wants { phone: true, ..Wants::default() },
        EventType::ContactDoNotContact => {
            Wants { email: present(text(&event.email)), phone: present(text(&event.phone)), ..Wants::default() }
        }
        _ => Wants::default(),
    })
}

/// One fact an event touches: kind, subject and qualifier (borrowed from the event or its addresses).
pub type Touch<'a> = (FactKind, &'a str, Option<&'a str>);

/// What a valid event touches, its unsubscribe domain ("" = none) and its SPEC §4 Kafka key.
pub struct Plan<'a> {
    pub facts: Vec<Touch<'a>>,
    pub domain: String,
    pub subject_key: String,
}

fn invalid(kind: EventType, field: &str) -> Rejection {
    (Reason::InvalidAddress, format!("{}: {field} cannot be parsed", kind.name()))
}

fn valid(value: &Option<Normalised>) -> Option<&str> {
    match value {
        Some(Normalised::Valid(text)) => Some(text),
        _ => None,
    }
}

/// `_plan` after `check`, with every wanted address answered (none `Unsure`).
pub fn plan<'a>(event: &'a Event<'a>, addresses: &'a Addresses) -> Result<Plan<'a>, Rejection> {
    let kind = event.kind;
    let org = event.org_id.as_ref();
    let mut domain = String::new();
    let facts: Vec<Touch<'a>> = match kind {
        k if is_email_event(k) => {
            let email = valid(&addresses.email).ok_or_else(|| invalid(kind, "email"))?;
            match kind {
                EventType::EmailOptOutUser => vec![
                    (FactKind::EmailOptOutUser, email, Some(event.user_id.as_deref().unwrap_or_default())),
                    (FactKind::EmailOptOutAnyUser, email, None),
                ],
                EventType::EmailOptOutOrganization => vec![(FactKind::EmailOptOutOrganization, email, None)],
                EventType::EmailOptOutDomain => {
                    let d = valid(&addresses.domain).ok_or_else(|| invalid(kind, "domain"))?;
                    vec![(FactKind::EmailOptOutDomain, email, Some(d))]
                }
                _ => {
                    domain = valid(&addresses.domain).unwrap_or_default().to_owned();
                    vec![(FactKind::EmailUnsubscribes, email, None)]
                }
            }
        }
        EventType::SmsOptIn | EventType::SmsOptOut => {
            vec![(FactKind::SmsConsent, valid(&addresses.phone).ok_or_else(|| invalid(kind, "phone"))?, None)]
        }
        EventType::OrgSettingsChanged => vec![(FactKind::OrgSettings, "", None)],
        _ => {
            let contact = event.contact_id.as_deref().unwrap_or_default();
            match kind {
                EventType::ContactSilenced | EventType::ContactUnsilenced => vec![(FactKind::Silenced, contact, None)],
                EventType::ContactOkToEmailSet => vec![(FactKind::OkToEmail, contact, None)],
                _ => {
                    let mut facts = vec![(FactKind::DoNotContact, contact, None)];
                    if addresses.email.is_some() {
                        facts.push((FactKind::EmailOptOutOrganization, valid(&addresses.email).ok_or_else(|| invalid(kind, "email"))?, None));
                    }
                    if addresses.phone.is_some() {
                        facts.push((FactKind::SmsConsent, valid(&addresses.phone).ok_or_else(|| invalid(kind, "phone"))?, None));
                    }
                    facts
                }
            }
        }
    };
    let subject_key = if kind == EventType::OrgSettingsChanged { org.to_owned() } else { format!("{org}:{}", facts[0].1) };
    Ok(Plan { facts, domain, subject_key })
}

/// Whether applying an event of `kind` reads the current value of its facts. Flags
/// (opt-outs, do-not-contact's facts) are set whatever they held: the same state as
/// writing only the ones not yet set, without reading them.
pub fn reads(kind: EventType) -> bool {
    !matches!(
        kind,
        EventType::EmailOptOutUser | EventType::EmailOptOutOrganization | EventType::EmailOptOutDomain | EventType::ContactDoNotContact
    )
}

/// A planned event as applying it needs it: owned, its facts as positions in the batch's table.
#[derive(Debug, Clone)]
pub struct Step {
    pub kind: EventType,
    pub event_id: String,
    pub occurred_at: i64,
    pub facts: Vec<usize>,
    pub domain: String,
    pub ok_to_email: bool,
    pub settings: Option<OrgSettings>,
}

/// `SmsConsent` (event time, SPEC §4): opted out is absorbing; else the earliest opt-in and latest opt-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Consent {
    Out,
    Times(Option<i128>, Option<i128>),
}

/// `-?[0-9]+`, the only integer form `SmsConsent.decode` reads; `Err` where Python's int would still read it
/// but an i128 cannot (our encoders never write one).
fn millis(text: &str) -> Result<Option<i128>, String> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    text.parse::<i128>().map(Some).map_err(|_| format!("SMS_CONSENT fact: time {text:?} out of range"))
}

impl Consent {
    fn decode(raw: Option<&str>) -> Result<Consent, String> {
        let none = Consent::Times(None, None);
        let raw = raw.unwrap_or("");
        if raw == SMS_OUT {
            return Ok(Consent::Out);
        }
        let Some((opt_in, opt_out)) = raw.split_once('|') else {
            return Ok(none);
        };
        let side = |text: &str| -> Result<Option<Option<i128>>, String> {
            if text.is_empty() {
                return Ok(Some(None));
            }
            Ok(millis(text)?.map(Some))
        };
        match (side(opt_in)?, side(opt_out)?) {
            (Some(a), Some(b)) => Ok(Consent::Times(a, b)),
            _ => Ok(none),
        }
    }

    fn encode(self) -> String {
        match self {
            Consent::Out => SMS_OUT.to_owned(),
            Consent::Times(a, b) => {
                let text = |v: Option<i128>| v.map(|n| n.to_string()).unwrap_or_default();
                format!("{}|{}", text(a), text(b))
            }
        }
    }

    fn settled(self) -> Consent {
        match self {
            Consent::Times(Some(a), Some(b)) if b >= a => Consent::Out,
            other => other,
        }
    }

    fn with_opt_in(self, at: i64) -> Consent {
        match self {
            Consent::Out => Consent::Out,
            Consent::Times(a, b) => Consent::Times(Some(a.map_or(i128::from(at), |a| a.min(i128::from(at)))), b).settled(),
        }
    }

    fn with_opt_out(self, at: i64) -> Consent {
        match self {
            Consent::Out => Consent::Out,
            Consent::Times(a, b) => Consent::Times(a, Some(b.map_or(i128::from(at), |b| b.max(i128::from(at))))).settled(),
        }
    }
}

/// `json.dumps` of a string with its default `ensure_ascii`: every character outside
/// space..tilde is escaped, non-BMP ones as surrogate pairs.
pub fn json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}

fn encode_unsubscribes(mut items: Vec<(String, i64)>) -> String {
    items.sort();
    items.dedup();
    let mut out = String::from("[");
    for (at, (domain, occurred_at)) in items.iter().enumerate() {
        if at > 0 {
            out.push(',');
        }
        out.push('[');
        json_string(&mut out, domain);
        out.push_str(&format!(",{occurred_at}]"));
    }
    out.push(']');
    out
}

fn encode_settings(changes: &[(i64, String, OrgSettings)]) -> String {
    let mut out = String::from("[");
    for (at, (occurred_at, event_id, settings)) in changes.iter().enumerate() {
        if at > 0 {
            out.push(',');
        }
        out.push_str(&format!("[{occurred_at},"));
        json_string(&mut out, event_id);
        let unsubscribe = match settings.unsubscribe_scope {
            UnsubscribeScope::Domain => "DOMAIN",
            UnsubscribeScope::Organization => "ORGANIZATION",
        };
        let user = match settings.user_opt_out_scope {
            UserOptOutScope::User => "USER",
            UserOptOutScope::Organization => "ORGANIZATION",
        };
        out.push_str(&format!(",\"{unsubscribe}\",\"{user}\"]"));
    }
    out.push(']');
    out
}

/// `Stamped.decode`'s (occurred_at, event_id) of a stored last-writer-wins value.
fn stamp<'v>(raw: &'v str, int: &IntReader<'_>, kind: FactKind) -> Result<(i128, &'v str), String> {
    let mut parts = raw.splitn(3, '|');
    let (Some(_flag), Some(occurred_at), Some(event_id)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("{kind:?} fact: not a stamped value"));
    };
    let at = int(occurred_at)
        .and_then(|text| text.parse::<i128>().ok())
        .ok_or_else(|| format!("{kind:?} fact: invalid time in a stamped value"))?;
    Ok((at, event_id))
}

/// The batch's facts overlaid by its writes so far, and which were written, in first-write order.
pub struct View {
    pub values: Vec<Option<String>>,
    pub written: Vec<usize>,
    is_written: Vec<bool>,
}

impl View {
    pub fn new(values: Vec<Option<String>>) -> View {
        let count = values.len();
        View { values, written: Vec::new(), is_written: vec![false; count] }
    }

    fn get(&self, fact: usize) -> Option<&str> {
        self.values[fact].as_deref()
    }

    fn set(&mut self, fact: usize, value: String) {
        self.values[fact] = Some(value);
        if !self.is_written[fact] {
            self.is_written[fact] = true;
            self.written.push(fact);
        }
    }
}

/// `PreferenceRules.apply_planned` for one event: its writes go into `view`; its rejection, if any.
pub fn apply(step: &Step, kinds: &[FactKind], view: &mut View, int: &IntReader<'_>) -> Result<Option<Rejection>, String> {
    match step.kind {
        EventType::EmailOptOutUser | EventType::EmailOptOutOrganization | EventType::EmailOptOutDomain => {
            for &fact in &step.facts {
                if view.get(fact) != Some(FLAG_SET) {
                    view.set(fact, FLAG_SET.to_owned());
                }
            }
        }
        EventType::EmailUnsubscribe => {
            let fact = step.facts[0];
            let recorded = decode_unsubscribes(view.get(fact).unwrap_or(""))?;
            let mut items: Vec<(String, i64)> = recorded.into_iter().map(|u| (u.domain, u.occurred_at)).collect();
            let new = (step.domain.clone(), step.occurred_at);
            if !items.contains(&new) {
                items.push(new);
                view.set(fact, encode_unsubscribes(items));
            }
        }
        EventType::SmsOptIn => {
            let fact = step.facts[0];
            let consent = Consent::decode(view.get(fact))?;
            if consent == Consent::Out {
                return Ok(Some((Reason::Irreversible, "SMS_OPT_IN for a number that has opted out".to_owned())));
            }
            let after = consent.with_opt_in(step.occurred_at);
            if after != consent {
                view.set(fact, after.encode());
            }
        }
        EventType::SmsOptOut => {
            let fact = step.facts[0];
            let consent = Consent::decode(view.get(fact))?;
            let after = consent.with_opt_out(step.occurred_at);
            if after != consent {
                view.set(fact, after.encode());
            }
            if after != Consent::Out {
                // No opt-in at or before it: rejected, but remembered (SPEC §4).
                return Ok(Some((Reason::SmsNotOptedIn, "SMS_OPT_OUT for a number with no earlier opt-in".to_owned())));
            }
        }
        EventType::ContactSilenced | EventType::ContactUnsilenced | EventType::ContactOkToEmailSet => {
            let fact = step.facts[0];
            let value = match step.kind {
                EventType::ContactOkToEmailSet => step.ok_to_email,
                kind => kind == EventType::ContactSilenced,
            };
            let mine = (i128::from(step.occurred_at), step.event_id.as_str());
            let supersedes = match view.get(fact) {
                None => true,
                Some(current) => mine > stamp(current, int, kinds[fact])?,
            };
            if supersedes {
                view.set(fact, format!("{}|{}|{}", u8::from(value), step.occurred_at, step.event_id));
            }
        }
        EventType::ContactDoNotContact => {
            for &fact in &step.facts {
                // The SMS opt-out is recorded whatever the consent was (SPEC §8).
                let value = if kinds[fact] == FactKind::SmsConsent { SMS_OUT } else { FLAG_SET };
                if view.get(fact) != Some(value) {
                    view.set(fact, value.to_owned());
                }
            }
        }
        EventType::OrgSettingsChanged => {
            let fact = step.facts[0];
            let history = SettingsHistory::decode(view.get(fact).unwrap_or(""))?;
            let mut changes = history.into_changes();
            if !changes.iter().any(|c| c.1 == step.event_id) {
                let settings = step.settings.ok_or("ORG_SETTINGS_CHANGED without settings")?;
                changes.push((step.occurred_at, step.event_id.clone(), settings));
                changes.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
                view.set(fact, encode_settings(&changes));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::canonical_int;

    fn int(text: &str) -> Option<String> {
        canonical_int(text)
    }

    fn step(kind: EventType, at: i64, facts: Vec<usize>) -> Step {
        Step { kind, event_id: format!("e{at}"), occurred_at: at, facts, domain: String::new(), ok_to_email: false, settings: None }
    }

    #[test]
    fn sms_consent_is_judged_in_event_time() {
        let kinds = [FactKind::SmsConsent];
        let mut view = View::new(vec![None]);
        let out = apply(&step(EventType::SmsOptOut, 150, vec![0]), &kinds, &mut view, &int).unwrap();
        assert_eq!(out.map(|r| r.0), Some(Reason::SmsNotOptedIn));
        assert_eq!(view.values[0].as_deref(), Some("|150"));
        assert!(apply(&step(EventType::SmsOptIn, 100, vec![0]), &kinds, &mut view, &int).unwrap().is_none());
        assert_eq!(view.values[0].as_deref(), Some("out"));
        let again = apply(&step(EventType::SmsOptIn, 200, vec![0]), &kinds, &mut view, &int).unwrap();
        assert_eq!(again.map(|r| r.0), Some(Reason::Irreversible));
    }

    #[test]
    fn consent_reads_only_canonical_millis() {
        assert_eq!(Consent::decode(Some("007|")).unwrap(), Consent::Times(Some(7), None));
        assert_eq!(Consent::decode(Some(" 1|")).unwrap(), Consent::Times(None, None));
        assert_eq!(Consent::decode(Some("-|")).unwrap(), Consent::Times(None, None));
        assert_eq!(Consent::decode(Some("1|2|3")).unwrap(), Consent::Times(None, None));
        assert_eq!(Consent::Times(Some(-0), None).encode(), "0|");
    }

    #[test]
    fn stamps_are_last_writer_wins() {
        let kinds = [FactKind::Silenced];
        let mut view = View::new(vec![Some("1|200|e".to_owned())]);
        apply(&step(EventType::ContactUnsilenced, 100, vec![0]), &kinds, &mut view, &int).unwrap();
        assert!(view.written.is_empty());
        apply(&step(EventType::ContactUnsilenced, 300, vec![0]), &kinds, &mut view, &int).unwrap();
        assert_eq!(view.values[0].as_deref(), Some("0|300|e300"));
        let mut broken = View::new(vec![Some("1|x".to_owned())]);
        assert!(apply(&step(EventType::ContactSilenced, 1, vec![0]), &kinds, &mut broken, &int).is_err());
    }

    #[test]
    fn json_is_written_as_python_writes_it() {
        let mut out = String::new();
        json_string(&mut out, "a\"b\\c\u{7f}é\u{1F600}\n");
        assert_eq!(out, r#""a\"b\\c\u007f\u00e9\ud83d\ude00\n""#);
        assert_eq!(encode_unsubscribes(vec![("b.com".into(), 2), ("".into(), 5), ("b.com".into(), 2)]), r#"[["",5],["b.com",2]]"#);
    }

    #[test]
    fn python_strip_includes_the_information_separators() {
        assert_eq!(py_strip("\x1c a \u{3000}\u{85}"), "a");
        assert_eq!(py_strip("\u{200b}a"), "\u{200b}a"); // zero-width space is not whitespace
    }
}
