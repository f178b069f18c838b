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
    /// The own proxy of a service graph's instance, by its index among the graph's instances:
    /// no other instance's commands pass it.
    Instance(u32),
}

impl Side {
    /// A number of its own, to key the links it carries.
    fn id(self) -> u64 {
        match self {
            Side::Shared => 0,
            Side::Standby => 1,
            Side::Instance(k) => 2 + u64::from(k),
        }
    }
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
    /// A write that only takes an absent key (`SET ... NX`, `SETNX`): taken, it proves the key
    /// was gone first.
    pub only_if_absent: bool,
    /// The server's integer answer, if it gave one (a release script's count of deletes).
    pub answer: Option<i64>,
    /// When the tap read the server's answer: the server ran the command between `at` and
    /// this (a loaded harness forwards a command it has read later than it read it).
    pub answered: Option<Instant>,
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
    /// Learns from the server's answer to it, read at `now`.
    fn answered_by(&mut self, answer: Reply, now: Instant) {
        self.answered = Some(now);
        if let Reply::Int(n) = answer {
            self.answer = Some(n);
        }
        self.written = match (self.name.as_str(), answer) {
            (_, Reply::Ok) => Written::Yes,
            ("SETNX", Reply::Int(n)) => [Written::No, Written::Yes][(n == 1) as usize],
            ("GETSET", Reply::Bulk | Reply::Nil) => Written::Yes,
            ("DEL" | "UNLINK", Reply::Int(n)) => [Written::No, Written::Yes][(n > 0) as usize],
            ("GETDEL", Reply::Bulk) => Written::Yes,
            (_, Reply::Nil | Reply::Error) => Written::No,
            _ => Written::Unknown,
        };
    }

    /// By when the server had run it: its answer, or its send when no answer was read.
    fn ran_by(&self) -> Instant {
        self.answered.unwrap_or(self.at).max(self.at)
    }

    /// Whether it removes the key.
    fn deletes(&self) -> bool {
        matches!(
            self.name.as_str(),
            "DEL" | "UNLINK" | "GETDEL" | "RENAME" | "RENAMENX" | "MOVE"
        )
    }

