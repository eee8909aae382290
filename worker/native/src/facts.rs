//! Suppression facts: their kinds, where each lives in Redis, and the stored values
//! a decision reads. Mirrors `worker/policy/facts.py` (values) and
//! `worker/state/addressing.py` (keys and fields), which stay the reference.

use blake2b_simd::{Params, State};
use rustc_hash::FxHashMap;
use serde_json::Value;

pub const SUBJECT_DIGEST_BYTES: usize = 12;
pub const QUALIFIER_DIGEST_BYTES: usize = 6;
pub const FIELD_BYTES: usize = SUBJECT_DIGEST_BYTES + 1 + QUALIFIER_DIGEST_BYTES;
const ORG_TAG_BYTES: usize = 5;
const MAX_KEY_BYTES: usize = 64; // BLAKE2b's limit, as hashlib enforces it

/// What a fact says (`FactKind`); the subject group keeps an address and a contact id
/// that happen to be equal strings apart, the tag names the fact inside the subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FactKind {
    EmailOptOutOrganization,
    EmailOptOutDomain,
    EmailOptOutUser,
    EmailOptOutAnyUser,
    EmailUnsubscribes,
    SmsConsent,
    Silenced,
    DoNotContact,
    OkToEmail,
    // Last: FACT_KINDS counts the kinds by it.
    OrgSettings,
}

/// How many [`FactKind`]s there are.
const FACT_KINDS: usize = FactKind::OrgSettings as usize + 1;

impl FactKind {
    fn placement(self) -> (&'static str, u8) {
        match self {
            FactKind::EmailOptOutOrganization => ("email", b'o'),
            FactKind::EmailOptOutDomain => ("email", b'd'),
            FactKind::EmailOptOutUser => ("email", b'u'),
            FactKind::EmailOptOutAnyUser => ("email", b'a'),
            FactKind::EmailUnsubscribes => ("email", b'n'),
            FactKind::SmsConsent => ("phone", b's'),
            FactKind::Silenced => ("contact", b'q'),
            FactKind::DoNotContact => ("contact", b'x'),
            FactKind::OkToEmail => ("contact", b'k'),
            FactKind::OrgSettings => ("org", b'g'),
        }
    }
}

/// Names one fact: organization, kind, subject and (for user and domain opt-outs) a
/// qualifier. Borrowed from the batch's requests: a batch names thousands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FactKey<'a> {
    pub org_id: &'a str,
    pub kind: FactKind,
    pub subject: &'a str,
    pub qualifier: Option<&'a str>,
}

/// Keyed digests naming facts in Redis, so keys and fields hold no personal data.
pub struct Addressing {
    prefix: String,
    buckets: u32,
    shards: u32,
    subject: State,
    qualifier: State,
    org: State,
}

fn keyed(secret: &[u8], size: usize, person: &[u8]) -> State {
    Params::new().hash_length(size).key(secret).personal(person).to_state()
}

impl Addressing {
    pub fn new(secret: &[u8], prefix: &str, buckets: u32, shards: u32) -> Result<Self, String> {
        if secret.len() > MAX_KEY_BYTES {
            return Err(format!("hash secret is {} bytes; BLAKE2b keys are at most {MAX_KEY_BYTES}", secret.len()));
        }
        if buckets == 0 {
            return Err("buckets_per_org must be at least 1".to_owned());
        }
        if shards == 0 {
            return Err("shards must be at least 1".to_owned());
        }
        Ok(Addressing {
            prefix: prefix.to_owned(),
            buckets,
            shards,
            subject: keyed(secret, SUBJECT_DIGEST_BYTES, b"subject"),
            qualifier: keyed(secret, QUALIFIER_DIGEST_BYTES, b"qualifier"),
            org: keyed(secret, ORG_TAG_BYTES, b"org"),
        })
    }

    /// The keyed hash over `org_id \x1f group \x1f`: each subject of that organization
    /// and group goes on from a copy, so the key block is compressed once per batch, not per subject.
    fn subject_prefix(&self, org_id: &str, group: &str) -> State {
        let mut hasher = self.subject.clone();
        hasher.update(org_id.as_bytes()).update(b"\x1f").update(group.as_bytes()).update(b"\x1f");
        hasher
    }

