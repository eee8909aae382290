//! The gate's state read on a standalone Redis, done by the core without the GIL: one
//! `MULTI`, per shard (ascending) `HGETALL` of its meta hash and one `HMGET` per fact
//! hash, `EXEC`, written to the socket redis-py opened and answered into the same
//! `(status, found)` the read script gives (`RedisStateStore.read_packed`, the reference).
//!
//! Why not the read script: inside Lua every `redis.call` costs Redis about three times a
//! plain command, so the script was most of Redis' time per batch; and reading its 16
//! replies through redis-py took the GIL back after every `recv`, while the gate's main
//! thread wanted it. `MULTI`/`EXEC` is as atomic as a script: every hash is read at one
//! instant, between two of the applier's commits.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::facts::{Layout, FIELD_BYTES};

/// The bytes of one batch's read and what each queued command answers.
pub struct MultiRead {
    pub payload: Vec<u8>,
    pub shards: Vec<u32>,
    commands: Vec<Command>,
}

/// A queued command: a shard's meta hash, or the wanted fields of one fact hash.
enum Command {
    Meta,
    Fields { base: usize, count: usize },
}

/// What the read answered: per shard in `MultiRead::shards` order its meta hash as a
/// flat name/value list, and the `(position, value)` pairs of the facts present
/// (positions from 1, in the batch's key order, as the read script numbers them).
#[derive(Debug, PartialEq)]
pub struct Answer {
    pub metas: Vec<Vec<Vec<u8>>>,
    pub found: Vec<(usize, Vec<u8>)>,
}

/// Why a read gave no answer. Every kind fails the batch closed; the connection is dropped.
#[derive(Debug, PartialEq)]
pub enum ReadError {
    /// The socket failed or closed.
    Io(String),
    /// No complete answer within the timeout.
    Timeout(f64),
    /// Redis answered something this read does not expect (or an error reply).
    Reply(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(message) => write!(f, "Redis connection: {message}"),
            ReadError::Timeout(seconds) => write!(f, "Redis did not answer the state read within {seconds} s"),
            ReadError::Reply(message) => write!(f, "Redis: {message}"),
        }
    }
}

pub fn multi_read(layout: &Layout, meta_keys: &[String]) -> Result<MultiRead, String> {
    let mut per_shard: BTreeMap<u32, Vec<(usize, usize)>> = BTreeMap::new();
    let mut base = 0;
    for (at, (&shard, fields)) in layout.shards.iter().zip(&layout.fields).enumerate() {
        per_shard.entry(shard).or_default().push((at, base));
        base += fields.len() / FIELD_BYTES;
    }
    let mut payload = Vec::with_capacity(32 + layout.keys.len() * 64 + base * (FIELD_BYTES + 6) + per_shard.len() * 64);
    let mut commands = Vec::with_capacity(layout.keys.len() + per_shard.len());
    command(&mut payload, &[b"MULTI"]);
    for (&shard, members) in &per_shard {
        let meta = meta_keys
            .get(shard as usize)
            .ok_or_else(|| format!("shard {shard} has no meta key (the store has {} shards)", meta_keys.len()))?;
        command(&mut payload, &[b"HGETALL", meta.as_bytes()]);
        commands.push(Command::Meta);
        for &(at, base) in members {
            let fields = &layout.fields[at];
            let count = fields.len() / FIELD_BYTES;
            array_header(&mut payload, 2 + count);
            bulk(&mut payload, b"HMGET");
            bulk(&mut payload, layout.keys[at].as_bytes());
            for field in fields.chunks(FIELD_BYTES) {
                bulk(&mut payload, field);
            }
            commands.push(Command::Fields { base, count });
        }
    }
    command(&mut payload, &[b"EXEC"]);
    Ok(MultiRead { payload, shards: per_shard.into_keys().collect(), commands })
}

impl MultiRead {
    /// Send the read on `fd` (a connected socket, blocking or not) and read its answer.
    pub fn exchange(&self, fd: i32, timeout: Option<Duration>) -> Result<Answer, ReadError> {
        let deadline = timeout.map(|t| (Instant::now() + t, t.as_secs_f64()));
        write_all(fd, &self.payload, deadline)?;
        let mut buffer: Vec<u8> = Vec::with_capacity(64 * 1024);
        let mut replies: Vec<Reply> = Vec::with_capacity(self.commands.len() + 2);
        let mut parsed = 0;
        while replies.len() < self.commands.len() + 2 {
            match parse(&buffer, &mut parsed)? {
                Some(reply) => replies.push(reply),
                None => read_some(fd, &mut buffer, deadline)?,
            }
        }
        if parsed != buffer.len() {
            return Err(ReadError::Reply(format!("{} bytes past the end of the answer", buffer.len() - parsed)));
        }
        self.answer(replies)
    }

