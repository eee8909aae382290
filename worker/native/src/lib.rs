//! sendgate's compiled core, `worker._native`: the gate's per-record work for a whole
//! consumed batch at a time.
//!
//! Python keeps the loops, Kafka and Redis. It hands [`GateCore::prepare`] the values of
//! one `consume()` batch and gets the read script's arguments back; it hands the
//! script's reply to [`PreparedBatch::decide`] and gets, per record, where it goes and
//! with which bytes, plus the batch's tallies. The core is pure: no I/O, no clock, no
//! environment (time and settings are arguments), with one exception: on a standalone
//! Redis, [`PreparedBatch::read_state`] does the batch's state read on the socket redis-py
//! opened (`multi_read`), so no GIL is taken between sending it and having the answer.
//! The GIL is released while it works.
//!
//! Where the core is not sure to answer like the Python reference (a value of another
//! writer schema or an unusual encoding, an address email-validator or phonenumbers must
//! judge, an integer written oddly inside a stored fact) it asks the `fallback` object,
//! i.e. the Python reference decides that one thing.
//!
//! The preference applier's counterpart is [`applier::ApplierCore`]: plan a batch of
//! `PreferenceEvent` values, then apply the rules on the state read (`rules`, `events`).

mod address;
mod applier;
mod avro;
mod decide;
mod events;
mod facts;
mod multi_read;
mod rules;
mod suppressed;

use std::borrow::Cow;
use std::collections::HashMap;

use pyo3::exceptions::{PyConnectionError, PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use address::Normalised;
use decide::{Category, Channel, Decision, FactSlots, Facts, Prepared, Reason};
use facts::{canonical_int, lay_out, unusual_ints, Addressing, FactKind, FactTable, Layout};
use suppressed::{SuppressedWriter, STATE_DETAIL};

/// A request's leading fields: borrowed from the value, or owned when Python decoded it.
struct Head<'a> {
    org_id: Cow<'a, str>,
    user_id: Cow<'a, str>,
    contact_id: Cow<'a, str>,
    channel: Channel,
    category: Category,
    to: Cow<'a, str>,
    from: Cow<'a, str>,
    requested_at: i64,
    /// Written with our own SendRequest schema and read by the core: a SuppressedSend embeds its body.
    ours: bool,
}

/// A decoded request whose addresses are being normalised.
struct Pending<'a> {
    index: usize,
    head: Head<'a>,
    to: Normalised,
    /// EMAIL only (SMS `from` may be a short code and is not validated).
    sender: Normalised,
}

/// One record of a prepared batch, as its decision needs it.
struct Record {
    index: usize,
    prepared: Prepared,
    to: Option<String>,
    requested_at: i64,
    ours: bool,
}

fn normalise(head: &Head<'_>) -> (Normalised, Normalised) {
    match head.channel {
        Channel::Email => (address::email(&head.to), address::email(&head.from)),
        Channel::Sms => (address::phone(&head.to), Normalised::Invalid),
    }
}

fn value_error(message: String) -> PyErr {
    PyValueError::new_err(message)
}

/// The gate's per-record core, built once from settings.
#[pyclass(frozen, module = "worker._native")]
pub struct GateCore {
    addressing: Addressing,
    send_schema_id: u32,
    writer: SuppressedWriter,
    policy_version: String,
    gate_instance: String,
    latency_bounds: Vec<f64>,
    fallback: Py<PyAny>,
    release_gil: bool,
}