    /// The subject digest and its bucket (`FactAddressing._place`), from its organization and group's prefix.
    fn subject_digest(&self, prefix: &State, value: &str) -> ([u8; SUBJECT_DIGEST_BYTES], u32) {
        let mut hasher = prefix.clone();
        hasher.update(value.as_bytes());
        let mut digest = [0u8; SUBJECT_DIGEST_BYTES];
        digest.copy_from_slice(hasher.finalize().as_bytes());
        let bucket = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % self.buckets;
        (digest, bucket)
    }

    /// `FactAddressing._bucket_key`: the shard's hash tag keeps each shard in one Redis Cluster slot.
    fn bucket_key(&self, org_tag: &str, bucket: u32) -> String {
        // `{prefix}:{{s{shard}}}:{org_tag}:{bucket:x}`, written without the formatting machinery (thousands per batch).
        let mut key = String::with_capacity(self.prefix.len() + org_tag.len() + 24);
        key.push_str(&self.prefix);
        key.push_str(":{s");
        push_digits(&mut key, bucket % self.shards, 10);
        key.push_str("}:");
        key.push_str(org_tag);
        key.push(':');
        push_digits(&mut key, bucket, 16);
        key
    }

    fn org_tag(&self, org_id: &str) -> String {
        let mut org = self.org.clone();
        org.update(org_id.as_bytes());
        org.finalize().to_hex().to_string()
    }

    fn qualified(&self, value: &str) -> [u8; QUALIFIER_DIGEST_BYTES] {
        let mut hasher = self.qualifier.clone();
        hasher.update(value.as_bytes());
        let mut digest = [0u8; QUALIFIER_DIGEST_BYTES];
        digest.copy_from_slice(hasher.finalize().as_bytes());
        digest
    }
}

/// `value` in base `radix` (10 or 16, lower case), as `format!` writes it.
fn push_digits(out: &mut String, mut value: u32, radix: u32) {
    let mut digits = [0u8; 32];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[(value % radix) as usize];
        value /= radix;
        if value == 0 {
            break;
        }
    }
    out.extend(digits[at..].iter().map(|&d| d as char));
}

/// One subject of a batch: organization, subject group and value (an address, a contact id, "").
type SubjectKey<'a> = (&'a str, &'static str, &'a str);

/// A subject's position in its [`FactTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subject(u32);

/// The distinct facts of a batch in first-use order (`dict.fromkeys(keys)`), and their
/// distinct subjects in first-use order: a batch names thousands of facts over fewer
/// subjects, and a subject is hashed (to its digest and Redis hash) once.
#[derive(Default)]
pub struct FactTable<'a> {
    subject_index: FxHashMap<SubjectKey<'a>, Subject>,
    subjects: Vec<SubjectKey<'a>>,
    /// Per subject, the position of each unqualified fact kind about it (`usize::MAX`: none yet).
    plain: Vec<[usize; FACT_KINDS]>,
    qualified: FxHashMap<(Subject, FactKind, &'a str), usize>,
    pub facts: Vec<FactKey<'a>>,
    fact_subjects: Vec<Subject>,
}

impl<'a> FactTable<'a> {
    /// A table sized for about `facts` facts, so a batch's table does not grow as it fills.
    pub fn with_capacity(facts: usize) -> Self {
        FactTable {
            subject_index: FxHashMap::with_capacity_and_hasher(facts / 2, Default::default()),
            subjects: Vec::with_capacity(facts / 2),
            plain: Vec::with_capacity(facts / 2),
            qualified: FxHashMap::with_capacity_and_hasher(facts / 4, Default::default()),
            facts: Vec::with_capacity(facts),
            fact_subjects: Vec::with_capacity(facts),
        }
    }

