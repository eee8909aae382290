//! The decision table of SPEC §3, a port of `worker/policy/decision.py` (the reference).

use crate::facts::{
    decode_unsubscribes, stamp_detail, IntReader, SettingsHistory, SmsConsent, UnsubscribeScope, UserOptOutScope, SMS_OUT,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Email,
    Sms,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    Marketing,
    Transactional,
}

impl Channel {
    pub fn name(self) -> &'static str {
        match self {
            Channel::Email => "EMAIL",
            Channel::Sms => "SMS",
        }
    }

    pub fn parse(text: &str) -> Option<Channel> {
        match text {
            "EMAIL" => Some(Channel::Email),
            "SMS" => Some(Channel::Sms),
            _ => None,
        }
    }
}

impl Category {
    pub fn name(self) -> &'static str {
        match self {
            Category::Marketing => "MARKETING",
            Category::Transactional => "TRANSACTIONAL",
        }
    }

    pub fn parse(text: &str) -> Option<Category> {
        match text {
            "MARKETING" => Some(Category::Marketing),
            "TRANSACTIONAL" => Some(Category::Transactional),
            _ => None,
        }
    }
}

/// The rows of SPEC §3; declaration order is the primary-reason order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    InvalidAddress,
    DoNotContact,
    Silenced,
    EmailOptOutOrganization,
    EmailOptOutDomain,
    EmailOptOutUser,
    OkToEmailFalse,
    SmsOptOut,
    SmsNotOptedIn,
}

pub const ALL_REASONS: [Reason; 9] = [
    Reason::InvalidAddress,
    Reason::DoNotContact,
    Reason::Silenced,
    Reason::EmailOptOutOrganization,
    Reason::EmailOptOutDomain,
    Reason::EmailOptOutUser,
    Reason::OkToEmailFalse,
    Reason::SmsOptOut,
    Reason::SmsNotOptedIn,
];

impl Reason {
    pub fn name(self) -> &'static str {
        match self {
            Reason::InvalidAddress => "INVALID_ADDRESS",
            Reason::DoNotContact => "DO_NOT_CONTACT",
            Reason::Silenced => "SILENCED",
            Reason::EmailOptOutOrganization => "EMAIL_OPT_OUT_ORGANIZATION",
            Reason::EmailOptOutDomain => "EMAIL_OPT_OUT_DOMAIN",
            Reason::EmailOptOutUser => "EMAIL_OPT_OUT_USER",
            Reason::OkToEmailFalse => "OK_TO_EMAIL_FALSE",
            Reason::SmsOptOut => "SMS_OPT_OUT",
            Reason::SmsNotOptedIn => "SMS_NOT_OPTED_IN",
        }
    }
}

/// The facts a request's decision reads, by role; `None` where it names none
/// (no valid `to`, no sender domain, or a fact of the other channel).
#[derive(Debug, Default, Clone, Copy)]
pub struct FactSlots {
    pub do_not_contact: Option<usize>,
    pub silenced: Option<usize>,
    pub ok_to_email: Option<usize>,
    pub org_opt_out: Option<usize>,
    pub user_opt_out: Option<usize>,
    pub any_user_opt_out: Option<usize>,
    pub unsubscribes: Option<usize>,
    pub settings: Option<usize>,
    pub domain_opt_out: Option<usize>,
    pub sms_consent: Option<usize>,
}

/// A request as a decision sees it: `PreparedRequest`.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub channel: Channel,
    pub category: Category,
    pub user_id: String,
    pub contact_id: String,
    pub to_valid: bool,
    /// EMAIL only: the normalised sender's domain; `None` when `from` is invalid.
    pub sender_domain: Option<String>,
    pub slots: FactSlots,
}

/// Every applying reason in table order, each with its detail; `bypassed` lists the
/// email opt-outs a transactional email ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    pub reasons: Vec<(Reason, String)>,
    pub bypassed: Vec<Reason>,
}

/// Fact values by table position, and how to read integers inside them.
pub struct Facts<'a> {
    pub values: &'a [Option<String>],
    pub int: &'a IntReader<'a>,
}

impl Facts<'_> {
    fn get(&self, slot: Option<usize>) -> Option<&str> {
        slot.and_then(|at| self.values[at].as_deref())
    }

    /// Python truthiness of a fact value: present and non-empty.
    fn set(&self, slot: Option<usize>) -> bool {
        self.get(slot).is_some_and(|v| !v.is_empty())
    }
}