#[pymethods]
impl GateCore {
    #[new]
    #[pyo3(signature = (*, hash_secret, key_prefix, buckets_per_org, shards, policy_version, gate_instance,
                        send_schema_id, suppressed_schema_id, reason_symbols, latency_bounds, fallback,
                        release_gil = true))]
    #[allow(clippy::too_many_arguments)] // keyword-only settings, one per field
    fn new(
        hash_secret: &str,
        key_prefix: &str,
        buckets_per_org: u32,
        shards: u32,
        policy_version: &str,
        gate_instance: &str,
        send_schema_id: u32,
        suppressed_schema_id: u32,
        reason_symbols: Vec<String>,
        latency_bounds: Vec<f64>,
        fallback: Py<PyAny>,
        release_gil: bool,
    ) -> PyResult<Self> {
        Ok(GateCore {
            addressing: Addressing::new(hash_secret.as_bytes(), key_prefix, buckets_per_org, shards).map_err(value_error)?,
            send_schema_id,
            writer: SuppressedWriter::new(suppressed_schema_id, &reason_symbols, policy_version, gate_instance)
                .map_err(value_error)?,
            policy_version: policy_version.to_owned(),
            gate_instance: gate_instance.to_owned(),
            latency_bounds,
            fallback,
            release_gil,
        })
    }

    /// Decode, validate and normalise the values of one consumed batch and name their facts.
    fn prepare(slf: &Bound<'_, Self>, values: &Bound<'_, PyList>) -> PyResult<PreparedBatch> {
        let py = slf.py();
        let core = slf.get();
        let items: Vec<Bound<'_, PyAny>> = values.iter().collect();
        // Only exact bytes take the core's path; anything else is for the codec to judge.
        let raw: Vec<Option<&[u8]>> = items.iter().map(|v| v.cast_exact::<PyBytes>().ok().map(|b| b.as_bytes())).collect();

        // The common batch (every value ours, every address plain) is done in one go without the GIL.
        let (mut pending, undecoded, named) = core.without_gil(py, || {
            let (pending, undecoded) = core.read_heads(&raw);
            let plain = undecoded.is_empty() && pending.iter().all(|p| p.to != Normalised::Unsure && p.sender != Normalised::Unsure);
            let named = plain.then(|| core.name_facts(&pending));
            (pending, undecoded, named)
        });
        if let Some((records, kinds, layout)) = named {
            return Ok(core.batch(slf, values, records, kinds, layout, Vec::new()));
        }
        let mut poison: Vec<(usize, String, String)> = Vec::new();
        let fallback = core.fallback.bind(py);
        let mut owned: Vec<Pending<'_>> = Vec::new();
        for index in undecoded {
            let answer = fallback.call_method1("decode_head", (&items[index],))?;
            let fields = answer.cast::<PyTuple>()?;
            if fields.len() == 2 {
                poison.push((index, fields.get_item(0)?.extract()?, fields.get_item(1)?.extract()?));
                continue;
            }
            let text = |at: usize| -> PyResult<Cow<'static, str>> { Ok(Cow::Owned(fields.get_item(at)?.extract::<String>()?)) };
            let channel: String = fields.get_item(4)?.extract()?;
            let category: String = fields.get_item(5)?.extract()?;
            let head = Head {
                org_id: text(1)?,
                user_id: text(2)?,
                contact_id: text(3)?,
                channel: Channel::parse(&channel).ok_or_else(|| value_error(format!("unknown channel {channel:?}")))?,
                category: Category::parse(&category).ok_or_else(|| value_error(format!("unknown category {category:?}")))?,
                to: text(6)?,
                from: text(7)?,
                requested_at: fields.get_item(8)?.extract()?,
                ours: false,
            };
            let (to, sender) = normalise(&head);
            owned.push(Pending { index, head, to, sender });
        }
        pending.extend(owned);
        pending.sort_by_key(|p| p.index);
        // email-validator and phonenumbers judge what the core is not sure of.
        for p in pending.iter_mut() {
            let method = match p.head.channel {
                Channel::Email => "normalize_email",
                Channel::Sms => "normalize_phone",
            };
            if p.to == Normalised::Unsure {
                p.to = ask(fallback, method, &p.head.to)?;
            }
            if p.head.channel == Channel::Email && p.sender == Normalised::Unsure {
                p.sender = ask(fallback, method, &p.head.from)?;
            }
        }
        let (records, kinds, layout) = core.without_gil(py, || core.name_facts(&pending));
        poison.sort();
        Ok(core.batch(slf, values, records, kinds, layout, poison))
    }
}