    /// Whether it is a script that may write the key (a lock's release by its token).
    fn scripted(&self) -> bool {
        matches!(self.name.as_str(), "EVAL" | "EVALSHA" | "FCALL")
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

/// A link's replies still to come, oldest first: for each command sent, what its reply answers.
#[derive(Default)]
struct Replies {
    awaited: VecDeque<Awaited>,
    pending: Vec<u8>,
    /// Replies no longer follow commands one to one (subscribe mode): stop matching.
    unmatched: bool,
}

/// What one reply answers: each holds the index in `commands` of the commands that named the key.
enum Awaited {
    /// A command run when sent.
    Ran(Option<usize>),
    /// A command queued in a transaction (`MULTI`): its reply says only whether it was queued.
    Queued(Option<usize>),
    /// `EXEC`: one reply per queued command, or nil (a `WATCH`ed key changed) or an error
    /// (a command could not be queued) for none run.
    Exec(Vec<Option<usize>>),
}

#[derive(Default)]
struct State {
    /// Each link's database, where it sent `SELECT` (0 before).
    dbs: HashMap<(u64, u64), i64>,
    pending: HashMap<(u64, u64), Vec<u8>>,
    replies: HashMap<(u64, u64), Replies>,
    /// The links in a transaction, with the commands they queued since `MULTI`.
    queued: HashMap<(u64, u64), Vec<Option<usize>>>,
    /// Links given up on: bytes that are not RESP, or too much at once.
    lost: Vec<(u64, u64)>,
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

    /// Every command seen that named the key, in the order sent (a transaction's at its
    /// `EXEC`), and how many links could not be read.
    pub fn commands(&self) -> (Vec<KeyCommand>, usize) {
        let state = lock(&self.state);
        let mut commands = state.commands.clone();
        commands.sort_by_key(|c| c.at);
        (commands, state.lost.len())
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
        let id = (side.id(), link);
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
                    let only_if_absent = name == b"SETNX"
                        || (name == b"SET"
                            && args.iter().skip(3).any(|a| a.eq_ignore_ascii_case(b"NX")));
                    let index = about.map(|(name, values)| {
                        state.commands.push(KeyCommand {
                            at,
                            side,
                            name,
                            values,
                            written: Written::Unknown,
                            only_if_absent,
                            answer: None,
                            answered: None,
                        });
                        state.commands.len() - 1
                    });
                    // A transaction's commands run at its `EXEC`, or never.
                    let awaited = match (name.as_slice(), state.queued.remove(&id)) {
                        // `MULTI` with arguments is refused: no transaction begins.
                        (b"MULTI", queued) if args.len() == 1 => {
                            state.queued.insert(id, queued.unwrap_or_default());
                            Awaited::Ran(None)
                        }
                        (b"EXEC", Some(queued)) => {
                            for i in queued.iter().flatten() {
                                state.commands[*i].at = at;
                            }
                            Awaited::Exec(queued)
                        }
                        (b"DISCARD" | b"RESET", Some(queued)) => {
                            for i in queued.iter().flatten() {
                                state.commands[*i].written = Written::No;
                            }
                            Awaited::Ran(None)
                        }
                        // Not queued: run at once (or refused), though in a transaction.
                        (b"WATCH" | b"MULTI" | b"EXEC" | b"DISCARD", queued) => {
                            if let Some(queued) = queued {
                                state.queued.insert(id, queued);
                            }
                            Awaited::Ran(index)
                        }
                        (_, Some(mut queued)) => {
                            queued.push(index);
                            state.queued.insert(id, queued);
                            Awaited::Queued(index)
                        }
                        (_, None) => Awaited::Ran(index),
                    };
                    let replies = state.replies.entry(id).or_default();
                    if matches!(
                        name.as_slice(),
                        b"SUBSCRIBE" | b"PSUBSCRIBE" | b"SSUBSCRIBE" | b"MONITOR"
                    ) {
                        replies.unmatched = true;
                    }
                    if !replies.unmatched {
                        replies.awaited.push_back(awaited);
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
        let id = (side.id(), link);
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
                    let now = Instant::now();
                    let commands = &mut state.commands;
                    match awaited {
                        Awaited::Ran(index) => {
                            if let Some(command) = index.and_then(|i| commands.get_mut(i)) {
                                command.answered_by(answer, now);
                            }
                        }
                        // Refused in the queue: the `EXEC` will run nothing.
                        Awaited::Queued(index) => {
                            if let Some(command) = index.and_then(|i| commands.get_mut(i))
                                && answer == Reply::Error
                            {
                                command.written = Written::No;
                            }
                        }
                        Awaited::Exec(queued) => {
                            let each = match answer {
                                Reply::Nil | Reply::Error => Vec::new(),
                                _ => match items(&replies.pending[used - len..used]) {
                                    Some(each) => each,
                                    None => {
                                        replies.unmatched = true;
                                        return;
                                    }
                                },
                            };
                            for (n, index) in queued.into_iter().enumerate() {
                                let Some(command) = index.and_then(|i| commands.get_mut(i)) else {
                                    continue;
                                };
                                match each.get(n) {
                                    Some(answer) => command.answered_by(*answer, now),
                                    None => {
                                        command.written = Written::No;
                                        command.answered = Some(now);
                                    }
                                }
                            }
                        }
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
        let id = (side.id(), link);
        state.pending.remove(&id);
        state.replies.remove(&id);
        state.dbs.remove(&id);
        // A transaction cut off before its `EXEC` runs nothing.
        for i in state.queued.remove(&id).into_iter().flatten().flatten() {
            state.commands[i].written = Written::No;
        }
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

/// The items of the array reply that is all of `buf` (an `EXEC`'s, one per queued command);
/// `None` if it is no array.
fn items(buf: &[u8]) -> Option<Vec<Reply>> {
    if buf.first() != Some(&b'*') {
        return None;
    }
    let end = buf.windows(2).position(|w| w == b"\r\n")?;
    let n: usize = std::str::from_utf8(&buf[1..end]).ok()?.parse().ok()?;
    let mut at = end + 2;
    let mut each = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let (answer, len) = reply(&buf[at..]).ok()??;
        each.push(answer);
        at += len;
    }
    Some(each)
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
    /// Every delete (or rename away) the server took or may have, with who sent it.
    pub deletes: Vec<(Instant, Holder)>,
    /// Every command that let go of the key: a delete the server took (or may have), or a
    /// script naming it that answered a count of one or more (a release by token answers how
    /// many keys it deleted; one that deleted nothing answers 0), with its sender and name.
    pub lets_go: Vec<(Instant, Holder, String)>,
    /// Every write of a value the server took: when it was sent, its writer, whether it could
    /// take only an absent key (`SET ... NX`, whose take proves the key had gone first; any
    /// other write is an overwrite), and when its answer came (the server took it by then).
    pub takes: Vec<(Instant, Holder, bool, Instant)>,
    /// What the wire says changed hands, whether or not the watcher saw it (a value written
    /// again by the next holder, a delete and a take within one look): each write and delete
    /// the server took, with its writer, and when its answer came (it had run by then).
    pub events: Vec<(Instant, Holder, Instant)>,
    /// How the target's values were learnt, for the evidence.
    pub how: Vec<String>,
}

/// Who held the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    Nobody,
    Primary,
    Standby,
    /// An instance of a service graph, by name (`scheduler#2`).
    Instance(String),
    /// A value no instance was seen writing.
    Unknown(String),
}

impl Holder {
    /// The instance's name, for one the harness started.
    pub fn instance(&self) -> Option<&str> {
        match self {
            Holder::Primary => Some(crate::run::redis::PRIMARY),
            Holder::Standby => Some(crate::run::redis::STANDBY),
            Holder::Instance(name) => Some(name),
            Holder::Nobody | Holder::Unknown(_) => None,
        }
    }
}

/// Who the commands' senders are.
#[derive(Clone, Copy, Debug)]
pub enum Writers<'a> {
    /// A target on the shared proxy, and a standby started at this time (if it was) behind a
    /// proxy of its own.
    Pair { standby_from: Option<Instant> },
    /// A service graph's instances, each behind a proxy of its own, named by their index.
    Instances(&'a [String]),
}

impl Writers<'_> {
    /// Who sent a command seen on `side`.
    fn holder(&self, side: Side) -> Holder {
        match (side, self) {
            (Side::Shared, _) => Holder::Primary,
            (Side::Standby, _) => Holder::Standby,
            (Side::Instance(k), Writers::Instances(names)) => match names.get(k as usize) {
                Some(name) => Holder::Instance(name.clone()),
                None => Holder::Instance(format!("instance {k}")),
            },
            (Side::Instance(k), Writers::Pair { .. }) => Holder::Instance(format!("instance {k}")),
        }
    }

    /// Whose a command seen on `side` was, as evidence says it.
    fn whose(&self, side: Side) -> String {
        match self.holder(side) {
            Holder::Primary => "the target's".to_owned(),
            Holder::Standby => "the standby's".to_owned(),
            other => format!("`{}`'s", other.instance().unwrap_or_default()),
        }
    }
}

impl Attribution {
    /// The holder of each change of `owners` (when the watcher saw it, and the value), from
    /// the commands the tap saw: the last write of that value the server took (or may have)
    /// before it was seen; else the last command that changed the key without naming a value
    /// (`APPEND`, a script); else, for a pair, a value first held while the target ran alone
    /// (after `first_read`, before the standby started), the target.
    pub fn learn(
        owners: &[(Instant, Option<String>)],
        commands: &[KeyCommand],
        lost: usize,
        first_read: Option<Instant>,
        writers: Writers<'_>,
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
        // Each command with who sent it, once: a standby command paired with its copy is
        // counted by the copy, which is what reached the server (and its answer the first
        // sign the server ran it). Counted twice, a take seen on the standby's proxy before
        // the watcher saw the key gone, and on the shared one after, split the hand-over in
        // two, and the key's expiry read as a hold kept past the deadline.
        let sent: Vec<(&KeyCommand, Side)> = (commands.iter().zip(sender).zip(paired))
            .filter(|(_, paired)| !paired)
            .map(|(sent, _)| sent)
            .collect();
        let alone_until = match writers {
            Writers::Pair { standby_from } => Some(standby_from),
            Writers::Instances(_) => None,
        };
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
                            "{} `{}` of the key, which the server took",
                            writers.whose(*side),
                            c.name
                        ),
                        _ => format!(
                            "{} `{}` of the key (its reply unseen)",
                            writers.whose(*side),
                            c.name
                        ),
                    },
                ),
                None => match changed() {
                    Some((c, side)) => (
                        Some(*side),
                        format!(
                            "{} `{}` on the key just before the value was seen",
                            writers.whose(*side),
                            c.name
                        ),
                    ),
                    None if first_read.is_some_and(|f| *at > f)
                        && alone_until.is_some_and(|s| s.is_none_or(|s| *at < s)) =>
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
                Some(side) => {
                    let line = format!("`{}`: {how}", short(value));
                    if !attribution.how.contains(&line) {
                        attribution.how.push(line);
                    }
                    writers.holder(side)
                }
                None => Holder::Unknown(value.clone()),
            });
        }
        attribution.events = sent
            .iter()
            .filter(|(c, _)| c.written == Written::Yes)
            .filter_map(|(c, side)| {
                let answered = c.ran_by();
                if c.deletes() {
                    return Some((c.at, Holder::Nobody, answered));
                }
                c.values
                    .first()
                    .is_some_and(|v| c.sets(v))
                    .then(|| (c.at, writers.holder(*side), answered))
            })
            .collect();
        attribution.deletes = sent
            .iter()
            .filter(|(c, _)| c.written != Written::No && c.deletes())
            .map(|(c, side)| (c.at, writers.holder(*side)))
            .collect();
        attribution.lets_go = sent
            .iter()
            .filter(|(c, _)| {
                (c.written != Written::No && c.deletes())
                    || (c.scripted() && c.answer.is_some_and(|n| n >= 1))
            })
            .map(|(c, side)| (c.at, writers.holder(*side), c.name.clone()))
            .collect();
        attribution.takes = sent
            .iter()
            .filter(|(c, _)| {
                c.written == Written::Yes && c.values.first().is_some_and(|v| c.sets(v))
            })
            .map(|(c, side)| (c.at, writers.holder(*side), c.only_if_absent, c.ran_by()))
            .collect();
        attribution.standby_deletes = (attribution.deletes.iter())
            .filter(|(_, h)| *h == Holder::Standby)
            .map(|(at, _)| *at)
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
        // Which writes need the key gone; which release scripts deleted it.
        let (commands, _) = tap.commands();
        let nx: Vec<_> = commands.iter().map(|c| c.only_if_absent).collect();
        assert_eq!(nx, [true, true, true, false]);
        let instance = tap.side(Side::Instance(0));
        let mut sent = resp(&["EVALSHA", "f00", "1", "k", "token"]);
        sent.extend(resp(&["EVALSHA", "f00", "1", "k", "token"]));
        sent.extend(resp(&["SET", "k", "v", "nx", "px", "100"]));
        instance.client_bytes(3, &sent);
        instance.server_bytes(3, b":0\r\n:1\r\n+OK\r\n");
        let (commands, _) = tap.commands();
        let answers: Vec<_> = commands[4..].iter().map(|c| c.answer).collect();
        assert_eq!(answers, [Some(0), Some(1), None]);
        assert!(commands[6].only_if_absent, "nx in any case");
        let names = ["s".to_owned()];
        let a = Attribution::learn(&[], &commands, 0, None, Writers::Instances(&names));
        // The script that deleted nothing is no release.
        assert_eq!(a.lets_go.len(), 1, "{:?}", a.lets_go);
        assert_eq!(a.lets_go[0].0, commands[5].at);
        assert_eq!(a.takes.last().map(|t| t.2), Some(true));
    }

    /// A transaction's commands run at its `EXEC`, by what the `EXEC` answers, or never: a
    /// `DEL` queued and discarded, or cut off by a `WATCH`, or by the link's close, lets
    /// nothing go, though it was answered `+QUEUED`; one run is dated no earlier than the
    /// `EXEC`, and a release script run in one is a let-go.
    #[test]
    fn a_transaction_runs_its_commands_at_exec_or_never() {
        let tap = LockTap::new("k", 0);
        let instance = tap.side(Side::Instance(0));
        let mut sent = resp(&["MULTI"]);
        sent.extend(resp(&["DEL", "k"]));
        sent.extend(resp(&["DISCARD"]));
        sent.extend(resp(&["WATCH", "k"]));
        sent.extend(resp(&["MULTI"]));
        sent.extend(resp(&["DEL", "k"]));
        sent.extend(resp(&["EXEC"]));
        sent.extend(resp(&["MULTI"]));
        sent.extend(resp(&["SET", "k", "v", "NX", "BAD"]));
        sent.extend(resp(&["EXEC"]));
        // A refused MULTI begins nothing: the DEL runs at once; UNWATCH is queued like any
        // other command, so the DEL's answer is the second item of the EXEC's.
        sent.extend(resp(&["MULTI", "junk"]));
        sent.extend(resp(&["DEL", "k"]));
        sent.extend(resp(&["MULTI"]));
        sent.extend(resp(&["UNWATCH"]));
        sent.extend(resp(&["DEL", "k"]));
        sent.extend(resp(&["EXEC"]));
        instance.client_bytes(1, &sent);
        instance.server_bytes(
            1,
            b"+OK\r\n+QUEUED\r\n+OK\r\n+OK\r\n+OK\r\n+QUEUED\r\n*-1\r\n+OK\r\n-ERR syntax\r\n-EXECABORT\r\n\
              -ERR wrong number of arguments\r\n:0\r\n+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n:0\r\n",
        );
        instance.client_bytes(2, &resp(&["MULTI"]));
        instance.client_bytes(2, &resp(&["DEL", "k"]));
        instance.server_bytes(2, b"+OK\r\n+QUEUED\r\n");
        instance.closed(2);
        let queued_at = Instant::now();
        let mut sent = resp(&["MULTI"]);
        sent.extend(resp(&["EVALSHA", "f00", "1", "k", "token"]));
        sent.extend(resp(&["GET", "other"]));
        sent.extend(resp(&["DEL", "k"]));
        instance.client_bytes(3, &sent);
        instance.server_bytes(3, b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n");
        let exec = Instant::now();
        assert!(exec > queued_at);
        instance.client_bytes(3, &resp(&["EXEC"]));
        let (commands, _) = tap.commands();
        assert!(
            commands[6..]
                .iter()
                .all(|c| c.at >= exec && c.answered.is_none())
        );
        instance.server_bytes(3, b"*3\r\n:1\r\n$-1\r\n:0\r\n");
        let (commands, lost) = tap.commands();
        assert_eq!(lost, 0);
        let seen: Vec<_> = commands
            .iter()
            .map(|c| (c.name.as_str(), c.written, c.answer))
            .collect();
        assert_eq!(
            seen,
            [
                ("DEL", Written::No, None),
                ("DEL", Written::No, None),
                ("SET", Written::No, None),
                ("DEL", Written::No, Some(0)),
                ("DEL", Written::No, Some(0)),
                ("DEL", Written::No, None),
                ("EVALSHA", Written::Unknown, Some(1)),
                ("DEL", Written::No, Some(0)),
            ]
        );
        assert!(commands[6].answered.is_some_and(|a| a >= exec));
        let names = ["s".to_owned()];
        let a = Attribution::learn(&[], &commands, 0, None, Writers::Instances(&names));
        // The script alone let go.
        let lets_go: Vec<_> = a.lets_go.iter().map(|l| l.2.as_str()).collect();
        assert_eq!(lets_go, ["EVALSHA"]);
        assert!(a.deletes.is_empty(), "{:?}", a.deletes);
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
            only_if_absent: true,
            answer: None,
            answered: None,
        }
    }

    /// Each change is the last taken write's before it: the standby's copy on the shared
    /// proxy stays the standby's, a refused write is no one's, and one value written by both
    /// at different times (a constant lock value) is each one's in turn.
    #[test]
    fn each_change_belongs_to_the_write_before_it() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let pair = |ms| Writers::Pair {
            standby_from: Some(at(ms)),
        };
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
                only_if_absent: false,
                answer: None,
                answered: None,
            },
            set(Side::Standby, at(1_500), "1", Written::Yes),
            set(Side::Shared, at(1_501), "1", Written::Yes),
            KeyCommand {
                at: at(1_490),
                side: Side::Standby,
                name: "DEL".into(),
                values: Vec::new(),
                written: Written::Unknown,
                only_if_absent: false,
                answer: None,
                answered: None,
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
        let a = Attribution::learn(&owners, &commands, 0, Some(at(0)), pair(200));
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
        let alone = Attribution::learn(&owners[..2], &[], 0, Some(at(5)), pair(200));
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

    /// A graph's contenders each on a proxy of their own: every write and delete is the
    /// sender's, by name; a value held with no write seen is nobody's known (no instance ran
    /// alone), and a write on no instance's link is not guessed.
    #[test]
    fn each_instance_on_its_own_link_owns_what_it_writes() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let names = ["store".to_owned(), "s#1".to_owned(), "s#2".to_owned()];
        let delete = |side, ms| KeyCommand {
            at: at(ms),
            side,
            name: "DEL".into(),
            values: Vec::new(),
            written: Written::Yes,
            only_if_absent: false,
            answer: Some(1),
            answered: None,
        };
        let commands = [
            set(Side::Instance(1), at(10), "a", Written::Yes),
            set(Side::Instance(2), at(11), "b", Written::No),
            delete(Side::Instance(2), 500),
            set(Side::Instance(2), at(510), "b", Written::Yes),
        ];
        let owners = [
            (at(5), Some("old".to_owned())),
            (at(12), Some("a".to_owned())),
            (at(505), None),
            (at(515), Some("b".to_owned())),
        ];
        let a = Attribution::learn(
            &owners,
            &commands,
            0,
            Some(at(0)),
            Writers::Instances(&names),
        );
        let named = |n: &str| Holder::Instance(n.to_owned());
        assert_eq!(
            a.holders,
            [
                Holder::Unknown("old".into()),
                named("s#1"),
                Holder::Nobody,
                named("s#2"),
            ]
        );
        assert_eq!(a.deletes, [(at(500), named("s#2"))]);
        assert_eq!(a.lets_go, [(at(500), named("s#2"), "DEL".to_owned())]);
        assert!(a.standby_deletes.is_empty());
        assert!(
            a.how.iter().any(|h| h.contains("`s#1`'s `SET` of the key")),
            "{:?}",
            a.how
        );
        // With no write seen, a value held after the first read is not the first instance's.
        let unseen = Attribution::learn(
            &owners[..2],
            &[],
            0,
            Some(at(0)),
            Writers::Instances(&names),
        );
        assert_eq!(
            unseen.holders,
            [Holder::Unknown("old".into()), Holder::Unknown("a".into())]
        );
    }
}