    /// The subject `value` that `org_id`'s facts of `kind` (and of its subject group) are about, added at the end when new.
    pub fn subject(&mut self, org_id: &'a str, kind: FactKind, value: &'a str) -> Subject {
        let group = kind.placement().0;
        let next = Subject(self.subjects.len() as u32);
        let at = *self.subject_index.entry((org_id, group, value)).or_insert(next);
        if at == next {
            self.subjects.push((org_id, group, value));
            self.plain.push([usize::MAX; FACT_KINDS]);
        }
        at
    }

    /// The position of the `kind` fact (qualified by `qualifier`) about `subject`, added at the end when new.
    pub fn intern_about(&mut self, subject: Subject, kind: FactKind, qualifier: Option<&'a str>) -> usize {
        let (org_id, group, value) = self.subjects[subject.0 as usize];
        debug_assert_eq!(group, kind.placement().0, "a {kind:?} fact is not about a {group} subject");
        let next = self.facts.len();
        // Most facts have no qualifier: a slot per kind finds them without hashing.
        let at = match qualifier {
            None => {
                let slot = &mut self.plain[subject.0 as usize][kind as usize];
                if *slot == usize::MAX {
                    *slot = next;
                }
                *slot
            }
            Some(qualifier) => *self.qualified.entry((subject, kind, qualifier)).or_insert(next),
        };
        if at == next {
            self.facts.push(FactKey { org_id, kind, subject: value, qualifier });
            self.fact_subjects.push(subject);
        }
        at
    }

    /// The position of `key`, added at the end when new.
    pub fn intern(&mut self, key: FactKey<'a>) -> usize {
        let subject = self.subject(key.org_id, key.kind, key.subject);
        self.intern_about(subject, key.kind, key.qualifier)
    }
}

/// The read script's arguments for a batch, and how its reply positions map back.
pub struct Layout {
    /// Redis hash keys in first-use order.
    pub keys: Vec<String>,
    /// Per key, the wanted fields concatenated.
    pub fields: Vec<Vec<u8>>,
    /// Per key, its shard (the `{s<N>}` hash tag it carries).
    pub shards: Vec<u32>,
    /// Per fact (table order), the index of its key and its field, for tests and tools.
    pub located: Vec<(usize, [u8; FIELD_BYTES])>,
    /// Fact position (in the table) of each reply position (from 0).
    pub reply_order: Vec<usize>,
}

/// Groups `table`'s facts by Redis hash (`FactAddressing.group`), hashing each distinct
/// subject, organization and qualifier of the batch once.
pub fn lay_out(addressing: &Addressing, table: &FactTable<'_>) -> Layout {
    let mut prefixes: FxHashMap<(&str, &str), State> = FxHashMap::default();
    let mut orgs: FxHashMap<&str, String> = FxHashMap::default();
    let mut slots: FxHashMap<(&str, u32), usize> = FxHashMap::default();
    let mut keys: Vec<String> = Vec::new();
    let mut shards: Vec<u32> = Vec::new();
    // Subjects in first-use order: their hashes are created in the order the facts first name them.
    let placed: Vec<(usize, [u8; SUBJECT_DIGEST_BYTES])> = table
        .subjects
        .iter()
        .map(|&(org_id, group, value)| {
            let prefix = prefixes.entry((org_id, group)).or_insert_with(|| addressing.subject_prefix(org_id, group));
            let (digest, bucket) = addressing.subject_digest(prefix, value);
            let slot = *slots.entry((org_id, bucket)).or_insert_with(|| {
                let tag = orgs.entry(org_id).or_insert_with(|| addressing.org_tag(org_id));
                keys.push(addressing.bucket_key(tag, bucket));
                shards.push(bucket % addressing.shards);
                keys.len() - 1
            });
            (slot, digest)
        })
        .collect();
    // Each hash's facts in table order, and the reply positions in hash order.
    let mut starts = vec![0usize; keys.len() + 1];
    for subject in &table.fact_subjects {
        starts[placed[subject.0 as usize].0 + 1] += 1;
    }
    for at in 1..starts.len() {
        starts[at] += starts[at - 1];
    }
    let mut fields: Vec<Vec<u8>> = starts.windows(2).map(|w| Vec::with_capacity((w[1] - w[0]) * FIELD_BYTES)).collect();
    let mut reply_order = vec![0usize; table.facts.len()];
    let mut qualifiers: FxHashMap<&str, [u8; QUALIFIER_DIGEST_BYTES]> = FxHashMap::default();
    let mut located = Vec::with_capacity(table.facts.len());
    for (at, (fact, subject)) in table.facts.iter().zip(&table.fact_subjects).enumerate() {
        let (slot, digest) = placed[subject.0 as usize];
        let mut field = [0u8; FIELD_BYTES];
        field[..SUBJECT_DIGEST_BYTES].copy_from_slice(&digest);
        field[SUBJECT_DIGEST_BYTES] = fact.kind.placement().1;
        if let Some(qualifier) = fact.qualifier {
            let digest = qualifiers.entry(qualifier).or_insert_with(|| addressing.qualified(qualifier));
            field[SUBJECT_DIGEST_BYTES + 1..].copy_from_slice(digest);
        }
        fields[slot].extend_from_slice(&field);
        reply_order[starts[slot]] = at;
        starts[slot] += 1;
        located.push((slot, field));
    }
    Layout { keys, fields, shards, located, reply_order }
}

