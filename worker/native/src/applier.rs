//! The preference applier's per-event work for a whole consumed batch: decode, validate,
//! normalise, name and lay out the facts ([`ApplierCore::plan`]), then apply the rules on
//! the state read and pack the writes for the commit script ([`PlannedEvents::apply`]).
//!
//! What the core is not sure to answer like the Python reference (a value of another
//! writer schema or an unusual encoding, an address only email-validator or phonenumbers
//! can judge, an integer written oddly inside a stored fact) it asks `fallback`.

use std::borrow::Cow;
use std::collections::HashMap;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use crate::address::{self, Normalised};
use crate::avro;
use crate::events::{read_event, Event, EventType, Source};
use crate::facts::{canonical_int, lay_out, unusual_ints, Addressing, FactKey, FactKind, FactTable, Layout, OrgSettings, UnsubscribeScope, UserOptOutScope};
use crate::rules::{self, Addresses, Rejection, Step, View, Wants};

fn value_error(message: String) -> PyErr {
    PyValueError::new_err(message)
}

/// A decoded event on its way to a plan.
struct Pending<'a> {
    index: usize,
    event: Event<'a>,
    checked: Result<Wants, Rejection>,
    addresses: Addresses,
}

impl<'a> Pending<'a> {
    fn new(index: usize, event: Event<'a>) -> Pending<'a> {
        let checked = rules::check(&event);
        let mut addresses = Addresses::default();
        if let Ok(wants) = &checked {
            let text = |v: &Option<Cow<'_, str>>| v.as_deref().unwrap_or_default().to_owned();
            if wants.email {
                addresses.email = Some(address::email(&text(&event.email)));
            }
            if wants.phone {
                addresses.phone = Some(address::phone(&text(&event.phone)));
            }
            if wants.domain {
                addresses.domain = Some(address::domain(&text(&event.domain)));
            }
        }
        Pending { index, event, checked, addresses }
    }

    fn unsure(&self) -> bool {
        [&self.addresses.email, &self.addresses.phone, &self.addresses.domain].iter().any(|a| matches!(a, Some(Normalised::Unsure)))
    }
}

/// One event of a planned batch: valid (its step) or already rejected.
struct Planned {
    index: usize,
    kind: EventType,
    step: Result<Step, Rejection>,
}

/// The applier's per-event core, built once from settings.
#[pyclass(frozen, module = "worker._native")]
pub struct ApplierCore {
    addressing: Addressing,
    event_schema_id: u32,
    fallback: Py<PyAny>,
    release_gil: bool,
}

#[pymethods]
impl ApplierCore {
    #[new]
    #[pyo3(signature = (*, hash_secret, key_prefix, buckets_per_org, shards, event_schema_id, fallback, release_gil = true))]
    fn new(hash_secret: &str, key_prefix: &str, buckets_per_org: u32, shards: u32, event_schema_id: u32, fallback: Py<PyAny>, release_gil: bool) -> PyResult<Self> {
        Ok(ApplierCore {
            addressing: Addressing::new(hash_secret.as_bytes(), key_prefix, buckets_per_org, shards).map_err(value_error)?,
            event_schema_id,
            fallback,
            release_gil,
        })
    }

