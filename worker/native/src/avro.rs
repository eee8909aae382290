//! Avro binary encoding: the strict reader of a `SendRequest` body and the writers of
//! the primitives a `SuppressedSend` tail needs.
//!
//! The reader is a strict subset of fastavro, mirroring `worker/codec/send_head.py`:
//! on anything unusual (a negative length, a varint of more than nine bytes, an enum
//! or union index written in more than one byte or out of range, a map written in
//! sized blocks, invalid UTF-8, a truncated body, trailing bytes) it declines (`None`)
//! and the Python codec decides the value with fastavro. So every body it accepts is
//! one fastavro accepts with the same field values.
//!
//! It is stricter still: it accepts only bodies in the form fastavro itself writes
//! (no over-long varints, the map in one block, no repeated map key), so that a
//! SuppressedSend embedding the body is byte-equal to fastavro's encoding of it.

use crate::decide::{Category, Channel};

/// The Confluent wire-format header: magic byte 0 and a 4-byte big-endian schema id.
pub const HEADER_SIZE: usize = 5;

/// Nine varint bytes are enough for any millisecond time or length; fastavro accepts
/// longer (non-canonical) forms, which are left to it.
const MAX_SHIFT: u32 = 56;

/// The schema id of a wire-format value, when its header is well formed.
pub fn schema_id(value: &[u8]) -> Option<u32> {
    if value.len() < HEADER_SIZE || value[0] != 0 {
        return None;
    }
    Some(u32::from_be_bytes([value[1], value[2], value[3], value[4]]))
}

/// The wire-format header of `schema_id`.
pub fn header(schema_id: u32) -> [u8; HEADER_SIZE] {
    let id = schema_id.to_be_bytes();
    [0, id[0], id[1], id[2], id[3]]
}

/// The leading fields of a `SendRequest` (all a decision reads), borrowed from the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendHead<'a> {
    pub message_id: &'a str,
    pub org_id: &'a str,
    pub user_id: &'a str,
    pub contact_id: &'a str,
    pub channel: Channel,
    pub category: Category,
    pub to: &'a str,
    pub from: &'a str,
    pub requested_at: i64,
}

/// Reads Avro's binary encoding strictly: every form fastavro would not write is refused (`None`).
pub(crate) struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }

    /// Whether every byte has been read.
    pub(crate) fn at_end(&self) -> bool {
        self.pos == self.data.len()
    }

    pub(crate) fn byte(&mut self) -> Option<u8> {
        let byte = *self.data.get(self.pos)?;
        self.pos += 1;
        Some(byte)
    }

    /// A zig-zag varint (`long`/`int`).
    pub(crate) fn long(&mut self) -> Option<i64> {
        let mut byte = self.byte()?;
        let mut result = u64::from(byte & 0x7F);
        let mut shift = 7;
        while byte & 0x80 != 0 {
            if shift > MAX_SHIFT {
                return None;
            }
            byte = self.byte()?;
            if byte == 0 {
                return None; // an over-long form: fastavro would write fewer bytes
            }
            result |= u64::from(byte & 0x7F) << shift;
            shift += 7;
        }
        Some(((result >> 1) as i64) ^ -((result & 1) as i64))
    }

    /// The content of a string or bytes field.
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let size = usize::try_from(self.long()?).ok()?;
        let end = self.pos.checked_add(size)?;
        let content = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(content)
    }

    pub(crate) fn string(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }

    /// A `["null", "string"]` union.
    pub(crate) fn optional_string(&mut self) -> Option<Option<&'a str>> {
        Some(if self.choice()? { Some(self.string()?) } else { None })
    }

    /// An enum index written in one byte (every enum here has fewer than 64 symbols).
    pub(crate) fn symbol(&mut self, count: usize) -> Option<usize> {
        let byte = self.byte()?;
        let index = usize::from(byte / 2);
        (byte % 2 == 0 && index < count).then_some(index)
    }

    /// An enum of two symbols, or the branch of a `["null", X]` union: one byte, 0 or 2.
    pub(crate) fn choice(&mut self) -> Option<bool> {
        match self.byte()? {
            0 => Some(false),
            2 => Some(true),
            _ => None,
        }
    }
}

/// The head of a `SendRequest` body (the value after its header), the rest validated.
pub fn read_send_head(body: &[u8]) -> Option<SendHead<'_>> {
    let mut r = Reader { data: body, pos: 0 };
    let message_id = r.string()?;
    let org_id = r.string()?;
    let user_id = r.string()?;
    let contact_id = r.string()?;
    let channel = if r.choice()? { Channel::Sms } else { Channel::Email };
    let category = if r.choice()? { Category::Transactional } else { Category::Marketing };
    let to = r.string()?;
    let from = r.string()?;
    let requested_at = r.long()?;
    if r.choice()? {
        r.string()?; // campaign_id
    }
    if r.choice()? {
        r.bytes()?; // payload
    }
    // attributes: map of string, as fastavro writes it: one block of (count, entries)
    // and the empty block, or the empty block alone.
    let count = r.long()?;
    if count < 0 {
        return None; // a block with its byte size: rare, fastavro reads it
    }
    if count > 0 {
        let mut keys: Vec<&str> = Vec::new();
        for _ in 0..count {
            let key = r.string()?;
            if keys.contains(&key) {
                return None; // decoded, the later entry wins: not the bytes fastavro writes
            }
            keys.push(key);
            r.string()?;
        }
        if r.long()? != 0 {
            return None; // a second block
        }
    }
    if r.pos != body.len() {
        return None;
    }
    Some(SendHead { message_id, org_id, user_id, contact_id, channel, category, to, from, requested_at })
}