/// A Python `int` written by our encoders: `-?[0-9]+`, answered as `str(int(text))`.
/// Any other text (spaces, `+`, `_`, non-ASCII digits) is `None`: Python decides it.
pub fn canonical_int(text: &str) -> Option<String> {
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text),
    };
    // Python's int() refuses more than 4300 digits (sys.int_info.default_max_str_digits).
    if digits.is_empty() || digits.len() > 4300 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let trimmed = digits.trim_start_matches('0');
    if trimmed.is_empty() {
        return Some("0".to_owned());
    }
    Some(format!("{sign}{trimmed}"))
}

/// How a decision reads an integer inside a stored value: `int()` answers
/// (`Some(text)` for the canonical form, `None` for ValueError).
pub type IntReader<'a> = dyn Fn(&str) -> Option<String> + 'a;

/// `Stamped.decode` for a detail: `"<flag>|<occurred_at>|<event_id>"` (the event id may hold `|`).
pub fn stamp_detail(raw: &str, int: &IntReader<'_>) -> String {
    let mut parts = raw.splitn(3, '|');
    let (Some(_flag), Some(occurred_at), Some(event_id)) = (parts.next(), parts.next(), parts.next()) else {
        return "stamp=?".to_owned();
    };
    match int(occurred_at) {
        Some(at) => format!("stamp={at}/{event_id}"),
        None => "stamp=?".to_owned(),
    }
}

/// The integer texts inside a stored value that `canonical_int` cannot answer.
pub fn unusual_ints(kind: FactKind, raw: &str) -> Vec<&str> {
    let sides: Vec<&str> = match kind {
        FactKind::Silenced | FactKind::OkToEmail => raw.splitn(3, '|').skip(1).take(1).collect(),
        // SmsConsent.decode reads exactly `-?[0-9]+` (no int() leniency): the core answers it alone.
        _ => Vec::new(),
    };
    sides.into_iter().filter(|side| canonical_int(side).is_none()).collect()
}

pub const SMS_OUT: &str = "out";

/// `SmsConsent.decode` for a value that is not `"out"`: the texts of the earliest
/// opt-in and latest opt-out, either absent; an unreadable value holds no consent.
pub struct SmsConsent {
    pub earliest_opt_in: Option<String>,
    pub latest_opt_out: Option<String>,
}