pub fn decide(request: &Prepared, facts: &Facts<'_>) -> Result<Decision, String> {
    let mut reasons: Vec<(Reason, String)> = Vec::new();
    let email = request.channel == Channel::Email;
    let slots = &request.slots;

    // Row 1
    let sender_invalid = email && request.sender_domain.is_none();
    if !request.to_valid || sender_invalid {
        let detail = match (sender_invalid, request.to_valid) {
            (true, false) => "field=to,from",
            (true, true) => "field=from",
            _ => "field=to",
        };
        reasons.push((Reason::InvalidAddress, detail.to_owned()));
    }
    // Rows 2, 3: keyed by contact, so they apply even to an invalid `to`.
    if facts.set(slots.do_not_contact) {
        reasons.push((Reason::DoNotContact, format!("contact={}", request.contact_id)));
    }
    if let Some(silenced) = facts.get(slots.silenced).filter(|v| v.starts_with('1')) {
        reasons.push((Reason::Silenced, format!("contact={} {}", request.contact_id, stamp_detail(silenced, facts.int))));
    }

    if email {
        let mut bypassed = Vec::new();
        if request.to_valid {
            let opt_outs = email_opt_outs(request, facts)?;
            if request.category == Category::Transactional {
                bypassed = opt_outs.into_iter().map(|(reason, _)| reason).collect();
            } else {
                reasons.extend(opt_outs);
            }
        }
        // Row 7: a contact fact, no transactional exception.
        if let Some(ok) = facts.get(slots.ok_to_email).filter(|v| v.starts_with('0')) {
            reasons.push((Reason::OkToEmailFalse, format!("contact={} {}", request.contact_id, stamp_detail(ok, facts.int))));
        }
        return Ok(Decision { reasons, bypassed });
    }

    // Rows 8, 9: keyed by phone, so they need a valid `to`.
    if request.to_valid {
        let raw = facts.get(slots.sms_consent);
        if raw == Some(SMS_OUT) {
            reasons.push((Reason::SmsOptOut, "sms_consent=out".to_owned()));
        } else {
            let consent = SmsConsent::decode(raw, facts.int);
            if consent.earliest_opt_in.is_none() {
                let detail = match consent.latest_opt_out {
                    None => "sms_consent=none".to_owned(),
                    // A remembered (rejected) opt-out: why a later-applied earlier opt-in stays out.
                    Some(at) => format!("sms_consent=none opt-out@{at}"),
                };
                reasons.push((Reason::SmsNotOptedIn, detail));
            }
        }
    }
    Ok(Decision { reasons, bypassed: Vec::new() })
}