fn ask(fallback: &Bound<'_, PyAny>, method: &str, raw: &str) -> PyResult<Normalised> {
    let answer: Option<String> = fallback.call_method1(method, (raw,))?.extract()?;
    Ok(answer.map_or(Normalised::Invalid, Normalised::Valid))
}

impl GateCore {
    /// Runs `work` with the GIL released (unless the core was built to keep it).
    fn without_gil<T: Send>(&self, py: Python<'_>, work: impl FnOnce() -> T + Send) -> T {
        if self.release_gil {
            py.detach(work)
        } else {
            work()
        }
    }

    fn batch(
        &self,
        slf: &Bound<'_, Self>,
        values: &Bound<'_, PyList>,
        records: Vec<Record>,
        kinds: Vec<FactKind>,
        layout: Layout,
        poison: Vec<(usize, String, String)>,
    ) -> PreparedBatch {
        PreparedBatch { core: slf.clone().unbind(), values: values.clone().unbind(), kinds, records, layout, poison }
    }

    /// Heads of the values the core can read; the indexes of the others.
    fn read_heads<'a>(&self, raw: &[Option<&'a [u8]>]) -> (Vec<Pending<'a>>, Vec<usize>) {
        let mut pending = Vec::with_capacity(raw.len());
        let mut undecoded = Vec::new();
        for (index, value) in raw.iter().enumerate() {
            let head = value
                .filter(|v| avro::schema_id(v) == Some(self.send_schema_id))
                .and_then(|v| avro::read_send_head(&v[avro::HEADER_SIZE..]));
            let Some(h) = head else {
                undecoded.push(index);
                continue;
            };
            let head = Head {
                org_id: Cow::Borrowed(h.org_id),
                user_id: Cow::Borrowed(h.user_id),
                contact_id: Cow::Borrowed(h.contact_id),
                channel: h.channel,
                category: h.category,
                to: Cow::Borrowed(h.to),
                from: Cow::Borrowed(h.from),
                requested_at: h.requested_at,
                ours: true,
            };
            let (to, sender) = normalise(&head);
            pending.push(Pending { index, head, to, sender });
        }
        (pending, undecoded)
    }

    /// `DecisionPolicy.prepare` for every record, then the batch's facts laid out for the read script.
    fn name_facts(&self, pending: &[Pending<'_>]) -> (Vec<Record>, Vec<FactKind>, Layout) {
        // An email request names up to nine facts about three subjects, an SMS request three about two.
        let mut table = FactTable::with_capacity(pending.len() * 8);
        let mut records = Vec::with_capacity(pending.len());
        for p in pending {
            let head = &p.head;
            let org = head.org_id.as_ref();
            let to = match &p.to {
                Normalised::Valid(to) => Some(to.as_str()),
                _ => None,
            };
            let sender_domain = match (&p.sender, head.channel) {
                (Normalised::Valid(sender), Channel::Email) => Some(address::email_domain(sender)),
                _ => None,
            };
            let contact_id = head.contact_id.as_ref();
            // Contact facts come first so they are there even when `to` is invalid.
            let contact = table.subject(org, FactKind::DoNotContact, contact_id);
            let mut slots = FactSlots {
                do_not_contact: Some(table.intern_about(contact, FactKind::DoNotContact, None)),
                silenced: Some(table.intern_about(contact, FactKind::Silenced, None)),
                ..FactSlots::default()
            };
            match head.channel {
                Channel::Email => {
                    slots.ok_to_email = Some(table.intern_about(contact, FactKind::OkToEmail, None));
                    if let Some(to) = to {
                        let email = table.subject(org, FactKind::EmailOptOutOrganization, to);
                        slots.org_opt_out = Some(table.intern_about(email, FactKind::EmailOptOutOrganization, None));
                        slots.user_opt_out = Some(table.intern_about(email, FactKind::EmailOptOutUser, Some(head.user_id.as_ref())));
                        slots.any_user_opt_out = Some(table.intern_about(email, FactKind::EmailOptOutAnyUser, None));
                        slots.unsubscribes = Some(table.intern_about(email, FactKind::EmailUnsubscribes, None));
                        let organization = table.subject(org, FactKind::OrgSettings, "");
                        slots.settings = Some(table.intern_about(organization, FactKind::OrgSettings, None));
                        if let Some(domain) = sender_domain {
                            slots.domain_opt_out = Some(table.intern_about(email, FactKind::EmailOptOutDomain, Some(domain)));
                        }
                    }
                }
                Channel::Sms => {
                    if let Some(to) = to {
                        let phone = table.subject(org, FactKind::SmsConsent, to);
                        slots.sms_consent = Some(table.intern_about(phone, FactKind::SmsConsent, None));
                    }
                }
            }
            records.push(Record {
                index: p.index,
                prepared: Prepared {
                    channel: head.channel,
                    category: head.category,
                    user_id: head.user_id.to_string(),
                    contact_id: contact_id.to_owned(),
                    to_valid: to.is_some(),
                    sender_domain: sender_domain.map(str::to_owned),
                    slots,
                },
                to: to.map(str::to_owned),
                requested_at: head.requested_at,
                ours: head.ours,
            });
        }
        let layout = lay_out(&self.addressing, &table);
        (records, table.facts.iter().map(|f| f.kind).collect(), layout)
    }
}

