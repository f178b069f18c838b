//! Whose is the leader lock: the Redis commands each instance sends, read on the wire.
//!
//! A real service's lock value is its own (`"<pid>-<uuid>"` for redis-py's `Lock`, a random
//! token for Redlock and redsync), so the harness cannot name the value before the run. It
//! learns it instead: the target and its standby reach Redis through different proxies, and a
//! [`LockTap`] on each reads the RESP commands that pass. A `SET` (or `SETNX`, `GETSET`,
//! `SETEX`, `PSETEX`) of the leader key on the standby's proxy names a standby value; one seen
//! only on the shared proxy, the target's. Scripts that name the key (`EVAL`, `EVALSHA`,
//! `FCALL`) are kept too: their arguments are how a lock is extended or released by token.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Which proxy a command came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The shared proxy: the target's commands, and (chained behind its own proxy) the
    /// standby's.
    Shared,
    /// The standby's own proxy.
    Standby,
}

/// One command that named the leader key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyCommand {
    pub at: Instant,
    pub side: Side,
    /// The command's name, upper case (`SET`, `DEL`, `EVALSHA`).
    pub name: String,
    /// The value written (`SET` and its kin), or a script's arguments.
    pub values: Vec<String>,
    /// What the server answered.
    pub written: Written,
}

/// Whether a write took effect, from the server's reply: `SET ... NX` answers nil when the
/// key was held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    Yes,
    No,
    /// No reply matched to it (yet): in a transaction, a link in subscribe mode, a link cut.
    Unknown,
}

impl KeyCommand {
    /// Whether it removes the key.
    fn deletes(&self) -> bool {
        matches!(
            self.name.as_str(),
            "DEL" | "UNLINK" | "GETDEL" | "RENAME" | "RENAMENX" | "MOVE"
        )
    }

    /// Whether it may change the key's value without naming the new one.
    fn changes(&self) -> bool {
        !self.deletes() && !matches!(self.name.as_str(), "EXPIRE" | "PEXPIRE" | "PERSIST")
    }

    /// Whether it is a write of `value` to the key (taken or not).
    fn sets(&self, value: &str) -> bool {
        matches!(
            self.name.as_str(),
            "SET" | "SETNX" | "GETSET" | "SETEX" | "PSETEX"
        ) && self.values.first().map(String::as_str) == Some(value)
    }
}

/// How large a link's unparsed bytes may grow before the tap stops reading that link (a
/// multi-megabyte value in flight); the link's commands are then not seen, and said so.
const MAX_PENDING: usize = 16 << 20;

/// A link's replies still to come, oldest first: for each command sent, the index of its
/// entry in `commands` if it named the key.
#[derive(Default)]
struct Replies {
    awaited: VecDeque<Option<usize>>,
    pending: Vec<u8>,
    /// Replies no longer follow commands one to one (subscribe mode): stop matching.
    unmatched: bool,
}

#[derive(Default)]
struct State {
    /// Each link's database, where it sent `SELECT` (0 before).
    dbs: HashMap<(u8, u64), i64>,
    pending: HashMap<(u8, u64), Vec<u8>>,
    replies: HashMap<(u8, u64), Replies>,
    /// Links given up on: bytes that are not RESP, or too much at once.
    lost: Vec<(u8, u64)>,
    commands: Vec<KeyCommand>,
}