    /// Decode, validate and normalise the values of one consumed batch and name their facts.
    fn plan(slf: &Bound<'_, Self>, values: &Bound<'_, PyList>, keys: &Bound<'_, PyList>) -> PyResult<PlannedEvents> {
        let py = slf.py();
        let core = slf.get();
        if keys.len() != values.len() {
            return Err(value_error(format!("{} values but {} keys", values.len(), keys.len())));
        }
        let items: Vec<Bound<'_, PyAny>> = values.iter().collect();
        let key_items: Vec<Bound<'_, PyAny>> = keys.iter().collect();
        let raw: Vec<Option<&[u8]>> = items.iter().map(|v| v.cast_exact::<PyBytes>().ok().map(|b| b.as_bytes())).collect();
        let message_keys: Vec<Option<&[u8]>> = key_items.iter().map(|k| k.cast::<PyBytes>().ok().map(|b| b.as_bytes())).collect();

        let (mut pending, undecoded) = core.without_gil(py, || core.read_events(&raw));
        let fallback = core.fallback.bind(py);
        let mut undecodable: Vec<(usize, String, String)> = Vec::new();
        for index in undecoded {
            let answer = fallback.call_method1("decode_event", (&items[index],))?;
            if let Ok(error) = answer.cast::<PyTuple>() {
                undecodable.push((index, error.get_item(0)?.extract()?, error.get_item(1)?.extract()?));
                continue;
            }
            pending.push(Pending::new(index, owned_event(&answer)?));
        }
        pending.sort_by_key(|p| p.index);
        // email-validator and phonenumbers judge what the core is not sure of.
        for p in pending.iter_mut().filter(|p| p.unsure()) {
            let event = &p.event;
            for (slot, method, raw) in [
                (&mut p.addresses.email, "normalize_email", &event.email),
                (&mut p.addresses.phone, "normalize_phone", &event.phone),
                (&mut p.addresses.domain, "normalize_domain", &event.domain),
            ] {
                if *slot == Some(Normalised::Unsure) {
                    let answer: Option<String> = fallback.call_method1(method, (raw.as_deref().unwrap_or_default(),))?.extract()?;
                    *slot = Some(answer.map_or(Normalised::Invalid, Normalised::Valid));
                }
            }
        }
        let (planned, kinds, layout, read, miskeyed) = core.without_gil(py, || core.name_facts(&pending, &message_keys));
        Ok(PlannedEvents { core: slf.clone().unbind(), planned, kinds, layout, read, undecodable, miskeyed })
    }

    /// What the core's own reader makes of each value: the event's fields in schema order
    /// (enums and settings as their symbols), or None where it leaves the value to fastavro.
    /// For the tests that hold the reader to fastavro; the applier does not call it.
    fn read<'py>(&self, py: Python<'py>, values: Vec<Option<Vec<u8>>>) -> PyResult<Bound<'py, PyList>> {
        let rows = values.iter().map(|value| -> PyResult<Bound<'py, PyAny>> {
            let event = value.as_deref().filter(|v| avro::schema_id(v) == Some(self.event_schema_id)).and_then(|v| read_event(&v[avro::HEADER_SIZE..]));
            let Some(e) = event else {
                return Ok(py.None().into_bound(py));
            };
            let settings = e.settings.map(|s| {
                let unsubscribe = match s.unsubscribe_scope {
                    UnsubscribeScope::Domain => "DOMAIN",
                    UnsubscribeScope::Organization => "ORGANIZATION",
                };
                let user = match s.user_opt_out_scope {
                    UserOptOutScope::User => "USER",
                    UserOptOutScope::Organization => "ORGANIZATION",
                };
                (unsubscribe, user)
            });
            let head = (e.event_id.as_ref(), e.org_id.as_ref(), e.occurred_at, e.source.name(), e.kind.name());
            let tail = (e.email.as_deref(), e.phone.as_deref(), e.user_id.as_deref(), e.domain.as_deref(), e.contact_id.as_deref(), e.ok_to_email, settings);
            Ok((head, tail).into_pyobject(py)?.into_any())
        });
        PyList::new(py, rows.collect::<PyResult<Vec<_>>>()?)
    }
}

impl ApplierCore {
    fn without_gil<T: Send>(&self, py: Python<'_>, work: impl FnOnce() -> T + Send) -> T {
        if self.release_gil {
            py.detach(work)
        } else {
            work()
        }
    }