/// The facts in the order `DecisionPolicy.prepare` lists them in `PreparedRequest.keys`.
fn in_key_order(slots: &FactSlots) -> Vec<usize> {
    [
        slots.do_not_contact,
        slots.silenced,
        slots.ok_to_email,
        slots.org_opt_out,
        slots.user_opt_out,
        slots.any_user_opt_out,
        slots.unsubscribes,
        slots.settings,
        slots.domain_opt_out,
        slots.sms_consent,
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Where a decided record goes.
enum Route {
    Allowed,
    Bypassed(String),
    Suppressed(Vec<u8>),
    /// Suppressed, but another writer's request: the Python codec encodes the SuppressedSend.
    SuppressedByPython,
}

/// A consumed batch, prepared: the read script's arguments and what deciding needs.
#[pyclass(frozen, module = "worker._native")]
pub struct PreparedBatch {
    core: Py<GateCore>,
    values: Py<PyList>,
    kinds: Vec<FactKind>,
    records: Vec<Record>,
    layout: Layout,
    poison: Vec<(usize, String, String)>,
}

#[pymethods]
impl PreparedBatch {
    /// The Redis hash keys to read, in the read script's order.
    #[getter]
    fn keys<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, &self.layout.keys)
    }

    /// Per key, the wanted hash fields concatenated.
    #[getter]
    fn fields<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.layout.fields.iter().map(|f| PyBytes::new(py, f)))
    }

    /// Read the batch's state on a standalone Redis, through the connected socket `fd`,
    /// without the GIL: see [`read_facts`], which reads any keys and fields the same way.
    #[pyo3(signature = (fd, meta_keys, timeout_seconds))]
    fn read_state<'py>(&self, py: Python<'py>, fd: i32, meta_keys: Vec<String>, timeout_seconds: Option<f64>) -> PyResult<StateAnswer<'py>> {
        read_on_socket(py, &self.layout, fd, &meta_keys, timeout_seconds)
    }

    /// How many distinct facts the read asks for.
    #[getter]
    fn fact_count(&self) -> usize {
        self.kinds.len()
    }

    /// How many records are to be decided (the batch less its poison).
    #[getter]
    fn size(&self) -> usize {
        self.records.len()
    }

    /// `(index, error_class, detail)` of every value that cannot be decoded.
    #[getter]
    fn poison<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, &self.poison)
    }

    /// Per record: `(index, to, sender_domain, [(key, field), ...])`, the facts in
    /// `PreparedRequest.keys` order. For tests and tools; the gate does not call it.
    fn describe<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let rows = self.records.iter().map(|r| -> PyResult<Bound<'py, PyTuple>> {
            let located = in_key_order(&r.prepared.slots).into_iter().map(|at| {
                let (slot, field) = &self.layout.located[at];
                (self.layout.keys[*slot].clone(), PyBytes::new(py, field))
            });
            (r.index, r.to.clone(), r.prepared.sender_domain.clone(), PyList::new(py, located)?).into_pyobject(py)
        });
        PyList::new(py, rows.collect::<PyResult<Vec<_>>>()?)
    }

    /// Decide every record on the read script's reply.
    ///
    /// `found` is the reply after its first two items: (position, value) pairs of the
    /// facts present. `now_ms` is the decision time, `state` the store status text.
    fn decide(&self, py: Python<'_>, found: &Bound<'_, PyList>, now_ms: i64, state: &str) -> PyResult<Outcome> {
        let core = self.core.get();
        let values = self.fact_values(found)?;
        let fallback = core.fallback.bind(py);
        // Integers our encoders would not write are read by Python's int().
        let mut unusual: HashMap<String, Option<String>> = HashMap::new();
        for (kind, value) in self.kinds.iter().zip(&values) {
            for text in value.as_deref().map(|v| unusual_ints(*kind, v)).unwrap_or_default() {
                if !unusual.contains_key(text) {
                    let answer: Option<String> = fallback.call_method1("int_text", (text,))?.extract()?;
                    unusual.insert(text.to_owned(), answer);
                }
            }
        }
        let list = self.values.bind(py);
        let items: Vec<Bound<'_, PyAny>> = self.records.iter().map(|r| list.get_item(r.index)).collect::<PyResult<_>>()?;
        let bodies: Vec<Option<&[u8]>> = self
            .records
            .iter()
            .zip(&items)
            .map(|(r, item)| r.ours.then(|| item.cast_exact::<PyBytes>().ok().map(|b| &b.as_bytes()[avro::HEADER_SIZE..])).flatten())
            .collect();
        let decided = core.without_gil(py, || self.decide_all(core, &values, &unusual, &bodies, now_ms, state)).map_err(value_error)?;
        self.outcome(py, core, decided, &items, now_ms, state)
    }
}