/// Reads the commands that name `key` from every link of the proxies it observes.
pub struct LockTap {
    key: Vec<u8>,
    /// The database the key is watched in: commands sent in another are about another key.
    db: i64,
    state: Mutex<State>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LockTap {
    /// A tap for `key` in database `db`.
    pub fn new(key: &str, db: i64) -> Arc<LockTap> {
        Arc::new(LockTap {
            key: key.as_bytes().to_vec(),
            db,
            state: Mutex::new(State::default()),
        })
    }

    /// An observer for one proxy, whose commands count as `side`'s.
    pub fn side(self: &Arc<Self>, side: Side) -> Arc<dyn crate::fault::Observer> {
        Arc::new(Labelled {
            tap: self.clone(),
            side,
        })
    }

    /// Every command seen that named the key, in the order seen, and how many links could
    /// not be read.
    pub fn commands(&self) -> (Vec<KeyCommand>, usize) {
        let state = lock(&self.state);
        (state.commands.clone(), state.lost.len())
    }

    /// Whether `side` was seen writing `value` to the key, and the server took it.
    pub fn wrote(&self, side: Side, value: &str) -> bool {
        lock(&self.state)
            .commands
            .iter()
            .any(|c| c.side == side && c.sets(value) && c.written == Written::Yes)
    }

    fn bytes(&self, side: Side, link: u64, bytes: &[u8]) {
        let at = Instant::now();
        let id = (side as u8, link);
        let mut state = lock(&self.state);
        if state.lost.contains(&id) {
            return;
        }
        let mut buffer = state.pending.remove(&id).unwrap_or_default();
        buffer.extend_from_slice(bytes);
        let mut used = 0;
        loop {
            match parse(&buffer[used..]) {
                Ok(Some((args, len))) => {
                    used += len;
                    // An empty command gets no reply: no slot for one.
                    let Some(first) = args.first() else {
                        continue;
                    };
                    let name = first.to_ascii_uppercase();
                    if name == b"SELECT"
                        && let Some(db) = args
                            .get(1)
                            .and_then(|a| std::str::from_utf8(a).ok()?.parse().ok())
                    {
                        state.dbs.insert(id, db);
                    }
                    let here = state.dbs.get(&id).copied().unwrap_or(0) == self.db;
                    let about = here.then(|| self.about_key(&args)).flatten();
                    let index = about.map(|(name, values)| {
                        state.commands.push(KeyCommand {
                            at,
                            side,
                            name,
                            values,
                            written: Written::Unknown,
                        });
                        state.commands.len() - 1
                    });
                    let replies = state.replies.entry(id).or_default();
                    if matches!(
                        name.as_slice(),
                        b"SUBSCRIBE" | b"PSUBSCRIBE" | b"SSUBSCRIBE" | b"MONITOR"
                    ) {
                        replies.unmatched = true;
                    }
                    if !replies.unmatched {
                        replies.awaited.push_back(index);
                    }
                }
                Ok(None) => break,
                Err(()) => {
                    state.lost.push(id);
                    return;
                }
            }
        }
        buffer.drain(..used);
        if buffer.len() > MAX_PENDING {
            state.lost.push(id);
        } else if !buffer.is_empty() {
            state.pending.insert(id, buffer);
        }
    }

    fn reply_bytes(&self, side: Side, link: u64, bytes: &[u8]) {
        let id = (side as u8, link);
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        let Some(replies) = state.replies.get_mut(&id) else {
            return;
        };
        if replies.unmatched {
            return;
        }
        replies.pending.extend_from_slice(bytes);
        let mut used = 0;
        loop {
            match reply(&replies.pending[used..]) {
                Ok(Some((answer, len))) => {
                    used += len;
                    if answer == Reply::Push {
                        continue;
                    }
                    let Some(awaited) = replies.awaited.pop_front() else {
                        // A reply to nothing sent: the link is not what the tap thinks.
                        replies.unmatched = true;
                        return;
                    };
                    if let Some(command) = awaited.and_then(|i| state.commands.get_mut(i)) {
                        command.written = match (command.name.as_str(), answer) {
                            (_, Reply::Ok) => Written::Yes,
                            ("SETNX", Reply::Int(n)) => {
                                [Written::No, Written::Yes][(n == 1) as usize]
                            }
                            ("GETSET", Reply::Bulk | Reply::Nil) => Written::Yes,
                            ("DEL" | "UNLINK", Reply::Int(n)) => {
                                [Written::No, Written::Yes][(n > 0) as usize]
                            }
                            ("GETDEL", Reply::Bulk) => Written::Yes,
                            (_, Reply::Nil | Reply::Error) => Written::No,
                            _ => Written::Unknown,
                        };
                    }
                }
                Ok(None) => break,
                Err(()) => {
                    replies.unmatched = true;
                    return;
                }
            }
        }
        replies.pending.drain(..used);
        if replies.pending.len() > MAX_PENDING {
            replies.unmatched = true;
        }
    }

    /// The command's name and what it wrote, if it names the key.
    fn about_key(&self, args: &[Vec<u8>]) -> Option<(String, Vec<String>)> {
        let name = String::from_utf8_lossy(args.first()?).to_ascii_uppercase();
        let text = |b: &Vec<u8>| String::from_utf8_lossy(b).into_owned();
        let is_key = |i: usize| args.get(i).is_some_and(|a| *a == self.key);
        match name.as_str() {
            "SET" | "SETNX" | "GETSET" if is_key(1) => {
                Some((name, args.get(2).map(text).into_iter().collect()))
            }
            "SETEX" | "PSETEX" if is_key(1) => {
                Some((name, args.get(3).map(text).into_iter().collect()))
            }
            "DEL" | "UNLINK" if args[1..].contains(&self.key) => Some((name, Vec::new())),
            // What changes the key's value without naming the new one: its writer is who sent
            // the last of these before the value was seen.
            "APPEND" | "SETRANGE" | "INCR" | "INCRBY" | "INCRBYFLOAT" | "DECR" | "DECRBY"
            | "GETDEL" | "RESTORE" | "EXPIRE" | "PEXPIRE" | "PERSIST"
                if is_key(1) =>
            {
                Some((name, Vec::new()))
            }
            "RENAME" | "RENAMENX" | "COPY" | "MOVE" if is_key(1) || is_key(2) => {
                Some((name, Vec::new()))
            }
            "EVAL" | "EVALSHA" | "EVAL_RO" | "EVALSHA_RO" | "FCALL" | "FCALL_RO" => {
                let count: usize = std::str::from_utf8(args.get(2)?).ok()?.parse().ok()?;
                let keys = args.get(3..3 + count)?;
                keys.contains(&self.key)
                    .then(|| (name, args[3 + count..].iter().map(text).collect()))
            }
            _ => None,
        }
    }

    fn closed(&self, side: Side, link: u64) {
        let mut state = lock(&self.state);
        state.pending.remove(&(side as u8, link));
        state.replies.remove(&(side as u8, link));
        state.dbs.remove(&(side as u8, link));
    }
}

struct Labelled {
    tap: Arc<LockTap>,
    side: Side,
}

impl crate::fault::Observer for Labelled {
    fn client_bytes(&self, link: u64, bytes: &[u8]) {
        self.tap.bytes(self.side, link, bytes);
    }