    /// The events the core can read; the indexes of the others.
    fn read_events<'a>(&self, raw: &[Option<&'a [u8]>]) -> (Vec<Pending<'a>>, Vec<usize>) {
        let mut pending = Vec::with_capacity(raw.len());
        let mut undecoded = Vec::new();
        for (index, value) in raw.iter().enumerate() {
            let event = value.filter(|v| avro::schema_id(v) == Some(self.event_schema_id)).and_then(|v| read_event(&v[avro::HEADER_SIZE..]));
            match event {
                Some(event) => pending.push(Pending::new(index, event)),
                None => undecoded.push(index),
            }
        }
        (pending, undecoded)
    }

    /// `PreferenceBatch`'s plans, the batch's facts laid out for the read script, and the
    /// events whose Kafka key is not their normalised subject (SPEC §4).
    #[allow(clippy::type_complexity)]
    fn name_facts(&self, pending: &[Pending<'_>], message_keys: &[Option<&[u8]>]) -> (Vec<Planned>, Vec<FactKind>, Layout, Read, Vec<(usize, &'static str, String)>) {
        let mut table = FactTable::with_capacity(pending.len() * 2);
        let mut wanted: Vec<bool> = Vec::new();
        let mut planned = Vec::with_capacity(pending.len());
        let mut miskeyed = Vec::new();
        for p in pending {
            let event = &p.event;
            let step = p.checked.clone().and_then(|_| rules::plan(event, &p.addresses)).map(|plan| {
                if message_keys[p.index] != Some(plan.subject_key.as_bytes()) {
                    miskeyed.push((p.index, event.kind.name(), event.event_id.to_string()));
                }
                let org_id = event.org_id.as_ref();
                let reads = rules::reads(event.kind);
                let facts = plan
                    .facts
                    .iter()
                    .map(|&(kind, subject, qualifier)| {
                        let at = table.intern(FactKey { org_id, kind, subject, qualifier });
                        if at == wanted.len() {
                            wanted.push(false);
                        }
                        wanted[at] |= reads;
                        at
                    })
                    .collect();
                Step {
                    kind: event.kind,
                    event_id: event.event_id.to_string(),
                    occurred_at: event.occurred_at,
                    facts,
                    domain: plan.domain,
                    ok_to_email: event.ok_to_email.unwrap_or(false),
                    settings: event.settings,
                }
            });
            planned.push(Planned { index: p.index, kind: event.kind, step });
        }
        let layout = lay_out(&self.addressing, &table);
        let read = Read::of(&layout, &wanted);
        (planned, table.facts.iter().map(|f| f.kind).collect(), layout, read, miskeyed)
    }
}

fn owned_event(obj: &Bound<'_, PyAny>) -> PyResult<Event<'static>> {
    let text = |name: &str| -> PyResult<Cow<'static, str>> { Ok(Cow::Owned(obj.getattr(name)?.extract::<String>()?)) };
    let optional = |name: &str| -> PyResult<Option<Cow<'static, str>>> {
        let value = obj.getattr(name)?;
        Ok(if value.is_none() { None } else { Some(Cow::Owned(value.extract::<String>()?)) })
    };
    let source: String = obj.getattr("source")?.extract()?;
    let kind: String = obj.getattr("type")?.extract()?;
    let ok_to_email = obj.getattr("ok_to_email")?;
    let settings = obj.getattr("settings")?;
    let settings = if settings.is_none() {
        None
    } else {
        let unsubscribe: String = settings.getattr("unsubscribe_scope")?.extract()?;
        let user: String = settings.getattr("user_opt_out_scope")?.extract()?;
        Some(OrgSettings {
            unsubscribe_scope: match unsubscribe.as_str() {
                "DOMAIN" => UnsubscribeScope::Domain,
                "ORGANIZATION" => UnsubscribeScope::Organization,
                other => return Err(value_error(format!("unknown unsubscribe scope {other:?}"))),
            },
            user_opt_out_scope: match user.as_str() {
                "USER" => UserOptOutScope::User,
                "ORGANIZATION" => UserOptOutScope::Organization,
                other => return Err(value_error(format!("unknown user opt-out scope {other:?}"))),
            },
        })
    };
    Ok(Event {
        event_id: text("event_id")?,
        org_id: text("org_id")?,
        occurred_at: obj.getattr("occurred_at")?.extract()?,
        source: Source::parse(&source).ok_or_else(|| value_error(format!("unknown source {source:?}")))?,
        kind: EventType::parse(&kind).ok_or_else(|| value_error(format!("unknown event type {kind:?}")))?,
        email: optional("email")?,
        phone: optional("phone")?,
        user_id: optional("user_id")?,
        domain: optional("domain")?,
        contact_id: optional("contact_id")?,
        ok_to_email: if ok_to_email.is_none() { None } else { Some(ok_to_email.extract()?) },
        settings,
    })
}