/// What `decide_all` found, before it becomes Python objects.
struct Decided {
    verdicts: Vec<(usize, Decision, Route)>,
    decisions: HashMap<(Channel, Category, Option<Reason>), u64>,
    reasons: HashMap<(Channel, Category, Reason), u64>,
    bypasses: HashMap<Reason, u64>,
    latencies: Vec<f64>,
}

impl PreparedBatch {
    fn fact_values(&self, found: &Bound<'_, PyList>) -> PyResult<Vec<Option<String>>> {
        read_reply_values(found, &self.layout.reply_order, self.kinds.len())
    }

    fn decide_all(
        &self,
        core: &GateCore,
        values: &[Option<String>],
        unusual: &HashMap<String, Option<String>>,
        bodies: &[Option<&[u8]>],
        now_ms: i64,
        state: &str,
    ) -> Result<Decided, String> {
        let int = |text: &str| canonical_int(text).or_else(|| unusual.get(text).cloned().flatten());
        let facts = Facts { values, int: &int };
        let mut out = Decided {
            verdicts: Vec::with_capacity(self.records.len()),
            decisions: HashMap::new(),
            reasons: HashMap::new(),
            bypasses: HashMap::new(),
            latencies: Vec::with_capacity(self.records.len()),
        };
        for (record, body) in self.records.iter().zip(bodies) {
            let decision = decide::decide(&record.prepared, &facts)?;
            let (channel, category) = (record.prepared.channel, record.prepared.category);
            let route = if decision.reasons.is_empty() {
                *out.decisions.entry((channel, category, None)).or_default() += 1;
                for reason in &decision.bypassed {
                    *out.bypasses.entry(*reason).or_default() += 1;
                }
                if decision.bypassed.is_empty() {
                    Route::Allowed
                } else {
                    Route::Bypassed(decision.bypassed.iter().map(|r| r.name()).collect::<Vec<_>>().join(","))
                }
            } else {
                *out.decisions.entry((channel, category, Some(decision.reasons[0].0))).or_default() += 1;
                for (reason, _) in &decision.reasons {
                    *out.reasons.entry((channel, category, *reason)).or_default() += 1;
                }
                match body {
                    Some(body) => Route::Suppressed(core.writer.encode(body, &decision.reasons, now_ms, state)),
                    None => Route::SuppressedByPython,
                }
            };
            out.latencies.push(((now_ms - record.requested_at) as f64 / 1000.0).max(0.0));
            out.verdicts.push((record.index, decision, route));
        }
        Ok(out)
    }