    fn server_bytes(&self, link: u64, bytes: &[u8]) {
        self.tap.reply_bytes(self.side, link, bytes);
    }

    fn closed(&self, link: u64) {
        self.tap.closed(self.side, link);
    }
}

/// What a reply says, as far as a write's outcome goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reply {
    /// `+OK`.
    Ok,
    /// A nil (`$-1`, `*-1`, `_`).
    Nil,
    Error,
    Int(i64),
    /// A bulk string.
    Bulk,
    /// Anything else: another simple string (`+QUEUED`), an aggregate, a double.
    Other,
    /// A RESP3 push, which answers no command.
    Push,
}

/// One server reply at the start of `buf` and its length, `None` while it is incomplete.
fn reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, ()> {
    let Some(kind) = buf.first() else {
        return Ok(None);
    };
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = &buf[1..end];
    let after = end + 2;
    let count = || -> Result<i64, ()> {
        std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(())
    };
    match kind {
        b'+' if line == b"OK" => Ok(Some((Reply::Ok, after))),
        b'+' | b',' | b'#' | b'(' => Ok(Some((Reply::Other, after))),
        b'-' => Ok(Some((Reply::Error, after))),
        b'_' => Ok(Some((Reply::Nil, after))),
        b':' => Ok(Some((Reply::Int(count()?), after))),
        b'$' | b'!' | b'=' => {
            let len = count()?;
            if len < 0 {
                return Ok(Some((Reply::Nil, after)));
            }
            let total = after + len as usize + 2;
            if buf.len() < total {
                return Ok(None);
            }
            let answer = match kind {
                b'$' => Reply::Bulk,
                b'!' => Reply::Error,
                _ => Reply::Other,
            };
            Ok(Some((answer, total)))
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = count()?;
            if n < 0 {
                return Ok(Some((Reply::Nil, after)));
            }
            let items = if matches!(kind, b'%' | b'|') {
                n * 2
            } else {
                n
            };
            let mut at = after;
            for _ in 0..items {
                match reply(&buf[at..])? {
                    Some((_, len)) => at += len,
                    None => return Ok(None),
                }
            }
            match kind {
                // An attribute comes before the reply it describes.
                b'|' => Ok(reply(&buf[at..])?.map(|(answer, len)| (answer, at + len))),
                b'>' => Ok(Some((Reply::Push, at))),
                _ => Ok(Some((Reply::Other, at))),
            }
        }
        _ => Err(()),
    }
}