/// Appends an Avro `long`: zig-zag, then little-endian base-128.
pub fn put_long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z > 0x7F {
        out.push((z as u8 & 0x7F) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Appends an Avro `string`: its UTF-8 length, then the bytes.
pub fn put_string(out: &mut Vec<u8>, text: &str) {
    put_long(out, text.len() as i64);
    out.extend_from_slice(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(fields: &[&[u8]]) -> Vec<u8> {
        fields.concat()
    }

    fn string(text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        put_string(&mut out, text);
        out
    }

    fn long(n: i64) -> Vec<u8> {
        let mut out = Vec::new();
        put_long(&mut out, n);
        out
    }

    fn sample(tail: &[u8]) -> Vec<u8> {
        body(&[
            &string("m1"),
            &string("org"),
            &string("u1"),
            &string("c1"),
            &[2, 0],
            &string("+15550001111"),
            &string("12345"),
            &long(1_700_000_000_000),
            tail,
        ])
    }

    #[test]
    fn reads_the_head_of_a_plain_body() {
        let value = sample(&[0, 0, 0]);
        let head = read_send_head(&value).expect("plain body");
        assert_eq!(head.org_id, "org");
        assert_eq!(head.channel, Channel::Sms);
        assert_eq!(head.category, Category::Marketing);
        assert_eq!(head.to, "+15550001111");
        assert_eq!(head.requested_at, 1_700_000_000_000);
    }

    #[test]
    fn validates_the_tail() {
        let attributes = body(&[&long(1), &string("k"), &string("v"), &[0]]);
        let with_tail = sample(&body(&[&[2], &string("camp"), &[2], &long(2), b"xy", &attributes]));
        assert!(read_send_head(&with_tail).is_some());
        assert!(read_send_head(&sample(&[0, 0, 0, 0])).is_none(), "trailing byte");
        assert!(read_send_head(&sample(&[0, 0])).is_none(), "truncated map");
        assert!(read_send_head(&sample(&[4, 0, 0])).is_none(), "bad union branch");
        assert!(read_send_head(&sample(&[0, 0, 1, 2, 0])).is_none(), "sized map block");
        let entry = body(&[&string("k"), &string("v")]);
        let two_blocks = sample(&body(&[&[0, 0], &long(1), &entry, &long(1), &string("j"), &string("w"), &[0]]));
        assert!(read_send_head(&two_blocks).is_none(), "map in two blocks");
        let repeated = sample(&body(&[&[0, 0], &long(2), &entry, &entry, &[0]]));
        assert!(read_send_head(&repeated).is_none(), "repeated map key");
        let bad_utf8 = sample(&body(&[&[2], &long(1), &[0xFF], &[0, 0]]));
        assert!(read_send_head(&bad_utf8).is_none(), "invalid UTF-8 campaign id");
    }

    #[test]
    fn declines_over_long_varints_and_negative_lengths() {
        let mut value = sample(&[0, 0, 0]);
        value[0] = 0x03; // length -2
        assert!(read_send_head(&value).is_none());
        let ten = [0xFFu8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01];
        let mut r = Reader { data: &ten, pos: 0 };
        assert_eq!(r.long(), None);
        let overlong = [0x84u8, 0x00];
        let mut r = Reader { data: &overlong, pos: 0 };
        assert_eq!(r.long(), None);
        let nine = [0xFEu8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F];
        let mut r = Reader { data: &nine, pos: 0 };
        assert_eq!(r.long(), Some(i64::MAX >> 1));
    }

    #[test]
    fn long_round_trips() {
        for n in [0i64, -1, 1, 63, -64, 64, 1 << 40, i64::MIN >> 1, i64::MAX >> 1] {
            let encoded = long(n);
            let mut r = Reader { data: &encoded, pos: 0 };
            assert_eq!(r.long(), Some(n));
        }
        assert_eq!(long(-1), vec![1]);
        assert_eq!(long(64), vec![0x80, 0x01]);
    }

    #[test]
    fn header_round_trips() {
        assert_eq!(schema_id(&header(7)), Some(7));
        assert_eq!(schema_id(&[1, 0, 0, 0, 7]), None);
        assert_eq!(schema_id(&[0, 0, 0]), None);
    }
}