    /// The replies of MULTI, every queued command and EXEC, as the read's answer.
    pub fn answer(&self, replies: Vec<Reply>) -> Result<Answer, ReadError> {
        let mut replies = replies.into_iter();
        expect_status(replies.next(), "OK", "MULTI")?;
        for _ in &self.commands {
            expect_status(replies.next(), "QUEUED", "a queued read")?;
        }
        let executed = match replies.next() {
            Some(Reply::Array(Some(items))) if items.len() == self.commands.len() => items,
            Some(Reply::Error(message)) => return Err(ReadError::Reply(message)),
            other => return Err(unexpected("EXEC", other.as_ref())),
        };
        let mut answer = Answer { metas: Vec::with_capacity(self.shards.len()), found: Vec::new() };
        for (command, reply) in self.commands.iter().zip(executed) {
            match (command, reply) {
                (_, Reply::Error(message)) => return Err(ReadError::Reply(message)),
                (Command::Meta, Reply::Array(Some(items))) => {
                    answer.metas.push(items.into_iter().map(bulk_value).collect::<Result<_, _>>()?);
                }
                (Command::Fields { base, count }, Reply::Array(Some(items))) if items.len() == *count => {
                    for (j, item) in items.into_iter().enumerate() {
                        match item {
                            Reply::Bulk(None) => {}
                            Reply::Bulk(Some(value)) => answer.found.push((base + j + 1, value)),
                            other => return Err(unexpected("HMGET's field", Some(&other))),
                        }
                    }
                }
                (Command::Meta, other) => return Err(unexpected("HGETALL", Some(&other))),
                (Command::Fields { .. }, other) => return Err(unexpected("HMGET", Some(&other))),
            }
        }
        Ok(answer)
    }
}

fn expect_status(reply: Option<Reply>, status: &str, what: &str) -> Result<(), ReadError> {
    match reply {
        Some(Reply::Status(text)) if text == status.as_bytes() => Ok(()),
        Some(Reply::Error(message)) => Err(ReadError::Reply(message)),
        other => Err(unexpected(what, other.as_ref())),
    }
}

fn unexpected(what: &str, reply: Option<&Reply>) -> ReadError {
    let seen = match reply {
        None => "nothing".to_owned(),
        Some(Reply::Status(text)) => format!("status {:?}", String::from_utf8_lossy(text)),
        Some(Reply::Error(message)) => format!("error {message:?}"),
        Some(Reply::Int(n)) => format!("integer {n}"),
        Some(Reply::Bulk(None)) | Some(Reply::Array(None)) => "nil".to_owned(),
        Some(Reply::Bulk(Some(_))) => "a string".to_owned(),
        Some(Reply::Array(Some(items))) => format!("an array of {}", items.len()),
    };
    ReadError::Reply(format!("{what} answered {seen}"))
}

fn bulk_value(reply: Reply) -> Result<Vec<u8>, ReadError> {
    match reply {
        Reply::Bulk(Some(value)) => Ok(value),
        other => Err(unexpected("HGETALL's entry", Some(&other))),
    }
}

