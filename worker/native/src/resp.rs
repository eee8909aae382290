//! The gate's state read as Redis protocol bytes: one `EVALSHA` of the read script per
//! shard, written as redis-py packs a pipeline of them (RESP arrays of bulk strings), so
//! Python sends a batch's read without encoding thousands of arguments one by one.
//! Mirrors `RedisStateStore.read_packed` (`worker/state/redis_store.py`), the reference.

use std::collections::BTreeMap;

use crate::facts::{Layout, FIELD_BYTES};

/// The pipelined read of one batch: the bytes to send and the shard each reply is from.
pub struct ReadCalls {
    pub payload: Vec<u8>,
    pub shards: Vec<u32>,
}

/// Per shard (ascending): `EVALSHA sha 1+k meta key... (base count field...)...`,
/// where `base` counts the fields of the keys before this one in the batch's key order.
pub fn read_calls(layout: &Layout, sha: &str, meta_keys: &[String]) -> Result<ReadCalls, String> {
    let mut per_shard: BTreeMap<u32, Vec<(usize, usize)>> = BTreeMap::new();
    let mut base = 0;
    for (at, (&shard, fields)) in layout.shards.iter().zip(&layout.fields).enumerate() {
        per_shard.entry(shard).or_default().push((at, base));
        base += fields.len() / FIELD_BYTES;
    }
    let mut payload = Vec::with_capacity(layout.keys.len() * 96 + per_shard.len() * 96);
    for (&shard, members) in &per_shard {
        let meta = meta_keys
            .get(shard as usize)
            .ok_or_else(|| format!("shard {shard} has no meta key (the store has {} shards)", meta_keys.len()))?;
        let key_count = (1 + members.len()).to_string();
        let field_count: usize = members.iter().map(|&(at, _)| layout.fields[at].len() / FIELD_BYTES).sum();
        array_header(&mut payload, 3 + 1 + members.len() + 2 * members.len() + field_count);
        for part in [b"EVALSHA".as_slice(), sha.as_bytes(), key_count.as_bytes(), meta.as_bytes()] {
            bulk(&mut payload, part);
        }
        for &(at, _) in members {
            bulk(&mut payload, layout.keys[at].as_bytes());
        }
        for &(at, base) in members {
            let fields = &layout.fields[at];
            bulk(&mut payload, base.to_string().as_bytes());
            bulk(&mut payload, (fields.len() / FIELD_BYTES).to_string().as_bytes());
            for field in fields.chunks(FIELD_BYTES) {
                bulk(&mut payload, field);
            }
        }
    }
    Ok(ReadCalls { payload, shards: per_shard.into_keys().collect() })
}

fn array_header(out: &mut Vec<u8>, items: usize) {
    out.push(b'*');
    out.extend_from_slice(items.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn bulk(out: &mut Vec<u8>, item: &[u8]) {
    out.push(b'$');
    out.extend_from_slice(item.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(item);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(keys: &[(&str, u32, usize)]) -> Layout {
        Layout {
            keys: keys.iter().map(|(k, _, _)| (*k).to_owned()).collect(),
            fields: keys.iter().map(|(_, _, n)| vec![b'f'; n * FIELD_BYTES]).collect(),
            shards: keys.iter().map(|(_, s, _)| *s).collect(),
            located: Vec::new(),
            reply_order: Vec::new(),
        }
    }

    #[test]
    fn one_call_per_shard_in_shard_order_with_bases_in_key_order() {
        let calls = read_calls(&layout(&[("a", 1, 2), ("b", 0, 1), ("c", 1, 1)]), "sha", &["m0".into(), "m1".into()]).unwrap();
        assert_eq!(calls.shards, vec![0, 1]);
        let text = String::from_utf8(calls.payload).unwrap();
        let f = format!("$19\r\n{}\r\n", "f".repeat(FIELD_BYTES));
        let expected = format!(
            "*8\r\n$7\r\nEVALSHA\r\n$3\r\nsha\r\n$1\r\n2\r\n$2\r\nm0\r\n$1\r\nb\r\n$1\r\n2\r\n$1\r\n1\r\n{f}\
             *13\r\n$7\r\nEVALSHA\r\n$3\r\nsha\r\n$1\r\n3\r\n$2\r\nm1\r\n$1\r\na\r\n$1\r\nc\r\n\
             $1\r\n0\r\n$1\r\n2\r\n{f}{f}$1\r\n3\r\n$1\r\n1\r\n{f}"
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn a_shard_without_a_meta_key_is_refused() {
        let refused = read_calls(&layout(&[("a", 3, 1)]), "sha", &["m0".into()]);
        assert!(refused.err().unwrap().contains("shard 3 has no meta key"));
    }
}
