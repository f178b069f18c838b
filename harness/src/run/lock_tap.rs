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
use std::time::Instant;

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
    pending: HashMap<(u8, u64), Vec<u8>>,
    replies: HashMap<(u8, u64), Replies>,
    /// Links given up on: bytes that are not RESP, or too much at once.
    lost: Vec<(u8, u64)>,
    commands: Vec<KeyCommand>,
}

/// Reads the commands that name `key` from every link of the proxies it observes.
pub struct LockTap {
    key: Vec<u8>,
    state: Mutex<State>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LockTap {
    pub fn new(key: &str) -> Arc<LockTap> {
        Arc::new(LockTap {
            key: key.as_bytes().to_vec(),
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
                    let index = self.about_key(&args).map(|(name, values)| {
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
                    let name = args.first().map(|a| a.to_ascii_uppercase());
                    if matches!(
                        name.as_deref(),
                        Some(b"SUBSCRIBE" | b"PSUBSCRIBE" | b"SSUBSCRIBE" | b"MONITOR")
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
            "DEL" | "UNLINK" | "EXPIRE" | "PEXPIRE" | "PERSIST"
                if args[1..].contains(&self.key) =>
            {
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
        let words = buf[..end]
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        return Ok(Some((words, end + 2)));
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

/// The holders of the leader key's values, learnt from the wire and, for a value written
/// where the tap could not see how (a script that computed it), from when it was first held.
#[derive(Debug, Default)]
pub struct Attribution {
    primary: Vec<String>,
    standby: Vec<String>,
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

impl Attribution {
    /// From the commands the tap saw. `first_held`: each value the key held, with when it
    /// was first seen; `standby_from`: when the standby started (values first held before it,
    /// during the run, are the target's); `run_from`: when the run started (a value held at
    /// the first read was an earlier run's, never attributed).
    pub fn learn(
        commands: &[KeyCommand],
        lost: usize,
        first_held: &[(Instant, String)],
        run_from: Option<Instant>,
        standby_from: Option<Instant>,
    ) -> Attribution {
        let mut attribution = Attribution::default();
        // How many writes of `value` through `side` had `written` as their outcome.
        let count = |value: &str, side: Side, written: Written| {
            commands
                .iter()
                .filter(|c| c.side == side && c.written == written && c.sets(value))
                .count()
        };
        for (first, value) in first_held {
            // Every standby command passes the shared proxy too: a write there is the
            // target's only if the standby's own do not account for it.
            let standby = |w| count(value, Side::Standby, w);
            let shared = |w| count(value, Side::Shared, w);
            let target = |w| shared(w) > standby(w);
            if standby(Written::Yes) > 0 {
                attribution.standby.push(value.clone());
            } else if target(Written::Yes)
                || (target(Written::Unknown) && standby(Written::Unknown) == 0)
            {
                attribution.how.push(format!(
                    "`{}`: the target's `SET` of the key, which the server took",
                    short(value)
                ));
                attribution.primary.push(value.clone());
            } else if standby(Written::Unknown) > 0 && !target(Written::Unknown) {
                attribution.standby.push(value.clone());
            } else if shared(Written::Unknown) > 0 {
                // Both tried, and neither outcome is known.
            } else if run_from.is_some_and(|from| *first > from)
                && standby_from.is_none_or(|standby| *first < standby)
            {
                attribution.how.push(format!(
                    "`{}`: held while only the target ran (no `SET` of it seen)",
                    short(value)
                ));
                attribution.primary.push(value.clone());
            }
        }
        if lost > 0 {
            attribution
                .how
                .push(format!("{lost} connection(s) to Redis could not be read"));
        }
        attribution
    }

    /// Values known to be the target's and the standby's, as a test states them.
    #[cfg(test)]
    pub fn known(primary: &[&str], standby: &[&str]) -> Attribution {
        Attribution {
            primary: primary.iter().map(|v| (*v).to_owned()).collect(),
            standby: standby.iter().map(|v| (*v).to_owned()).collect(),
            how: vec!["as the test states".to_owned()],
        }
    }

    pub fn holder(&self, value: &Option<String>) -> Holder {
        match value {
            None => Holder::Nobody,
            Some(v) if self.primary.contains(v) => Holder::Primary,
            Some(v) if self.standby.contains(v) => Holder::Standby,
            Some(v) => Holder::Unknown(v.clone()),
        }
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
        let tap = LockTap::new("sched:leader");
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
        let tap = LockTap::new("k");
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
        let tap = LockTap::new("k");
        let shared = tap.side(Side::Shared);
        shared.client_bytes(1, b"*2\r\n#nonsense\r\n");
        shared.client_bytes(1, &resp(&["SET", "k", "v"]));
        shared.client_bytes(2, &resp(&["SET", "k", "w"]));
        let (commands, lost) = tap.commands();
        assert_eq!(lost, 1);
        assert_eq!(commands.len(), 1);
        assert_eq!(commands[0].values, ["w"]);
    }

    #[test]
    fn values_belong_to_who_wrote_them_or_to_the_target_alone() {
        let t0 = Instant::now();
        let at = |ms| t0 + std::time::Duration::from_millis(ms);
        let command = |side, value: &str, written| KeyCommand {
            at: t0,
            side,
            name: "SET".into(),
            values: vec![value.into()],
            written,
        };
        // The standby's SET passes the shared proxy too; the target's attempt to write the
        // standby's value was refused.
        let commands = [
            command(Side::Shared, "p-1", Written::Yes),
            command(Side::Standby, "s-1", Written::Yes),
            command(Side::Shared, "s-1", Written::Yes),
            command(Side::Shared, "s-1", Written::No),
            // The standby tried to write the target's value and was refused.
            command(Side::Standby, "p-1", Written::No),
            command(Side::Shared, "p-1", Written::No),
        ];
        let held = [
            (at(0), "left-over".to_owned()),
            (at(10), "p-1".to_owned()),
            (at(20), "scripted".to_owned()),
            (at(900), "s-1".to_owned()),
            (at(950), "late".to_owned()),
        ];
        let a = Attribution::learn(&commands, 0, &held, Some(at(5)), Some(at(500)));
        let holders: Vec<_> = held
            .iter()
            .map(|(_, v)| a.holder(&Some(v.clone())))
            .collect();
        assert_eq!(
            holders,
            [
                Holder::Unknown("left-over".into()),
                Holder::Primary,
                Holder::Primary,
                Holder::Standby,
                Holder::Unknown("late".into()),
            ]
        );
        assert_eq!(a.holder(&None), Holder::Nobody);
        assert!(
            a.how[1].contains("held while only the target ran"),
            "{:?}",
            a.how
        );
    }
}