    fn outcome(
        &self,
        py: Python<'_>,
        core: &GateCore,
        decided: Decided,
        items: &[Bound<'_, PyAny>],
        now_ms: i64,
        state: &str,
    ) -> PyResult<Outcome> {
        let fallback = core.fallback.bind(py);
        let allowed = PyList::empty(py);
        let bypassed = PyList::empty(py);
        let suppressed = PyList::empty(py);
        let poison = PyList::empty(py);
        let mut latencies = Vec::with_capacity(decided.latencies.len());
        let mut verdicts = Vec::with_capacity(decided.verdicts.len());
        for ((index, decision, route), (item, latency)) in decided.verdicts.into_iter().zip(items.iter().zip(decided.latencies)) {
            match route {
                Route::Allowed => allowed.append(index)?,
                Route::Bypassed(names) => bypassed.append((index, names))?,
                Route::Suppressed(value) => suppressed.append((index, PyBytes::new(py, &value), decision.reasons[0].0.name()))?,
                Route::SuppressedByPython => {
                    let fields = PyDict::new(py);
                    fields.set_item("reasons", decision.reasons.iter().map(|(r, _)| r.name()).collect::<Vec<_>>())?;
                    fields.set_item("primary_reason", decision.reasons[0].0.name())?;
                    let details = PyDict::new(py);
                    for (reason, detail) in &decision.reasons {
                        details.set_item(reason.name(), detail)?;
                    }
                    details.set_item(STATE_DETAIL, state)?;
                    fields.set_item("details", details)?;
                    fields.set_item("decided_at", now_ms)?;
                    fields.set_item("policy_version", &core.policy_version)?;
                    fields.set_item("gate_instance", &core.gate_instance)?;
                    let answer = fallback.call_method1("encode_suppressed", (item, fields))?;
                    if let Ok(error) = answer.cast::<PyTuple>() {
                        // The codec could not read the request after all: dead-letter it.
                        poison.append((index, error.get_item(0)?, error.get_item(1)?))?;
                        continue;
                    }
                    suppressed.append((index, answer, decision.reasons[0].0.name()))?;
                }
            }
            latencies.push(latency);
            verdicts.push((index, decision));
        }
        let decisions = PyDict::new(py);
        for ((channel, category, reason), n) in &decided.decisions {
            let (decision, reason) = match reason {
                None => ("allowed", "NONE"),
                Some(r) => ("suppressed", r.name()),
            };
            decisions.set_item((channel.name(), category.name(), decision, reason), n)?;
        }
        let reasons = PyDict::new(py);
        for ((channel, category, reason), n) in &decided.reasons {
            reasons.set_item((channel.name(), category.name(), reason.name()), n)?;
        }
        let bypasses = PyDict::new(py);
        for (reason, n) in &decided.bypasses {
            bypasses.set_item(reason.name(), n)?;
        }
        let bounds = &core.latency_bounds;
        let mut buckets = vec![0u64; bounds.len()];
        for latency in &latencies {
            // bisect_left: the first bound at or above the latency (the last is +Inf).
            let at = bounds.partition_point(|b| b < latency).min(bounds.len().saturating_sub(1));
            if let Some(count) = buckets.get_mut(at) {
                *count += 1;
            }
        }
        Ok(Outcome {
            allowed: allowed.unbind(),
            bypassed: bypassed.unbind(),
            suppressed: suppressed.unbind(),
            poison: poison.unbind(),
            decisions: decisions.unbind(),
            reasons: reasons.unbind(),
            bypasses: bypasses.unbind(),
            latency_buckets: buckets,
            latency_sum: latencies.iter().sum(),
            latencies,
            verdicts,
        })
    }
}

/// A decided batch: where each record goes, and the batch's tallies for the metrics.
#[pyclass(frozen, module = "worker._native")]
pub struct Outcome {
    /// Indexes of records allowed with the plain headers.
    #[pyo3(get)]
    allowed: Py<PyList>,
    /// `(index, "REASON,REASON")`: allowed transactional email whose opt-outs were bypassed.
    #[pyo3(get)]
    bypassed: Py<PyList>,
    /// `(index, SuppressedSend value, primary reason)`.
    #[pyo3(get)]
    suppressed: Py<PyList>,
    /// `(index, error_class, detail)` of records whose SuppressedSend could not be encoded.
    #[pyo3(get)]
    poison: Py<PyList>,
    /// `(channel, category, "allowed" | "suppressed", primary reason or "NONE") -> count`.
    #[pyo3(get)]
    decisions: Py<PyDict>,
    /// `(channel, category, reason) -> count`, every reason of every suppressed record.
    #[pyo3(get)]
    reasons: Py<PyDict>,
    /// `reason -> count` of bypassed opt-outs.
    #[pyo3(get)]
    bypasses: Py<PyDict>,
    /// Decision latencies counted per bucket of the bounds given to the core.
    #[pyo3(get)]
    latency_buckets: Vec<u64>,
    /// Sum of the decision latencies, seconds.
    #[pyo3(get)]
    latency_sum: f64,
    latencies: Vec<f64>,
    verdicts: Vec<(usize, Decision)>,
}

#[pymethods]
impl Outcome {
    /// Every decided record's latency in seconds (requested_at to now), in record order.
    fn latencies(&self) -> Vec<f64> {
        self.latencies.clone()
    }

