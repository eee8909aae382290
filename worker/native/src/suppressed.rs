//! `SuppressedSend` values built around the suppressed request's own bytes.
//!
//! A SuppressedSend begins with the SendRequest it suppresses, and Avro's binary
//! encoding of a record is its fields' encodings one after another, so a request
//! written with our own schema is copied as it is and only the decision's fields
//! are encoded here (as `worker/codec/suppressed.py` does).

use crate::avro::{header, put_long, put_string, HEADER_SIZE};
use crate::decide::{Reason, ALL_REASONS};

/// The per-process parts of every SuppressedSend, and the schema's symbol indexes.
pub struct SuppressedWriter {
    header: [u8; HEADER_SIZE],
    /// `SuppressionReason` symbol index per reason, from the schema.
    index: [i64; 9],
    policy_version: String,
    gate_instance: String,
}

/// The detail key holding the state the decision saw.
pub const STATE_DETAIL: &str = "state";

impl SuppressedWriter {
    /// `symbols` are the schema's `SuppressionReason` symbols in index order.
    pub fn new(schema_id: u32, symbols: &[String], policy_version: &str, gate_instance: &str) -> Result<Self, String> {
        let mut index = [0i64; 9];
        for (slot, reason) in index.iter_mut().zip(ALL_REASONS) {
            let at = symbols
                .iter()
                .position(|s| s == reason.name())
                .ok_or_else(|| format!("SuppressedSend schema has no symbol {}", reason.name()))?;
            *slot = at as i64;
        }
        Ok(SuppressedWriter {
            header: header(schema_id),
            index,
            policy_version: policy_version.to_owned(),
            gate_instance: gate_instance.to_owned(),
        })
    }

    fn symbol(&self, reason: Reason) -> i64 {
        self.index[reason as usize]
    }

    /// The wire-format SuppressedSend of the request whose Avro body is `request_body`.
    /// `reasons` is non-empty, in table order, each with its detail.
    pub fn encode(&self, request_body: &[u8], reasons: &[(Reason, String)], decided_at: i64, state: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_SIZE + request_body.len() + 128);
        out.extend_from_slice(&self.header);
        out.extend_from_slice(request_body);
        // An array is blocks of (count, items), ended by an empty block; a map likewise.
        put_long(&mut out, reasons.len() as i64);
        for (reason, _) in reasons {
            put_long(&mut out, self.symbol(*reason));
        }
        out.push(0);
        put_long(&mut out, self.symbol(reasons[0].0));
        put_long(&mut out, reasons.len() as i64 + 1);
        for (reason, detail) in reasons {
            put_string(&mut out, reason.name());
            put_string(&mut out, detail);
        }
        put_string(&mut out, STATE_DETAIL);
        put_string(&mut out, state);
        out.push(0);
        put_long(&mut out, decided_at);
        put_string(&mut out, &self.policy_version);
        put_string(&mut out, &self.gate_instance);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_follows_the_request_body() {
        let symbols: Vec<String> = ALL_REASONS.iter().map(|r| r.name().to_owned()).collect();
        let writer = SuppressedWriter::new(3, &symbols, "v1", "g").unwrap();
        let value = writer.encode(b"BODY", &[(Reason::SmsOptOut, "sms_consent=out".to_owned())], 1, "s");
        let mut expected = vec![0, 0, 0, 0, 3];
        expected.extend_from_slice(b"BODY");
        expected.extend_from_slice(&[2, 14, 0, 14, 4]);
        expected.push(22);
        expected.extend_from_slice(b"SMS_OPT_OUT");
        expected.push(30);
        expected.extend_from_slice(b"sms_consent=out");
        expected.extend_from_slice(&[10]);
        expected.extend_from_slice(b"state");
        expected.extend_from_slice(&[2, b's', 0, 2, 4, b'v', b'1', 2, b'g']);
        assert_eq!(value, expected);
    }

    #[test]
    fn every_reason_needs_a_symbol() {
        assert!(SuppressedWriter::new(3, &["INVALID_ADDRESS".to_owned()], "v", "g").is_err());
    }
}