/// One Redis reply (RESP2, and the RESP3 shapes these commands can take).
#[derive(Debug, PartialEq)]
pub enum Reply {
    Status(Vec<u8>),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

/// Redis' own ceiling for a string (`proto-max-bulk-len` is at most 512 MB by default):
/// a longer length is not a reply but a broken stream.
const MAX_BULK_BYTES: i64 = 1 << 32;

/// The reply starting at `*at`, moving `*at` past it; `None` while it is incomplete.
pub fn parse(buffer: &[u8], at: &mut usize) -> Result<Option<Reply>, ReadError> {
    let mut pos = *at;
    let reply = parse_at(buffer, &mut pos)?;
    if reply.is_some() {
        *at = pos;
    }
    Ok(reply)
}

fn parse_at(buffer: &[u8], pos: &mut usize) -> Result<Option<Reply>, ReadError> {
    let Some(line) = line(buffer, pos) else { return Ok(None) };
    let (&kind, rest) = line.split_first().ok_or_else(|| ReadError::Reply("an empty reply line".to_owned()))?;
    Ok(Some(match kind {
        b'+' => Reply::Status(rest.to_vec()),
        b'-' => Reply::Error(String::from_utf8_lossy(rest).into_owned()),
        b':' => Reply::Int(number(rest)?),
        b'_' => Reply::Bulk(None),
        b'$' | b'!' => {
            let length = number(rest)?;
            if length < 0 {
                return Ok(Some(Reply::Bulk(None)));
            }
            if length > MAX_BULK_BYTES {
                return Err(ReadError::Reply(format!("a bulk string of {length} bytes")));
            }
            let end = *pos + length as usize;
            if buffer.len() < end + 2 {
                return Ok(None);
            }
            if &buffer[end..end + 2] != b"\r\n" {
                return Err(ReadError::Reply("a bulk string without its line end".to_owned()));
            }
            let value = buffer[*pos..end].to_vec();
            *pos = end + 2;
            if kind == b'!' {
                Reply::Error(String::from_utf8_lossy(&value).into_owned())
            } else {
                Reply::Bulk(Some(value))
            }
        }
        b'*' | b'~' | b'%' => {
            let count = number(rest)?;
            if count < 0 {
                return Ok(Some(Reply::Array(None)));
            }
            if count > MAX_BULK_BYTES {
                return Err(ReadError::Reply(format!("an array of {count} items")));
            }
            // A map's entries are name, value, name, value: the flat list HGETALL gives in RESP2.
            let items = if kind == b'%' { 2 * count as usize } else { count as usize };
            let mut out = Vec::with_capacity(items.min(1 << 16));
            for _ in 0..items {
                match parse_at(buffer, pos)? {
                    Some(item) => out.push(item),
                    None => return Ok(None),
                }
            }
            Reply::Array(Some(out))
        }
        other => return Err(ReadError::Reply(format!("a reply of unexpected type {:?}", other as char))),
    }))
}

/// The line at `*pos` without its `\r\n`, moving past it; `None` if it is not complete.
fn line<'b>(buffer: &'b [u8], pos: &mut usize) -> Option<&'b [u8]> {
    let start = *pos;
    let end = start + buffer.get(start..)?.windows(2).position(|w| w == b"\r\n")?;
    *pos = end + 2;
    Some(&buffer[start..end])
}

fn number(text: &[u8]) -> Result<i64, ReadError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| ReadError::Reply(format!("{:?} is not a length", String::from_utf8_lossy(text))))
}

fn command(out: &mut Vec<u8>, parts: &[&[u8]]) {
    array_header(out, parts.len());
    for part in parts {
        bulk(out, part);
    }
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

type Deadline = Option<(Instant, f64)>;

/// Waits until `fd` is ready for `events`, or the deadline passes.
fn wait(fd: i32, events: libc::c_short, deadline: Deadline) -> Result<(), ReadError> {
    loop {
        let millis = match deadline {
            None => -1,
            Some((at, seconds)) => {
                let left = at.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ReadError::Timeout(seconds));
                }
                left.as_millis().clamp(1, i32::MAX as u128) as i32
            }
        };
        let mut poll = libc::pollfd { fd, events, revents: 0 };
        // SAFETY: one valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&mut poll, 1, millis) };
        if ready > 0 {
            return Ok(());
        }
        if ready < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::Interrupted {
                return Err(ReadError::Io(format!("poll: {error}")));
            }
        }
    }
}

fn write_all(fd: i32, mut data: &[u8], deadline: Deadline) -> Result<(), ReadError> {
    while !data.is_empty() {
        // SAFETY: `data` is valid for `data.len()` bytes; the fd belongs to the caller's open socket.
        let written = unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL) };
        if written >= 0 {
            data = &data[written as usize..];
            continue;
        }
        let error = std::io::Error::last_os_error();
        match error.kind() {
            std::io::ErrorKind::WouldBlock => wait(fd, libc::POLLOUT, deadline)?,
            std::io::ErrorKind::Interrupted => {}
            _ => return Err(ReadError::Io(format!("send: {error}"))),
        }
    }
    Ok(())
}