    /// Per decided record `(index, reasons, details, bypassed)`, as `Decision` holds them. For tests and tools.
    fn verdicts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let rows = self.verdicts.iter().map(|(index, decision)| -> PyResult<Bound<'py, PyTuple>> {
            let reasons: Vec<&str> = decision.reasons.iter().map(|(r, _)| r.name()).collect();
            let details = PyDict::new(py);
            for (reason, detail) in &decision.reasons {
                details.set_item(reason.name(), detail)?;
            }
            let bypassed: Vec<&str> = decision.bypassed.iter().map(|r| r.name()).collect();
            (index, reasons, details, bypassed).into_pyobject(py)
        });
        PyList::new(py, rows.collect::<PyResult<Vec<_>>>()?)
    }
}

/// `(shards, metas, found)`: see [`read_facts`].
type StateAnswer<'py> = (Vec<u32>, Bound<'py, PyList>, Bound<'py, PyList>);

/// Read `keys` (each one's wanted `fields` concatenated, its shard in `shards`) on a
/// standalone Redis through the connected socket `fd`, without the GIL: one `MULTI`,
/// per shard (ascending) `HGETALL` of its meta key and an `HMGET` of each of its hashes,
/// `EXEC` (see `multi_read`). Answers `(shards, metas, found)`: the shards read, each
/// one's meta hash as a flat name/value list, and the facts present as the flat
/// `[position, value, ...]` the read script answers (`RedisStateStore.read_scripted`).
/// Raises ConnectionError, TimeoutError or ValueError (an unexpected or error reply);
/// the socket is then unusable.
#[pyfunction]
#[pyo3(signature = (fd, keys, fields, shards, meta_keys, timeout_seconds))]
fn read_facts<'py>(
    py: Python<'py>,
    fd: i32,
    keys: Vec<String>,
    fields: Vec<Bound<'py, PyBytes>>,
    shards: Vec<u32>,
    meta_keys: Vec<String>,
    timeout_seconds: Option<f64>,
) -> PyResult<StateAnswer<'py>> {
    if keys.len() != fields.len() || keys.len() != shards.len() {
        return Err(value_error(format!("{} keys, {} field lists and {} shards: one of each per key", keys.len(), fields.len(), shards.len())));
    }
    let fields = fields.iter().map(|f| f.as_bytes().to_vec()).collect();
    let layout = Layout { keys, fields, shards, located: Vec::new(), reply_order: Vec::new() };
    read_on_socket(py, &layout, fd, &meta_keys, timeout_seconds)
}