/// Rows 4-6 in table order, with details; empty (the usual case) when none applies.
fn email_opt_outs(request: &Prepared, facts: &Facts<'_>) -> Result<Vec<(Reason, String)>, String> {
    let slots = &request.slots;
    let org_flag = facts.set(slots.org_opt_out);
    let user_flag = facts.set(slots.user_opt_out);
    let any_user_flag = facts.set(slots.any_user_opt_out);
    let unsubscribes_raw = facts.get(slots.unsubscribes).unwrap_or("");
    let domain_flag = facts.set(slots.domain_opt_out);
    if !(org_flag || user_flag || any_user_flag || !unsubscribes_raw.is_empty() || domain_flag) {
        return Ok(Vec::new());
    }
    // Settings are only needed to resolve an opt-out that is present.
    let history = SettingsHistory::decode(facts.get(slots.settings).unwrap_or(""))?;
    let sender_domain = request.sender_domain.as_deref();
    let mut org_detail: Option<String> = org_flag.then(|| "opt-out".to_owned());
    let mut domain_detail: Option<String> =
        domain_flag.then(|| format!("domain={}", sender_domain.unwrap_or("None")));
    // Each unsubscribe took the scope in force when it happened (SPEC §2).
    for unsubscribe in decode_unsubscribes(unsubscribes_raw)? {
        let at = unsubscribe.occurred_at;
        if history.at(at).unsubscribe_scope == UnsubscribeScope::Organization {
            org_detail.get_or_insert_with(|| format!("unsubscribe@{at} scope=ORGANIZATION"));
        } else if unsubscribe.domain.is_empty() {
            // DOMAIN scope without a domain: organization level, never narrower.
            org_detail.get_or_insert_with(|| format!("unsubscribe@{at} scope=DOMAIN domain=none"));
        } else if Some(unsubscribe.domain.as_str()) == sender_domain && domain_detail.is_none() {
            domain_detail = Some(format!("unsubscribe@{at} scope=DOMAIN domain={}", unsubscribe.domain));
        }
    }
    let mut found = Vec::new();
    if let Some(detail) = org_detail {
        found.push((Reason::EmailOptOutOrganization, detail));
    }
    if let Some(detail) = domain_detail {
        found.push((Reason::EmailOptOutDomain, detail));
    }
    if user_flag {
        found.push((Reason::EmailOptOutUser, format!("user={}", request.user_id)));
    } else if any_user_flag && history.current().user_opt_out_scope == UserOptOutScope::Organization {
        found.push((Reason::EmailOptOutUser, "any-user scope=ORGANIZATION".to_owned()));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::canonical_int;

    fn request(channel: Channel, category: Category) -> Prepared {
        let mut slots = FactSlots { do_not_contact: Some(0), silenced: Some(1), ..FactSlots::default() };
        match channel {
            Channel::Email => {
                slots.ok_to_email = Some(2);
                slots.org_opt_out = Some(3);
                slots.user_opt_out = Some(4);
                slots.any_user_opt_out = Some(5);
                slots.unsubscribes = Some(6);
                slots.settings = Some(7);
                slots.domain_opt_out = Some(8);
            }
            Channel::Sms => slots.sms_consent = Some(2),
        }
        Prepared {
            channel,
            category,
            user_id: "u1".to_owned(),
            contact_id: "c1".to_owned(),
            to_valid: true,
            sender_domain: Some("b.com".to_owned()),
            slots,
        }
    }

    fn decide_with(request: &Prepared, values: &[(usize, &str)]) -> Decision {
        let mut stored = vec![None; 9];
        for (at, value) in values {
            stored[*at] = Some((*value).to_owned());
        }
        decide(request, &Facts { values: &stored, int: &canonical_int }).unwrap()
    }

    fn reasons(decision: &Decision) -> Vec<(&'static str, &str)> {
        decision.reasons.iter().map(|(r, d)| (r.name(), d.as_str())).collect()
    }

    #[test]
    fn nothing_held_allows_email_and_refuses_sms() {
        assert_eq!(decide_with(&request(Channel::Email, Category::Marketing), &[]), Decision::default());
        let sms = decide_with(&request(Channel::Sms, Category::Marketing), &[]);
        assert_eq!(reasons(&sms), vec![("SMS_NOT_OPTED_IN", "sms_consent=none")]);
    }

    #[test]
    fn sms_consent_in_event_time() {
        let sms = request(Channel::Sms, Category::Transactional);
        assert_eq!(reasons(&decide_with(&sms, &[(2, "out")])), vec![("SMS_OPT_OUT", "sms_consent=out")]);
        assert!(decide_with(&sms, &[(2, "100|")]).reasons.is_empty());
        assert!(decide_with(&sms, &[(2, "200|150")]).reasons.is_empty());
        assert_eq!(reasons(&decide_with(&sms, &[(2, "|150")])), vec![("SMS_NOT_OPTED_IN", "sms_consent=none opt-out@150")]);
        assert_eq!(reasons(&decide_with(&sms, &[(2, "100")])), vec![("SMS_NOT_OPTED_IN", "sms_consent=none")]);
    }

    #[test]
    fn transactional_email_bypasses_opt_outs_only() {
        let values = [(3, "1"), (4, "1"), (2, "0|5|e1")];
        let transactional = decide_with(&request(Channel::Email, Category::Transactional), &values);
        assert_eq!(transactional.bypassed, vec![Reason::EmailOptOutOrganization, Reason::EmailOptOutUser]);
        assert_eq!(reasons(&transactional), vec![("OK_TO_EMAIL_FALSE", "contact=c1 stamp=5/e1")]);
        let marketing = decide_with(&request(Channel::Email, Category::Marketing), &values);
        assert_eq!(
            reasons(&marketing),
            vec![("EMAIL_OPT_OUT_ORGANIZATION", "opt-out"), ("EMAIL_OPT_OUT_USER", "user=u1"), ("OK_TO_EMAIL_FALSE", "contact=c1 stamp=5/e1")]
        );
    }

    #[test]
    fn unsubscribes_take_the_scope_in_force() {
        let settings = r#"[[100,"s1","ORGANIZATION","ORGANIZATION"]]"#;
        let values = [(6, r#"[["b.com",50],["x.com",150]]"#), (7, settings), (5, "1")];
        let decision = decide_with(&request(Channel::Email, Category::Marketing), &values);
        assert_eq!(
            reasons(&decision),
            vec![
                ("EMAIL_OPT_OUT_ORGANIZATION", "unsubscribe@150 scope=ORGANIZATION"),
                ("EMAIL_OPT_OUT_DOMAIN", "unsubscribe@50 scope=DOMAIN domain=b.com"),
                ("EMAIL_OPT_OUT_USER", "any-user scope=ORGANIZATION"),
            ]
        );
    }

    #[test]
    fn invalid_addresses_name_the_field() {
        let mut email = request(Channel::Email, Category::Marketing);
        email.sender_domain = None;
        assert_eq!(reasons(&decide_with(&email, &[])), vec![("INVALID_ADDRESS", "field=from")]);
        email.to_valid = false;
        assert_eq!(reasons(&decide_with(&email, &[(0, "1")]))[..2], [("INVALID_ADDRESS", "field=to,from"), ("DO_NOT_CONTACT", "contact=c1")]);
        let mut sms = request(Channel::Sms, Category::Marketing);
        sms.to_valid = false;
        assert_eq!(reasons(&decide_with(&sms, &[])), vec![("INVALID_ADDRESS", "field=to")]);
    }
}