/// Reads what has arrived (waiting for the first byte): the answer is parsed again
/// from its start after each call, so taking it in as few pieces as possible matters.
fn read_some(fd: i32, buffer: &mut Vec<u8>, deadline: Deadline) -> Result<(), ReadError> {
    const CHUNK: usize = 64 * 1024;
    let mut got = false;
    loop {
        if !got {
            wait(fd, libc::POLLIN, deadline)?;
        }
        buffer.reserve(CHUNK);
        let spare = buffer.spare_capacity_mut();
        let flags = if got { libc::MSG_DONTWAIT } else { 0 };
        // SAFETY: `spare` is writable for its length; recv writes at most that many bytes.
        let read = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), spare.len(), flags) };
        if read > 0 {
            // SAFETY: recv initialised the first `read` bytes of the spare capacity.
            unsafe { buffer.set_len(buffer.len() + read as usize) };
            got = true;
            continue;
        }
        if read == 0 {
            if got {
                return Ok(()); // the close is reported by the next call, if the answer is still short
            }
            return Err(ReadError::Io("closed by Redis before the answer was complete".to_owned()));
        }
        let error = std::io::Error::last_os_error();
        match error.kind() {
            std::io::ErrorKind::WouldBlock if got => return Ok(()),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => {}
            _ => return Err(ReadError::Io(format!("recv: {error}"))),
        }
    }
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

    fn parse_all(bytes: &[u8]) -> Vec<Reply> {
        let mut at = 0;
        let mut out = Vec::new();
        while let Some(reply) = parse(bytes, &mut at).unwrap() {
            out.push(reply);
        }
        assert_eq!(at, bytes.len(), "every byte parsed");
        out
    }

    fn bulk_reply(text: &str) -> String {
        format!("${}\r\n{text}\r\n", text.len())
    }

    #[test]
    fn one_transaction_with_each_shards_meta_before_its_hashes() {
        let read = multi_read(&layout(&[("a", 1, 2), ("b", 0, 1)]), &["m0".into(), "m1".into()]).unwrap();
        assert_eq!(read.shards, vec![0, 1]);
        let f = bulk_reply(&"f".repeat(FIELD_BYTES));
        let expected = format!(
            "*1\r\n$5\r\nMULTI\r\n*2\r\n$7\r\nHGETALL\r\n$2\r\nm0\r\n*3\r\n$5\r\nHMGET\r\n$1\r\nb\r\n{f}\
             *2\r\n$7\r\nHGETALL\r\n$2\r\nm1\r\n*4\r\n$5\r\nHMGET\r\n$1\r\na\r\n{f}{f}*1\r\n$4\r\nEXEC\r\n"
        );
        assert_eq!(String::from_utf8(read.payload).unwrap(), expected);
    }

    #[test]
    fn a_shard_without_a_meta_key_is_refused() {
        let refused = multi_read(&layout(&[("a", 3, 1)]), &["m0".into()]);
        assert!(refused.err().unwrap().contains("shard 3 has no meta key"));
    }

    #[test]
    fn positions_count_fields_in_key_order_as_the_read_script_does() {
        // Key a (shard 1) holds positions 1-2, b (shard 0) position 3; replies come shard by shard.
        let read = multi_read(&layout(&[("a", 1, 2), ("b", 0, 1)]), &["m0".into(), "m1".into()]).unwrap();
        let text = format!(
            "+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*4\r\n*2\r\n{}{}*1\r\n{}*0\r\n*2\r\n$-1\r\n{}",
            bulk_reply("ready"),
            bulk_reply("1"),
            bulk_reply("x"),
            bulk_reply("y")
        );
        let answer = read.answer(parse_all(text.as_bytes())).unwrap();
        assert_eq!(answer.metas, vec![vec![b"ready".to_vec(), b"1".to_vec()], vec![]]);
        assert_eq!(answer.found, vec![(3, b"x".to_vec()), (2, b"y".to_vec())]);
    }

    #[test]
    fn an_error_inside_the_transaction_fails_the_read() {
        let read = multi_read(&layout(&[("a", 0, 1)]), &["m0".into()]).unwrap();
        let text = "+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n*0\r\n-WRONGTYPE Operation against a key holding the wrong kind of value\r\n";
        let refused = read.answer(parse_all(text.as_bytes())).unwrap_err();
        assert!(matches!(refused, ReadError::Reply(ref m) if m.starts_with("WRONGTYPE")), "{refused:?}");
    }

    #[test]
    fn a_short_or_refused_answer_fails_the_read() {
        let read = multi_read(&layout(&[("a", 0, 2)]), &["m0".into()]).unwrap();
        let short = "+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n*0\r\n*1\r\n$-1\r\n";
        assert!(matches!(read.answer(parse_all(short.as_bytes())), Err(ReadError::Reply(ref m)) if m.contains("HMGET answered an array of 1")));
        let aborted = "+OK\r\n+QUEUED\r\n+QUEUED\r\n-EXECABORT Transaction discarded\r\n";
        assert!(matches!(read.answer(parse_all(aborted.as_bytes())), Err(ReadError::Reply(ref m)) if m.starts_with("EXECABORT")));
        let loading = "-LOADING Redis is loading the dataset in memory\r\n+QUEUED\r\n+QUEUED\r\n*-1\r\n";
        assert!(matches!(read.answer(parse_all(loading.as_bytes())), Err(ReadError::Reply(ref m)) if m.starts_with("LOADING")));
        let nil = "+OK\r\n+QUEUED\r\n+QUEUED\r\n*-1\r\n";
        assert!(matches!(read.answer(parse_all(nil.as_bytes())), Err(ReadError::Reply(ref m)) if m == "EXEC answered nil"));
    }

    #[test]
    fn an_incomplete_reply_waits_for_more_bytes_without_moving() {
        let whole = b"*2\r\n$3\r\nabc\r\n:7\r\n";
        for cut in 0..whole.len() {
            let mut at = 0;
            assert_eq!(parse(&whole[..cut], &mut at).unwrap(), None, "cut at {cut}");
            assert_eq!(at, 0);
        }
        let mut at = 0;
        assert_eq!(
            parse(whole, &mut at).unwrap(),
            Some(Reply::Array(Some(vec![Reply::Bulk(Some(b"abc".to_vec())), Reply::Int(7)])))
        );
        assert_eq!(at, whole.len());
    }

    #[test]
    fn resp3_maps_and_nulls_read_as_their_resp2_shapes() {
        assert_eq!(parse_all(b"%1\r\n$1\r\na\r\n$1\r\nb\r\n_\r\n"), vec![
            Reply::Array(Some(vec![Reply::Bulk(Some(b"a".to_vec())), Reply::Bulk(Some(b"b".to_vec()))])),
            Reply::Bulk(None),
        ]);
        assert!(matches!(parse(b"?x\r\n", &mut 0), Err(ReadError::Reply(_))));
        assert!(matches!(parse(b"$3\r\nabcd\r\n", &mut 0), Err(ReadError::Reply(_))));
        assert!(matches!(parse(b"*x\r\n", &mut 0), Err(ReadError::Reply(_))));
        assert!(matches!(parse(b"$9223372036854775807\r\n", &mut 0), Err(ReadError::Reply(ref m)) if m.contains("bulk string")));
        assert!(matches!(parse(b"*9223372036854775807\r\n", &mut 0), Err(ReadError::Reply(ref m)) if m.contains("array")));
    }

    #[test]
    fn a_silent_or_closing_peer_ends_the_exchange_with_its_error() {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let read = multi_read(&layout(&[("a", 0, 1)]), &["m0".into()]).unwrap();

        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let refused = read.exchange(ours.as_raw_fd(), Some(Duration::from_millis(50))).unwrap_err();
        assert_eq!(refused, ReadError::Timeout(0.05));
        let mut sent = vec![0u8; read.payload.len()];
        theirs.read_exact(&mut sent).unwrap();
        assert_eq!(sent, read.payload);

        drop(theirs);
        let refused = read.exchange(ours.as_raw_fd(), Some(Duration::from_secs(1))).unwrap_err();
        assert!(matches!(refused, ReadError::Io(_)), "{refused:?}");
    }

    #[test]
    fn an_answer_arriving_in_pieces_is_read_whole() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let read = multi_read(&layout(&[("a", 0, 1)]), &["m0".into()]).unwrap();
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let answer = format!("+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n*0\r\n*1\r\n{}", bulk_reply("v"));
        let writer = std::thread::spawn(move || {
            for piece in answer.as_bytes().chunks(3) {
                theirs.write_all(piece).unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
            theirs
        });
        let got = read.exchange(ours.as_raw_fd(), Some(Duration::from_secs(5))).unwrap();
        assert_eq!(got.found, vec![(1, b"v".to_vec())]);
        drop(writer.join().unwrap());
    }
}