impl SmsConsent {
    pub fn decode(raw: Option<&str>, _int: &IntReader<'_>) -> SmsConsent {
        let none = SmsConsent { earliest_opt_in: None, latest_opt_out: None };
        let Some((opt_in, opt_out)) = raw.unwrap_or("").split_once('|') else {
            return none;
        };
        let side = |text: &str| if text.is_empty() { Ok(None) } else { canonical_int(text).map(Some).ok_or(()) };
        match (side(opt_in), side(opt_out)) {
            (Ok(earliest_opt_in), Ok(latest_opt_out)) => SmsConsent { earliest_opt_in, latest_opt_out },
            _ => none,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsubscribeScope {
    Domain,
    Organization,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserOptOutScope {
    User,
    Organization,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrgSettings {
    pub unsubscribe_scope: UnsubscribeScope,
    pub user_opt_out_scope: UserOptOutScope,
}

const DEFAULT_SETTINGS: OrgSettings =
    OrgSettings { unsubscribe_scope: UnsubscribeScope::Domain, user_opt_out_scope: UserOptOutScope::User };

/// An organization's settings changes ordered by (occurred_at, event_id): `SettingsHistory`.
#[derive(Debug, Default)]
pub struct SettingsHistory {
    changes: Vec<(i64, String, OrgSettings)>,
}

fn json_array(value: &Value, what: &str) -> Result<Vec<Value>, String> {
    match value {
        Value::Array(items) => Ok(items.clone()),
        _ => Err(format!("{what} is not a JSON array")),
    }
}

fn json_long(value: &Value, what: &str) -> Result<i64, String> {
    value.as_i64().ok_or_else(|| format!("{what}: time is not an integer"))
}

fn json_str<'v>(value: &'v Value, what: &str) -> Result<&'v str, String> {
    value.as_str().ok_or_else(|| format!("{what}: expected a string"))
}

impl SettingsHistory {
    /// The stored history; an empty value holds none. Values our encoder never writes are errors, as in Python.
    pub fn decode(raw: &str) -> Result<SettingsHistory, String> {
        if raw.is_empty() {
            return Ok(SettingsHistory::default());
        }
        let what = "ORG_SETTINGS fact";
        let parsed: Value = serde_json::from_str(raw).map_err(|e| format!("{what} is not JSON: {e}"))?;
        let mut changes = Vec::new();
        for item in json_array(&parsed, what)? {
            let fields = json_array(&item, what)?;
            let [at, event_id, unsubscribe, user] = fields.as_slice() else {
                return Err(format!("{what}: a change has {} fields, not 4", fields.len()));
            };
            let unsubscribe_scope = match json_str(unsubscribe, what)? {
                "DOMAIN" => UnsubscribeScope::Domain,
                "ORGANIZATION" => UnsubscribeScope::Organization,
                other => return Err(format!("{what}: {other:?} is not a valid UnsubscribeScope")),
            };
            let user_opt_out_scope = match json_str(user, what)? {
                "USER" => UserOptOutScope::User,
                "ORGANIZATION" => UserOptOutScope::Organization,
                other => return Err(format!("{what}: {other:?} is not a valid UserOptOutScope")),
            };
            changes.push((
                json_long(at, what)?,
                json_str(event_id, what)?.to_owned(),
                OrgSettings { unsubscribe_scope, user_opt_out_scope },
            ));
        }
        // Stable, like Python's sorted(); String order is code-point order, as str's.
        changes.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        Ok(SettingsHistory { changes })
    }

    /// The changes in order, for the applier to add one and write them back.
    pub fn into_changes(self) -> Vec<(i64, String, OrgSettings)> {
        self.changes
    }

    pub fn current(&self) -> OrgSettings {
        self.changes.last().map_or(DEFAULT_SETTINGS, |c| c.2)
    }

    /// The settings in force at `occurred_at` (a change at that very instant counts).
    pub fn at(&self, occurred_at: i64) -> OrgSettings {
        let mut in_force = DEFAULT_SETTINGS;
        for change in &self.changes {
            if change.0 > occurred_at {
                break;
            }
            in_force = change.2;
        }
        in_force
    }
}

/// One recorded `EMAIL_UNSUBSCRIBE`; `domain` is "" when the event named none.
pub struct Unsubscribe {
    pub domain: String,
    pub occurred_at: i64,
}

/// `decode_unsubscribes`: in stored order.
pub fn decode_unsubscribes(raw: &str) -> Result<Vec<Unsubscribe>, String> {
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    let what = "EMAIL_UNSUBSCRIBES fact";
    let parsed: Value = serde_json::from_str(raw).map_err(|e| format!("{what} is not JSON: {e}"))?;
    json_array(&parsed, what)?
        .iter()
        .map(|item| match json_array(item, what)?.as_slice() {
            [domain, at] => Ok(Unsubscribe { domain: json_str(domain, what)?.to_owned(), occurred_at: json_long(at, what)? }),
            other => Err(format!("{what}: an unsubscribe has {} fields, not 2", other.len())),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn python_int(text: &str) -> Option<String> {
        canonical_int(text)
    }

    #[test]
    fn canonical_ints_drop_leading_zeros() {
        assert_eq!(canonical_int("007").as_deref(), Some("7"));
        assert_eq!(canonical_int("-0").as_deref(), Some("0"));
        assert_eq!(canonical_int("-12").as_deref(), Some("-12"));
        assert_eq!(canonical_int("+1"), None);
        assert_eq!(canonical_int(" 1"), None);
        assert_eq!(canonical_int(""), None);
    }

    #[test]
    fn stamps_and_consent_decode_like_python() {
        assert_eq!(stamp_detail("1|100|e|x", &python_int), "stamp=100/e|x");
        assert_eq!(stamp_detail("1|100", &python_int), "stamp=?");
        assert_eq!(stamp_detail("1|x|e", &python_int), "stamp=?");
        let consent = SmsConsent::decode(Some("|150"), &python_int);
        assert_eq!((consent.earliest_opt_in, consent.latest_opt_out.as_deref()), (None, Some("150")));
        let consent = SmsConsent::decode(Some("100|x"), &python_int);
        assert!(consent.earliest_opt_in.is_none() && consent.latest_opt_out.is_none());
        assert!(SmsConsent::decode(Some("100"), &python_int).earliest_opt_in.is_none());
        // SmsConsent.decode reads only `-?[0-9]+`: " 1" holds no consent, and Python is not asked.
        assert!(SmsConsent::decode(Some(" 1|2"), &python_int).earliest_opt_in.is_none());
        assert!(unusual_ints(FactKind::SmsConsent, " 1|2").is_empty());
        assert_eq!(unusual_ints(FactKind::Silenced, "1|+5|e"), vec!["+5"]);
    }

    #[test]
    fn settings_history_is_ordered_by_time_then_event() {
        let history = SettingsHistory::decode(r#"[[20,"b","ORGANIZATION","USER"],[10,"a","DOMAIN","ORGANIZATION"]]"#).unwrap();
        assert_eq!(history.at(5), DEFAULT_SETTINGS);
        assert_eq!(history.at(10).user_opt_out_scope, UserOptOutScope::Organization);
        assert_eq!(history.at(25).unsubscribe_scope, UnsubscribeScope::Organization);
        assert_eq!(history.current().unsubscribe_scope, UnsubscribeScope::Organization);
        assert!(SettingsHistory::decode("[[1]]").is_err());
        assert!(SettingsHistory::decode(r#"[[1,"e","SOMETIMES","USER"]]"#).is_err());
    }

    #[test]
    fn the_table_dedupes_and_the_layout_groups_by_hash() {
        let addressing = Addressing::new(b"secret", "sg", 4, 2).unwrap();
        let mut table = FactTable::default();
        let key = |kind, subject, qualifier| FactKey { org_id: "o", kind, subject, qualifier };
        let a = table.intern(key(FactKind::EmailOptOutOrganization, "a@b.c", None));
        let b = table.intern(key(FactKind::EmailOptOutUser, "a@b.c", Some("u")));
        assert_eq!(table.intern(key(FactKind::EmailOptOutOrganization, "a@b.c", None)), a);
        let layout = lay_out(&addressing, &table);
        assert_eq!(layout.keys.len(), 1);
        assert_eq!(layout.fields[0].len(), 2 * FIELD_BYTES);
        assert_eq!(layout.reply_order, vec![a, b]);
        assert!(layout.keys[0].starts_with("sg:{s"));
        assert_eq!(&layout.located[a].1[SUBJECT_DIGEST_BYTES + 1..], &[0u8; QUALIFIER_DIGEST_BYTES]);
    }
}