/// A command's arguments, its name first.
type Command = Vec<Vec<u8>>;

/// One client command at the start of `buf`: its arguments and its length in bytes, `None`
/// while it is incomplete, `Err` for bytes that are not a command. Clients send arrays of
/// bulk strings; an inline command (a line of words, as typed into a terminal) counts too.
fn parse(buf: &[u8]) -> Result<Option<(Command, usize)>, ()> {
    let Some(first) = buf.first() else {
        return Ok(None);
    };
    if *first != b'*' {
        let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        return Ok(Some((inline_words(&buf[..end])?, end + 2)));
    }
    let Some((count, mut at)) = number(buf, 1)? else {
        return Ok(None);
    };
    let mut args = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        match buf.get(at) {
            None => return Ok(None),
            Some(b'$') => {}
            Some(_) => return Err(()),
        }
        let Some((len, start)) = number(buf, at + 1)? else {
            return Ok(None);
        };
        let end = start + len;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(());
        }
        args.push(buf[start..end].to_vec());
        at = end + 2;
    }
    Ok(Some((args, at)))
}

/// An inline command's words, as Redis splits them: on spaces, with `"..."` (backslash
/// escapes, `\xHH` included) and `'...'` quoting.
fn inline_words(line: &[u8]) -> Result<Command, ()> {
    let mut words = Vec::new();
    let mut i = 0;
    while i < line.len() {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == line.len() {
            break;
        }
        let mut word = Vec::new();
        match line[i] {
            b'"' => {
                i += 1;
                loop {
                    match (line.get(i), line.get(i + 1)) {
                        (None, _) => return Err(()),
                        (Some(b'"'), _) => break,
                        (Some(b'\\'), Some(b'x')) => {
                            let hex = line.get(i + 2..i + 4).ok_or(())?;
                            let hex = std::str::from_utf8(hex).map_err(|_| ())?;
                            word.push(u8::from_str_radix(hex, 16).map_err(|_| ())?);
                            i += 4;
                        }
                        (Some(b'\\'), Some(c)) => {
                            word.push(match c {
                                b'n' => b'\n',
                                b'r' => b'\r',
                                b't' => b'\t',
                                b'b' => 8,
                                b'a' => 7,
                                c => *c,
                            });
                            i += 2;
                        }
                        (Some(c), _) => {
                            word.push(*c);
                            i += 1;
                        }
                    }
                }
                i += 1;
            }
            b'\'' => {
                i += 1;
                loop {
                    match (line.get(i), line.get(i + 1)) {
                        (None, _) => return Err(()),
                        (Some(b'\\'), Some(b'\'')) => {
                            word.push(b'\'');
                            i += 2;
                        }
                        (Some(b'\''), _) => break,
                        (Some(c), _) => {
                            word.push(*c);
                            i += 1;
                        }
                    }
                }
                i += 1;
            }
            _ => {
                while i < line.len() && !line[i].is_ascii_whitespace() {
                    word.push(line[i]);
                    i += 1;
                }
            }
        }
        words.push(word);
    }
    Ok(words)
}

/// The decimal number at `buf[at..]` up to `\r\n`, and where what follows starts.
fn number(buf: &[u8], at: usize) -> Result<Option<(usize, usize)>, ()> {
    let Some(rest) = buf.get(at..) else {
        return Ok(None);
    };
    let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
        return if rest.len() > 20 { Err(()) } else { Ok(None) };
    };
    let n = std::str::from_utf8(&rest[..end])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(())?;
    Ok(Some((n, at + end + 2)))
}

/// How long after a standby command its copy reaches the shared proxy (the standby's proxy
/// forwards at once; this is generous).
const ECHO: Duration = Duration::from_secs(1);

/// Who held the key at each change the watcher saw, learnt from the wire.
#[derive(Debug, Default)]
pub struct Attribution {
    /// For each change (the index of `Owners`), its holder.
    pub holders: Vec<Holder>,
    /// When the standby deleted (or renamed away) the key.
    pub standby_deletes: Vec<Instant>,
    /// What the wire says changed hands, whether or not the watcher saw it (a value written
    /// again by the next holder, a delete and a take within one look): each write and delete
    /// the server took, with its writer.
    pub events: Vec<(Instant, Holder)>,
    /// How the target's values were learnt, for the evidence.
    pub how: Vec<String>,
}