fn read_on_socket<'py>(py: Python<'py>, layout: &Layout, fd: i32, meta_keys: &[String], timeout_seconds: Option<f64>) -> PyResult<StateAnswer<'py>> {
    let timeout = match timeout_seconds {
        Some(seconds) if !(seconds.is_finite() && seconds > 0.0) => {
            return Err(value_error(format!("timeout_seconds must be a positive number of seconds, not {seconds}")))
        }
        other => other.map(std::time::Duration::from_secs_f64),
    };
    let read = multi_read::multi_read(layout, meta_keys).map_err(value_error)?;
    let answer = py.detach(|| read.exchange(fd, timeout)).map_err(|error| match error {
        multi_read::ReadError::Io(_) => PyConnectionError::new_err(error.to_string()),
        multi_read::ReadError::Timeout(_) => PyTimeoutError::new_err(error.to_string()),
        multi_read::ReadError::Reply(_) => value_error(error.to_string()),
    })?;
    let metas = answer.metas.iter().map(|flat| PyList::new(py, flat.iter().map(|item| PyBytes::new(py, item))));
    let metas = PyList::new(py, metas.collect::<PyResult<Vec<_>>>()?)?;
    let found = PyList::empty(py);
    for (position, value) in &answer.found {
        found.append(position)?;
        found.append(PyBytes::new(py, value))?;
    }
    Ok((read.shards, metas, found))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("FIELD_BYTES", facts::FIELD_BYTES)?;
    m.add_class::<GateCore>()?;
    m.add_class::<PreparedBatch>()?;
    m.add_class::<Outcome>()?;
    m.add_class::<applier::ApplierCore>()?;
    m.add_class::<applier::PlannedEvents>()?;
    m.add_class::<applier::AppliedEvents>()?;
    m.add_function(wrap_pyfunction!(read_facts, m)?)?;
    Ok(())
}

/// The read script's reply, `(1-based position in the read order, value)` pairs, as one value
/// (or none) per fact of the batch; shared by the gate's and the applier's batches.
pub(crate) fn read_reply_values(found: &Bound<'_, PyList>, reply_order: &[usize], facts: usize) -> PyResult<Vec<Option<String>>> {
    let mut values: Vec<Option<String>> = vec![None; facts];
    if found.len() % 2 != 0 {
        return Err(value_error("read reply: (position, value) pairs expected".to_owned()));
    }
    for at in (0..found.len()).step_by(2) {
        let position: usize = found.get_item(at)?.extract()?;
        let raw = found.get_item(at + 1)?;
        let bytes = raw.cast::<PyBytes>()?.as_bytes();
        let fact = position
            .checked_sub(1)
            .and_then(|p| reply_order.get(p))
            .ok_or_else(|| value_error(format!("read reply: position {position} is not a fact of this batch")))?;
        let text = std::str::from_utf8(bytes).map_err(|e| value_error(format!("read reply: fact value is not UTF-8: {e}")))?;
        values[*fact] = Some(text.to_owned());
    }
    Ok(values)
}