/// What the read script fetches: the facts whose current value some event of the batch
/// reads. A flag (opt-outs, do-not-contact) is written whatever it held, so it is not read.
struct Read {
    keys: Vec<String>,
    fields: Vec<Vec<u8>>,
    /// Fact position (in the table) of each reply position (from 0).
    reply_order: Vec<usize>,
}

impl Read {
    fn of(layout: &Layout, wanted: &[bool]) -> Read {
        let mut at_slot: HashMap<usize, usize> = HashMap::new();
        let (mut keys, mut fields, mut members) = (Vec::new(), Vec::<Vec<u8>>::new(), Vec::<Vec<usize>>::new());
        for (fact, (slot, field)) in layout.located.iter().enumerate().filter(|(fact, _)| wanted[*fact]) {
            let at = *at_slot.entry(*slot).or_insert_with(|| {
                keys.push(layout.keys[*slot].clone());
                fields.push(Vec::new());
                members.push(Vec::new());
                keys.len() - 1
            });
            fields[at].extend_from_slice(field);
            members[at].push(fact);
        }
        Read { keys, fields, reply_order: members.concat() }
    }
}

/// A consumed batch, planned: the read script's arguments and what applying needs.
#[pyclass(frozen, module = "worker._native")]
pub struct PlannedEvents {
    core: Py<ApplierCore>,
    planned: Vec<Planned>,
    kinds: Vec<FactKind>,
    layout: Layout,
    read: Read,
    undecodable: Vec<(usize, String, String)>,
    miskeyed: Vec<(usize, &'static str, String)>,
}

#[pymethods]
impl PlannedEvents {
    /// The Redis hash keys to read, in the read script's order.
    #[getter]
    fn keys<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, &self.read.keys)
    }

    /// Per key, the wanted hash fields concatenated.
    #[getter]
    fn fields<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.read.fields.iter().map(|f| PyBytes::new(py, f)))
    }

    /// How many distinct facts the read asks for.
    #[getter]
    fn fact_count(&self) -> usize {
        self.read.reply_order.len()
    }

    /// How many values were decoded (the batch less its undecodable values).
    #[getter]
    fn size(&self) -> usize {
        self.planned.len()
    }

    /// `(index, error_class, detail)` of every value that cannot be decoded.
    #[getter]
    fn undecodable<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, &self.undecodable)
    }

    /// `(index, type, event_id)` of valid events keyed other than by their normalised subject.
    #[getter]
    fn miskeyed<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, &self.miskeyed)
    }

    /// Per decoded event `(index, [(key, field), ...])`, its facts in plan order (none when
    /// rejected before the read). For tests and tools.
    fn describe<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let rows = self.planned.iter().map(|p| -> PyResult<Bound<'py, PyTuple>> {
            let facts: &[usize] = p.step.as_ref().map(|s| s.facts.as_slice()).unwrap_or_default();
            let located = facts.iter().map(|&at| {
                let (slot, field) = &self.layout.located[at];
                (self.layout.keys[*slot].clone(), PyBytes::new(py, field))
            });
            (p.index, PyList::new(py, located)?).into_pyobject(py)
        });
        PyList::new(py, rows.collect::<PyResult<Vec<_>>>()?)
    }

    /// Apply the events in order on the read script's reply (after its first two items).
    ///
    /// Raises `ValueError` on a reply or stored value the applier never writes.
    fn apply(&self, py: Python<'_>, found: &Bound<'_, PyList>) -> PyResult<AppliedEvents> {
        let core = self.core.get();
        let values = self.fact_values(found)?;
        let fallback = core.fallback.bind(py);
        let mut unusual: HashMap<String, Option<String>> = HashMap::new();
        for (kind, value) in self.kinds.iter().zip(&values) {
            for text in value.as_deref().map(|v| unusual_ints(*kind, v)).unwrap_or_default() {
                if !unusual.contains_key(text) {
                    let answer: Option<String> = fallback.call_method1("int_text", (text,))?.extract()?;
                    unusual.insert(text.to_owned(), answer);
                }
            }
        }
        let applied = core.without_gil(py, || self.apply_all(values, &unusual)).map_err(value_error)?;
        let (rejections, tallies, view) = applied;
        // The writes by Redis hash, packed as the commit script takes them.
        let mut slots: Vec<usize> = Vec::new();
        let mut by_slot: HashMap<usize, Vec<usize>> = HashMap::new();
        for &fact in &view.written {
            let slot = self.layout.located[fact].0;
            let facts = by_slot.entry(slot).or_default();
            if facts.is_empty() {
                slots.push(slot);
            }
            facts.push(fact);
        }
        let keys = PyList::new(py, slots.iter().map(|&s| self.layout.keys[s].as_str()))?;
        let writes = PyList::empty(py);
        for slot in &slots {
            let mut packed = Vec::new();
            for &fact in &by_slot[slot] {
                let value = view.values[fact].as_deref().unwrap_or_default().as_bytes();
                let length = u32::try_from(value.len()).map_err(|_| value_error("a fact value over 4 GiB".to_owned()))?;
                packed.extend_from_slice(&self.layout.located[fact].1);
                packed.extend_from_slice(&length.to_be_bytes());
                packed.extend_from_slice(value);
            }
            writes.append(PyBytes::new(py, &packed))?;
        }
        let tally = PyDict::new(py);
        for ((kind, result), n) in &tallies {
            tally.set_item((kind.name(), *result), n)?;
        }
        Ok(AppliedEvents {
            keys: keys.unbind(),
            writes: writes.unbind(),
            write_count: view.written.len(),
            rejections: PyList::new(py, rejections.iter().map(|(i, r, d)| (*i, r.name(), d.as_str())))?.unbind(),
            tallies: tally.unbind(),
        })
    }
}