/// Who held the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    Nobody,
    Primary,
    Standby,
    /// A value no instance was seen writing.
    Unknown(String),
}

impl Holder {
    /// The instance's name, for one of the two.
    pub fn instance(&self) -> Option<&'static str> {
        match self {
            Holder::Primary => Some(crate::run::redis::PRIMARY),
            Holder::Standby => Some(crate::run::redis::STANDBY),
            Holder::Nobody | Holder::Unknown(_) => None,
        }
    }
}

impl Attribution {
    /// The holder of each change of `owners` (when the watcher saw it, and the value), from
    /// the commands the tap saw: the last write of that value the server took (or may have)
    /// before it was seen; else the last command that changed the key without naming a value
    /// (`APPEND`, a script); else, for a value first held while the target ran alone (after
    /// `first_read`, before `standby_from`), the target.
    pub fn learn(
        owners: &[(Instant, Option<String>)],
        commands: &[KeyCommand],
        lost: usize,
        first_read: Option<Instant>,
        standby_from: Option<Instant>,
    ) -> Attribution {
        let mut attribution = Attribution::default();
        // A shared command is the standby's if the standby sent its like just before.
        // Every standby command passes the shared proxy too: pair each with its copy there
        // (the same command, the same reply, soon after), each standby command with one copy.
        let mut sender: Vec<Side> = commands.iter().map(|c| c.side).collect();
        let mut paired = vec![false; commands.len()];
        for (i, c) in commands.iter().enumerate() {
            if c.side != Side::Shared {
                continue;
            }
            let copy_of = commands.iter().enumerate().position(|(j, d)| {
                !paired[j]
                    && d.side == Side::Standby
                    && d.name == c.name
                    && d.values == c.values
                    && d.written == c.written
                    && d.at <= c.at
                    && c.at.duration_since(d.at) <= ECHO
            });
            if let Some(j) = copy_of {
                paired[j] = true;
                sender[i] = Side::Standby;
            }
        }
        // Each command with who sent it.
        let sent: Vec<(&KeyCommand, Side)> = commands.iter().zip(sender).collect();
        let mut since = first_read;
        for (at, value) in owners {
            let previous = since.replace(*at);
            let Some(value) = value else {
                attribution.holders.push(Holder::Nobody);
                continue;
            };
            let before = sent.iter().filter(|(c, _)| c.at <= *at);
            let wrote = |written: Written| {
                before
                    .clone()
                    .rfind(|(c, _)| c.written == written && c.sets(value))
            };
            let changed = || {
                before
                    .clone()
                    .filter(|(c, _)| previous.is_none_or(|p| c.at > p))
                    .rfind(|(c, _)| c.written != Written::No && c.changes())
            };
            let (holder, how) = match wrote(Written::Yes).or_else(|| wrote(Written::Unknown)) {
                Some((c, side)) => (
                    Some(*side),
                    match c.written {
                        Written::Yes => format!(
                            "the target's `{}` of the key, which the server took",
                            c.name
                        ),
                        _ => format!("the target's `{}` of the key (its reply unseen)", c.name),
                    },
                ),
                None => match changed() {
                    Some((c, side)) => (
                        Some(*side),
                        format!(
                            "the target's `{}` on the key just before the value was seen",
                            c.name
                        ),
                    ),
                    None if first_read.is_some_and(|f| *at > f)
                        && standby_from.is_none_or(|s| *at < s) =>
                    {
                        (
                            Some(Side::Shared),
                            "held while only the target ran (no write of it seen)".to_owned(),
                        )
                    }
                    None => (None, String::new()),
                },
            };
            attribution.holders.push(match holder {
                Some(Side::Standby) => Holder::Standby,
                Some(Side::Shared) => {
                    let line = format!("`{}`: {how}", short(value));
                    if !attribution.how.contains(&line) {
                        attribution.how.push(line);
                    }
                    Holder::Primary
                }
                None => Holder::Unknown(value.clone()),
            });
        }
        attribution.events = sent
            .iter()
            .filter(|(c, _)| c.written == Written::Yes)
            .filter_map(|(c, side)| {
                let holder = match side {
                    _ if c.deletes() => Holder::Nobody,
                    Side::Standby if c.values.first().is_some_and(|v| c.sets(v)) => Holder::Standby,
                    Side::Shared if c.values.first().is_some_and(|v| c.sets(v)) => Holder::Primary,
                    _ => return None,
                };
                Some((c.at, holder))
            })
            .collect();
        attribution.standby_deletes = sent
            .iter()
            .filter(|(c, side)| c.written != Written::No && c.deletes() && *side == Side::Standby)
            .map(|(c, _)| c.at)
            .collect();
        if lost > 0 {
            attribution
                .how
                .push(format!("{lost} connection(s) to Redis could not be read"));
        }
        attribution
    }
}

/// A value as evidence prints it: whole up to 40 characters.
pub fn short(value: &str) -> String {
    match value.char_indices().nth(40) {
        Some((at, _)) => format!("{}…", &value[..at]),
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(args: &[&str]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend(format!("${}\r\n{a}\r\n", a.len()).bytes());
        }
        out
    }

    #[test]
    fn commands_on_the_key_are_read_across_chunks_and_links() {
        let tap = LockTap::new("sched:leader", 0);
        let shared = tap.side(Side::Shared);
        let standby = tap.side(Side::Standby);
        // redis-py's Lock: SET name token NX PX ms, split mid-argument.
        let set = resp(&["SET", "sched:leader", "4242-9f1c", "NX", "PX", "5000"]);
        shared.client_bytes(1, &set[..13]);
        // Another link's traffic on other keys, interleaved.
        shared.client_bytes(2, &resp(&["LPUSH", "jobs", "x"]));
        shared.client_bytes(1, &set[13..]);
        // Its release: EVALSHA sha 1 name token.
        let mut both = resp(&["EVALSHA", "abc", "1", "sched:leader", "4242-9f1c"]);
        both.extend(resp(&["GET", "sched:leader"]));
        shared.client_bytes(1, &both);
        standby.client_bytes(1, b"SET sched:leader 77-aa NX PX 5000\r\n");
        let (commands, lost) = tap.commands();
        assert_eq!(lost, 0);
        let seen: Vec<_> = commands
            .iter()
            .map(|c| (c.side, c.name.as_str(), c.values.clone()))
            .collect();
        assert_eq!(
            seen,
            [
                (Side::Shared, "SET", vec!["4242-9f1c".to_owned()]),
                (Side::Shared, "EVALSHA", vec!["4242-9f1c".to_owned()]),
                (Side::Standby, "SET", vec!["77-aa".to_owned()]),
            ]
        );
    }

    /// A `SET ... NX` the server refused is no write: the standby that tried to take a held
    /// key does not own its value. Replies are matched to commands in order, a push between.
    #[test]
    fn replies_say_which_writes_took() {
        let tap = LockTap::new("k", 0);
        let standby = tap.side(Side::Standby);
        let mut sent = resp(&["SET", "k", "mine", "NX", "PX", "100"]);
        sent.extend(resp(&["GET", "other"]));
        sent.extend(resp(&["SET", "k", "mine", "NX", "PX", "100"]));
        sent.extend(resp(&["SETNX", "k", "again"]));
        standby.client_bytes(1, &sent);
        // nil; a bulk string in two pieces; a RESP3 push; OK; 0.
        standby.server_bytes(1, b"$-1\r\n$5\r\nhel");
        standby.server_bytes(1, b"lo\r\n>2\r\n$7\r\nmessage\r\n$1\r\nx\r\n+OK\r\n:0\r\n");
        let (commands, _) = tap.commands();
        let written: Vec<_> = commands.iter().map(|c| c.written).collect();
        assert_eq!(written, [Written::No, Written::Yes, Written::No]);
        assert!(tap.wrote(Side::Standby, "mine"));
        assert!(!tap.wrote(Side::Standby, "again"));
        // In subscribe mode replies stop following commands: outcomes stay unknown.
        standby.client_bytes(2, &resp(&["SUBSCRIBE", "ch"]));
        standby.client_bytes(2, &resp(&["SET", "k", "late"]));
        standby.server_bytes(2, b"+OK\r\n");
        assert_eq!(tap.commands().0[3].written, Written::Unknown);
    }

    #[test]
    fn bytes_that_are_not_resp_lose_the_link_not_the_tap() {
        let tap = LockTap::new("k", 0);
        let shared = tap.side(Side::Shared);
        shared.client_bytes(1, b"*2\r\n#nonsense\r\n");
        shared.client_bytes(1, &resp(&["SET", "k", "v"]));
        shared.client_bytes(2, &resp(&["SET", "k", "w"]));
        let (commands, lost) = tap.commands();
        assert_eq!(lost, 1);
        assert_eq!(commands.len(), 1);
        assert_eq!(commands[0].values, ["w"]);
    }

    fn set(side: Side, at: Instant, value: &str, written: Written) -> KeyCommand {
        KeyCommand {
            at,
            side,
            name: "SET".into(),
            values: vec![value.into()],
            written,
        }
    }

    /// Each change is the last taken write's before it: the standby's copy on the shared
    /// proxy stays the standby's, a refused write is no one's, and one value written by both
    /// at different times (a constant lock value) is each one's in turn.
    #[test]
    fn each_change_belongs_to_the_write_before_it() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let commands = [
            set(Side::Shared, at(8), "1", Written::Yes),
            set(Side::Standby, at(300), "1", Written::No),
            set(Side::Shared, at(301), "1", Written::No),
            // The target's APPEND at the stop: a value no SET names.
            KeyCommand {
                at: at(1_000),
                side: Side::Shared,
                name: "APPEND".into(),
                values: Vec::new(),
                written: Written::Unknown,
            },
            set(Side::Standby, at(1_500), "1", Written::Yes),
            set(Side::Shared, at(1_501), "1", Written::Yes),
            KeyCommand {
                at: at(1_490),
                side: Side::Standby,
                name: "DEL".into(),
                values: Vec::new(),
                written: Written::Unknown,
            },
        ];
        let owners = [
            (at(0), Some("left-over".to_owned())),
            (at(10), Some("1".to_owned())),
            (at(1_010), Some("1:draining".to_owned())),
            (at(1_495), None),
            (at(1_510), Some("1".to_owned())),
            (at(1_600), Some("scripted".to_owned())),
        ];
        let a = Attribution::learn(&owners, &commands, 0, Some(at(0)), Some(at(200)));
        assert_eq!(
            a.holders,
            [
                Holder::Unknown("left-over".into()),
                Holder::Primary,
                Holder::Primary,
                Holder::Nobody,
                Holder::Standby,
                Holder::Unknown("scripted".into()),
            ]
        );
        assert_eq!(a.standby_deletes, [at(1_490)]);
        assert!(a.how.iter().any(|h| h.contains("`APPEND`")), "{:?}", a.how);
        // Held while the target ran alone, no write seen: the target's.
        let alone = Attribution::learn(&owners[..2], &[], 0, Some(at(5)), Some(at(200)));
        assert_eq!(
            alone.holders,
            [Holder::Unknown("left-over".into()), Holder::Primary]
        );
    }

    /// What Redis reads differently from a naive tap: an empty command (no reply, so no reply
    /// slot: the replies after it stay matched), another database, quoted inline words.
    #[test]
    fn empty_commands_other_databases_and_quotes_are_read_as_redis_reads_them() {
        let tap = LockTap::new("k", 0);
        let link = tap.side(Side::Standby);
        let mut sent = b"*0\r\n".to_vec();
        sent.extend(resp(&["SET", "k", "mine", "NX"]));
        sent.extend(resp(&["SET", "other", "1"]));
        link.client_bytes(1, &sent);
        link.server_bytes(1, b"$-1\r\n+OK\r\n");
        assert_eq!(tap.commands().0[0].written, Written::No);
        // SELECT 1, then the same key: another key.
        link.client_bytes(2, &resp(&["SELECT", "1"]));
        link.client_bytes(2, &resp(&["SET", "k", "elsewhere"]));
        link.server_bytes(2, b"+OK\r\n+OK\r\n");
        assert_eq!(tap.commands().0.len(), 1);
        link.client_bytes(3, b"SET \"k\" 'kept inline' PX 60000\r\n");
        link.server_bytes(3, b"+OK\r\n");
        let (commands, lost) = tap.commands();
        assert_eq!(lost, 0);
        assert_eq!(commands[1].values, ["kept inline"]);
        assert_eq!(commands[1].written, Written::Yes);
        assert_eq!(
            inline_words(b"SET \"a\\x41\\\"b\" c").unwrap(),
            [b"SET".to_vec(), b"aA\"b".to_vec(), b"c".to_vec()]
        );
    }
}