type Tallies = HashMap<(EventType, &'static str), u64>;

impl PlannedEvents {
    fn fact_values(&self, found: &Bound<'_, PyList>) -> PyResult<Vec<Option<String>>> {
        crate::read_reply_values(found, &self.read.reply_order, self.kinds.len())
    }

    #[allow(clippy::type_complexity)]
    fn apply_all(&self, values: Vec<Option<String>>, unusual: &HashMap<String, Option<String>>) -> Result<(Vec<(usize, rules::Reason, String)>, Tallies, View), String> {
        let int = |text: &str| canonical_int(text).or_else(|| unusual.get(text).cloned().flatten());
        let mut view = View::new(values);
        let mut rejections = Vec::new();
        let mut tallies: Tallies = HashMap::new();
        for p in &self.planned {
            let rejection = match &p.step {
                Ok(step) => rules::apply(step, &self.kinds, &mut view, &int)?,
                Err(rejection) => Some(rejection.clone()),
            };
            let result = if rejection.is_some() { "rejected" } else { "applied" };
            *tallies.entry((p.kind, result)).or_default() += 1;
            if let Some((reason, detail)) = rejection {
                rejections.push((p.index, reason, detail));
            }
        }
        Ok((rejections, tallies, view))
    }
}

/// An applied batch: the commit script's fact writes, the rejections and the tallies.
#[pyclass(frozen, module = "worker._native")]
pub struct AppliedEvents {
    /// The Redis hashes written, in the commit script's order.
    #[pyo3(get)]
    keys: Py<PyList>,
    /// Per hash of `keys`, one string: for each fact its field, its value's length (4 bytes, big-endian), its value.
    #[pyo3(get)]
    writes: Py<PyList>,
    /// How many facts are written.
    #[pyo3(get)]
    write_count: usize,
    /// `(index, reason, detail)` of every rejected event, in batch order.
    #[pyo3(get)]
    rejections: Py<PyList>,
    /// `(type, "applied" | "rejected") -> count`.
    #[pyo3(get)]
    tallies: Py<PyDict>,
}
