//! What a consumer says to its group coordinator, read off the wire.
//!
//! Whether a stopped consumer *left* its group is a fact about the client: it sends a
//! LeaveGroup request on a clean close (or, in the KIP-848 protocol, a heartbeat with epoch
//! -1), and if it does not, the broker keeps its partitions assigned until its session times
//! out. The broker's own answer (DescribeGroups) is the usual way to ask, but not every broker
//! tells the truth: tansu 0.6.0, the local backend's broker, lists a member that sent
//! LeaveGroup for as long as anyone asks (measured: still listed 30 s after a clean close with
//! a 10 s session timeout). Every client reaches Kafka through the harness's fault proxy, so
//! the harness reads the requests themselves: [`GroupTap`] parses the client-to-broker byte
//! stream of each proxied connection and keeps the membership requests of every group, with
//! their time. Only request headers and the first fields of four request bodies are read; the
//! bytes are forwarded untouched whatever the parse makes of them.

use super::fetch::{Assigned, Fetched, Sync};
use crate::scenario::StopOld;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Kafka API keys of the requests the tap keeps.
const OFFSET_COMMIT: i16 = 8;
const JOIN_GROUP: i16 = 11;
const HEARTBEAT: i16 = 12;
const LEAVE_GROUP: i16 = 13;
const SYNC_GROUP: i16 = 14;
/// KIP-848's consumer protocol: joins, heartbeats and leaves in one request.
const CONSUMER_GROUP_HEARTBEAT: i16 = 68;
/// From v3 (KIP-511) a client names its library and version in it.
const API_VERSIONS: i16 = 18;

/// Client libraries known to send LeaveGroup whatever generation the broker put them in
/// (librdkafka, the Java client and kafka-python, in its coordinator's `maybe_leave_group`,
/// check only that they have a member id). aiokafka leaves
/// only from generation 1, so on a broker that starts groups at generation 0 (tansu 0.6.0) its
/// silence says nothing about the service.
const LEAVES_IN_ANY_GENERATION: [&str; 3] = ["librdkafka", "apache-kafka-java", "kafka-python"];

/// A request frame larger than this is not a membership request worth buffering: its bytes
/// are skipped, not kept.
const MAX_KEPT_FRAME: usize = 1 << 20;

/// What a membership request said.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum GroupRequest {
    /// Asks to join (`member_id` empty on a first join); `session_timeout_ms` is how long the
    /// broker waits for a silent member.
    Join {
        member_id: String,
        session_timeout_ms: i32,
        /// Static membership (KIP-345): such a member does not leave on close, by design.
        group_instance_id: Option<String>,
    },
    /// `generation`: the group generation the member says it is in (Kafka's first is 1).
    Sync {
        member_id: String,
        generation: i32,
    },
    Heartbeat {
        member_id: String,
        generation: i32,
    },
    Commit {
        member_id: String,
    },
    /// The members that leave.
    Leave {
        member_ids: Vec<String>,
    },
}

impl GroupRequest {
    /// The member ids a request speaks for (none for a first join).
    pub fn member_ids(&self) -> Vec<&str> {
        match self {
            GroupRequest::Join { member_id, .. }
            | GroupRequest::Sync { member_id, .. }
            | GroupRequest::Heartbeat { member_id, .. }
            | GroupRequest::Commit { member_id } => Some(member_id.as_str())
                .filter(|m| !m.is_empty())
                .into_iter()
                .collect(),
            GroupRequest::Leave { member_ids } => member_ids.iter().map(String::as_str).collect(),
        }
    }
}

/// One membership request as the tap saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupEvent {
    pub at: Instant,
    /// The proxied connection it came on.
    pub link: u64,
    pub client_id: Option<String>,
    /// The client library its connection named (ApiVersions v3+), e.g. `librdkafka`.
    pub software: Option<String>,
    pub group: String,
    pub request: GroupRequest,
    /// The run id of the process that opened its connection (an instance's: `RUN.worker.1@2`;
    /// empty for one with none, such as the harness), read from the kernel's socket table when
    /// the connection was accepted; `None` if no process could be found.
    pub owner: Option<String>,
    /// Its connection's owner is still being looked up.
    pub owner_pending: bool,
    /// When the broker's answer to it passed back (JoinGroup and SyncGroup only): a join
    /// is answered when its rebalance round completes, and a member cannot leave before.
    pub answered: Option<Instant>,
}

/// The first member that joined since `since` and completed its join: its first request came
/// then (none before), and it has sent SyncGroup. With the time of that SyncGroup. A member
/// rejoining a rebalance keeps its id, and was seen before: it is not new.
pub fn joined_since(events: &[GroupEvent], since: Instant) -> Option<(String, Instant)> {
    join_step_since(events, since, StopOld::Sync, None)
}

/// The first new member (none of its requests before `since`) to reach `step` of its join,
/// and when: its first JoinGroup (a first join carries no member id: it is new by being
/// first, and named by no id: an empty one), its SyncGroup, or its first heartbeat or commit
/// after that SyncGroup. `Ready` waits for no step: `None`.
///
/// `owner`: the run id of the instance whose join it is; a request on a connection another
/// process opened (another instance, another service) is not its, and one whose connection's
/// owner is still being looked up is not taken yet (the next look may). One whose owner could
/// not be found is taken as it may be.
pub fn join_step_since(
    events: &[GroupEvent],
    since: Instant,
    step: StopOld,
    owner: Option<&str>,
) -> Option<(String, Instant)> {
    let mut first_seen: BTreeMap<&str, Instant> = BTreeMap::new();
    let mut synced: Vec<&str> = Vec::new();
    let theirs = |e: &&GroupEvent| match (owner, &e.owner) {
        (Some(wanted), Some(found)) => wanted == found,
        (Some(_), None) => !e.owner_pending,
        (None, _) => true,
    };
    for event in events.iter().filter(theirs) {
        if let (StopOld::Join, GroupRequest::Join { member_id, .. }) = (step, &event.request)
            && member_id.is_empty()
            && event.at >= since
        {
            return Some((String::new(), event.at));
        }
        for member in event.request.member_ids() {
            first_seen.entry(member).or_insert(event.at);
        }
        let new = |m: &str| first_seen.get(m).is_some_and(|at| *at >= since);
        match (step, &event.request) {
            (StopOld::Join, GroupRequest::Join { member_id, .. })
            | (StopOld::Sync, GroupRequest::Sync { member_id, .. })
                if new(member_id) =>
            {
                return Some((member_id.clone(), event.at));
            }
            (StopOld::Synced, GroupRequest::Sync { member_id, .. }) if new(member_id) => {
                synced.push(member_id);
            }
            (
                StopOld::Synced,
                GroupRequest::Heartbeat { member_id, .. } | GroupRequest::Commit { member_id },
            ) if synced.contains(&member_id.as_str()) => {
                return Some((member_id.clone(), event.at));
            }
            _ => {}
        }
    }
    None
}

/// The library name and version a client gives in its ApiVersions request (v3 and later),
/// from one request frame; `None` for any other frame.
pub fn parse_client_software(frame: &[u8]) -> Option<(String, String)> {
    let mut r = Reader(frame);
    let (api_key, version) = (r.i16()?, r.i16()?);
    if api_key != API_VERSIONS || version < 3 {
        return None;
    }
    let _correlation_id = r.i32()?;
    let _client_id = r.nullable_string()?;
    r.tagged_fields()?;
    let mut s = StringReader { r, flexible: true };
    Some((s.string()?, s.string()?))
}

/// Parses one request frame (without its 4-byte size): the group and what it asks, for the
/// membership requests; `None` for every other request, or a frame it cannot read.
pub fn parse_request(frame: &[u8]) -> Option<(Option<String>, String, GroupRequest)> {
    let mut r = Reader(frame);
    let api_key = r.i16()?;
    let version = r.i16()?;
    let _correlation_id = r.i32()?;
    let flexible = match api_key {
        OFFSET_COMMIT => version >= 8,
        JOIN_GROUP => version >= 6,
        HEARTBEAT | LEAVE_GROUP | SYNC_GROUP => version >= 4,
        CONSUMER_GROUP_HEARTBEAT => true,
        _ => return None,
    };
    // The header's client id is never a compact string, even in header v2.
    let client_id = r.nullable_string()?;
    if flexible {
        r.tagged_fields()?;
    }
    let mut s = StringReader { r, flexible };
    let group = s.string()?;
    let request = match api_key {
        JOIN_GROUP => {
            let session_timeout_ms = s.r.i32()?;
            if version >= 1 {
                let _rebalance_timeout_ms = s.r.i32()?;
            }
            let member_id = s.string()?;
            let group_instance_id = match version >= 5 {
                true => s.nullable_string()?,
                false => None,
            };
            GroupRequest::Join {
                member_id,
                session_timeout_ms,
                group_instance_id,
            }
        }
        SYNC_GROUP | HEARTBEAT => {
            let generation = s.r.i32()?;
            let member_id = s.string()?;
            match api_key {
                SYNC_GROUP => GroupRequest::Sync {
                    member_id,
                    generation,
                },
                _ => GroupRequest::Heartbeat {
                    member_id,
                    generation,
                },
            }
        }
        OFFSET_COMMIT if version >= 1 => {
            let _generation = s.r.i32()?;
            GroupRequest::Commit {
                member_id: s.string()?,
            }
        }
        OFFSET_COMMIT => GroupRequest::Commit {
            member_id: String::new(),
        },
        LEAVE_GROUP if version <= 2 => GroupRequest::Leave {
            member_ids: vec![s.string()?],
        },
        LEAVE_GROUP => {
            let count = s.array_len()?;
            let mut member_ids = Vec::with_capacity(count.min(64));
            for _ in 0..count {
                member_ids.push(s.string()?);
                let _instance = s.nullable_string()?;
                if version >= 5 {
                    let _reason = s.nullable_string()?;
                }
                if flexible {
                    s.r.tagged_fields()?;
                }
            }
            GroupRequest::Leave { member_ids }
        }
        CONSUMER_GROUP_HEARTBEAT => {
            let member_id = s.string()?;
            let epoch = s.r.i32()?;
            let instance = s.nullable_string()?;
            match epoch {
                // -1: the member leaves; -2: a static member leaves for now (KIP-848).
                -1 | -2 => GroupRequest::Leave {
                    member_ids: vec![member_id],
                },
                0 => GroupRequest::Join {
                    member_id,
                    session_timeout_ms: -1,
                    group_instance_id: instance,
                },
                generation => GroupRequest::Heartbeat {
                    member_id,
                    generation,
                },
            }
        }
        _ => return None,
    };
    Some((client_id, group, request))
}

pub(super) struct Reader<'a>(pub(super) &'a [u8]);

impl Reader<'_> {
    pub(super) fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    pub(super) fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    pub(super) fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    pub(super) fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    pub(super) fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.take(1)?.first()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn utf8(&mut self, len: usize) -> Option<String> {
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }

    /// A classic nullable string: an i16 length, -1 for null.
    pub(super) fn nullable_string(&mut self) -> Option<Option<String>> {
        match self.i16()? {
            -1 => Some(None),
            len if len >= 0 => self.utf8(len as usize).map(Some),
            _ => None,
        }
    }

    pub(super) fn tagged_fields(&mut self) -> Option<()> {
        for _ in 0..self.varint()? {
            let _tag = self.varint()?;
            let len = usize::try_from(self.varint()?).ok()?;
            self.take(len)?;
        }
        Some(())
    }
}

/// Reads strings and arrays in the encoding of the request's version.
pub(super) struct StringReader<'a> {
    pub(super) r: Reader<'a>,
    pub(super) flexible: bool,
}

impl StringReader<'_> {
    pub(super) fn nullable_string(&mut self) -> Option<Option<String>> {
        if !self.flexible {
            return self.r.nullable_string();
        }
        // A compact string's length is stored plus one; 0 is null.
        match usize::try_from(self.r.varint()?).ok()? {
            0 => Some(None),
            len => self.r.utf8(len - 1).map(Some),
        }
    }

    pub(super) fn string(&mut self) -> Option<String> {
        self.nullable_string()?
    }

    pub(super) fn array_len(&mut self) -> Option<usize> {
        if self.flexible {
            return usize::try_from(self.r.varint()?).ok()?.checked_sub(1);
        }
        usize::try_from(self.r.i32()?).ok()
    }
}

/// Cuts one connection's client-to-broker bytes into request frames.
#[derive(Debug, Default)]
struct Framer {
    buf: Vec<u8>,
    /// Bytes of an oversized frame still to skip.
    skip: usize,
    /// How many frames began, skipped ones included.
    count: u64,
}

impl Framer {
    /// Feeds `bytes`; returns the whole frames they complete, each with its place among the
    /// connection's frames (from 0).
    fn feed(&mut self, bytes: &[u8]) -> Vec<(u64, Vec<u8>)> {
        let mut input = bytes;
        let mut frames = Vec::new();
        loop {
            if self.skip > 0 {
                let n = self.skip.min(input.len());
                self.skip -= n;
                input = &input[n..];
                if self.skip > 0 {
                    return frames;
                }
            }
            if self.buf.len() < 4 {
                let n = (4 - self.buf.len()).min(input.len());
                self.buf.extend_from_slice(&input[..n]);
                input = &input[n..];
                if self.buf.len() < 4 {
                    return frames;
                }
            }
            let size = i32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
            let Ok(size) = usize::try_from(size) else {
                // Not Kafka framing: nothing more is read from this connection.
                self.buf.clear();
                self.skip = usize::MAX;
                return frames;
            };
            if size > MAX_KEPT_FRAME {
                // A large produce request, say: skipped, not kept.
                self.buf.clear();
                self.skip = size;
                self.count += 1;
                continue;
            }
            let n = (4 + size - self.buf.len()).min(input.len());
            self.buf.extend_from_slice(&input[..n]);
            input = &input[n..];
            if self.buf.len() < 4 + size {
                return frames;
            }
            frames.push((self.count, self.buf[4..].to_vec()));
            self.count += 1;
            self.buf.clear();
        }
    }
}

/// The membership requests seen on the proxied connections of one Kafka proxy, with their
/// times. Cheap to clone: clones share the log.
#[derive(Clone, Debug, Default)]
pub struct GroupTap {
    inner: Arc<Mutex<TapState>>,
    /// Whether each connection's owner is looked up: only a graph's instances are told apart.
    owners: bool,
}

#[derive(Debug, Default)]
struct TapState {
    framers: BTreeMap<u64, Framer>,
    events: Vec<GroupEvent>,
    /// Per link, the client library and version it named (ApiVersions v3+).
    software: BTreeMap<u64, (String, String)>,
    /// Per link, the run id of the process that opened it, once looked up.
    owners: BTreeMap<u64, String>,
    /// Links whose owner is being looked up.
    pending: std::collections::BTreeSet<u64>,
    /// The partitions named in Fetch requests, kept by a tap that looks up owners.
    fetched: Vec<Fetched>,
    /// Fetches were dropped past [`MAX_FETCHED`]: from then on they say nothing.
    fetched_full: Option<Instant>,
    /// The assignments of group leaders' SyncGroup requests, kept by a tap that looks up
    /// owners.
    assigned: Vec<(Instant, Sync)>,
    /// Per link, the broker's answers being read.
    answers: BTreeMap<u64, Answers>,
}

/// The responses on one connection, read only as far as their correlation ids: each is
/// matched to the JoinGroup or SyncGroup it answers, and the rest is skipped unread.
#[derive(Debug, Default)]
struct Answers {
    /// The size and correlation id of the next response, as far as they have come.
    head: Vec<u8>,
    /// Bytes of the current response's body still to skip.
    skip: usize,
    /// The correlation ids awaited, oldest first, each with its event's index.
    awaited: std::collections::VecDeque<(i32, usize)>,
    /// How many answers began.
    told: u64,
}

impl Answers {
    /// Reads `bytes`; returns the indexes of the events they answer.
    fn feed(&mut self, mut bytes: &[u8]) -> Vec<usize> {
        let mut answered = Vec::new();
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (8 - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.head.len() < 8 {
                break;
            }
            let word = |i: usize| i32::from_be_bytes([0, 1, 2, 3].map(|k| self.head[i + k]));
            let (size, correlation) = (word(0), word(4));
            self.head.clear();
            self.told += 1;
            let Some(body) = usize::try_from(size).ok().and_then(|s| s.checked_sub(4)) else {
                // Not Kafka framing: nothing more is read from this connection.
                self.skip = usize::MAX;
                self.awaited.clear();
                break;
            };
            self.skip = body;
            // Answers come in the order asked: those before it were not awaited answers.
            if let Some(i) = self.awaited.iter().position(|(c, _)| *c == correlation) {
                answered.push(self.awaited[i].1);
                self.awaited.drain(..=i);
            }
        }
        answered
    }
}

/// How many events the tap keeps at most: a long soak's heartbeats would otherwise grow
/// without bound. Past it, heartbeats and commits of members already seen are not kept.
const MAX_EVENTS: usize = 100_000;

/// How many partition fetches the tap keeps at most (about 100 bytes each).
pub(crate) const MAX_FETCHED: usize = 1_000_000;

impl GroupTap {
    /// Bytes a client sent on connection `link`.
    pub fn client_bytes(&self, link: u64, bytes: &[u8]) {
        let now = Instant::now();
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let frames = state.framers.entry(link).or_default().feed(bytes);
        // Read from the link's first byte, before any answer can come.
        state.answers.entry(link).or_default();
        for (place, frame) in frames {
            if let Some(software) = parse_client_software(&frame) {
                state.software.insert(link, software);
                continue;
            }
            if self.owners
                && let Some(sync) = super::fetch::parse_sync_assignments(&frame)
                && state.assigned.len() < MAX_EVENTS
            {
                state.assigned.push((now, sync));
            }
            if self.owners
                && let Some(fetch) = super::fetch::parse_fetch(&frame)
            {
                for (topic, partitions) in fetch.topics {
                    for (partition, offset) in partitions {
                        if state.fetched.len() >= MAX_FETCHED {
                            state.fetched_full.get_or_insert(now);
                            break;
                        }
                        state.fetched.push(Fetched {
                            at: now,
                            link,
                            topic: topic.clone(),
                            partition,
                            offset,
                            incremental: fetch.incremental,
                            owner: None,
                        });
                    }
                }
                continue;
            }
            let Some((client_id, group, request)) = parse_request(&frame) else {
                continue;
            };
            let routine = matches!(
                request,
                GroupRequest::Heartbeat { .. } | GroupRequest::Commit { .. }
            );
            if routine && state.events.len() >= MAX_EVENTS {
                continue;
            }
            let software = state.software.get(&link).map(|(name, _)| name.clone());
            // Dated by its answer only when it was alone in flight on its link: Kafka answers
            // a connection's requests in turn, so one queued behind another (a long-polling
            // fetch) would be held by that one, not by its round.
            let index = state.events.len();
            let answers = state.answers.entry(link).or_default();
            if matches!(
                request,
                GroupRequest::Join { .. } | GroupRequest::Sync { .. }
            ) && place == answers.told
                && let Some(correlation) = frame.get(4..8)
            {
                let correlation = i32::from_be_bytes([0, 1, 2, 3].map(|k| correlation[k]));
                answers.awaited.push_back((correlation, index));
            }
            state.events.push(GroupEvent {
                at: now,
                link,
                client_id,
                software,
                group,
                request,
                owner: None,
                owner_pending: false,
                answered: None,
            });
        }
    }

    /// Bytes the broker sent back on connection `link`.
    pub fn server_bytes(&self, link: u64, bytes: &[u8]) {
        let now = Instant::now();
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some(answers) = state.answers.get_mut(&link) else {
            return;
        };
        for index in answers.feed(bytes) {
            if let Some(event) = state.events.get_mut(index) {
                event.answered = Some(now);
            }
        }
    }

    /// Connection `link` ended: its partial frame is dropped.
    pub fn closed(&self, link: u64) {
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        state.framers.remove(&link);
        state.answers.remove(&link);
    }

    /// Every event about `group` so far, in the order seen, each with its link's owner.
    pub fn events(&self, group: &str) -> Vec<GroupEvent> {
        let state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        state
            .events
            .iter()
            .filter(|e| e.group == group)
            .map(|e| GroupEvent {
                owner: state.owners.get(&e.link).cloned(),
                owner_pending: state.pending.contains(&e.link),
                ..e.clone()
            })
            .collect()
    }

    /// Every partition fetch so far, in the order seen, each with its link's owner; and when
    /// the tap stopped keeping them, if it did (a tap [`GroupTap::with_owners`] only).
    pub fn fetched(&self) -> (Vec<Fetched>, Option<Instant>) {
        let state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let fetched = (state.fetched.iter())
            .map(|f| Fetched {
                owner: state.owners.get(&f.link).cloned(),
                ..f.clone()
            })
            .collect();
        (fetched, state.fetched_full)
    }

    /// The assignments of `group`'s leaders, in the order seen (a tap
    /// [`GroupTap::with_owners`] only).
    pub fn assigned(&self, group: &str) -> Vec<(Instant, Assigned)> {
        let state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (state.assigned.iter())
            .filter_map(|(at, sync)| match sync {
                Sync::Assigned(a) if a.group == group => Some((*at, a.clone())),
                _ => None,
            })
            .collect()
    }

    /// When a leader's SyncGroup of `group` (or of a group whose name could not be read)
    /// carried an assignment that could not be read.
    pub fn unreadable(&self, group: &str) -> Vec<Instant> {
        let state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (state.assigned.iter())
            .filter_map(|(at, sync)| match sync {
                Sync::Unreadable(g) if g == group || g.is_empty() => Some(*at),
                _ => None,
            })
            .collect()
    }

    /// A tap that also looks up which process opened each connection (see [`GroupTap::opened`]).
    pub fn with_owners() -> GroupTap {
        GroupTap {
            owners: true,
            ..GroupTap::default()
        }
    }

    /// Connection `link` was accepted from `client`: which process opened it is looked up
    /// now, while it is open, off the proxy's way (by a tap [`GroupTap::with_owners`] only).
    pub fn opened(&self, link: u64, client: std::net::SocketAddr, listen: std::net::SocketAddr) {
        if !self.owners {
            return;
        }
        let inner = Arc::clone(&self.inner);
        (inner.lock().unwrap_or_else(|e| e.into_inner()))
            .pending
            .insert(link);
        std::thread::spawn(move || {
            let owner = crate::target::run_id_of_client(client, listen);
            let mut state = inner.lock().unwrap_or_else(|e| e.into_inner());
            state.pending.remove(&link);
            if let Some(owner) = owner {
                state.owners.insert(link, owner);
            }
        });
    }
}

/// The run of one target, for [`group_left`]: when it started, was asked to stop, and exited.
#[derive(Clone, Copy, Debug)]
pub struct StopWindow {
    pub started: Instant,
    /// `None`: it was never asked to stop (it ended by itself, or never got ready).
    pub stop_sent: Option<Instant>,
    pub exited: Instant,
    /// SIGKILL, by the scenario or by the harness past the stop deadline.
    pub killed: bool,
    /// Killed by the harness past its grace period after a clean stop signal: it hung in its
    /// shutdown, and a member that had not left by then is the service's failure, not the kill's.
    pub hung: bool,
}

/// One member of the target's group, as the tap saw it.
#[derive(Debug, Default)]
struct Member {
    client_id: Option<String>,
    software: Option<String>,
    session_timeout_ms: Option<i32>,
    static_id: Option<String>,
    /// The highest generation it said it was in.
    generation: Option<i32>,
    /// When it sent LeaveGroup, if it did.
    left: Option<Instant>,
    /// Its last request of any kind.
    last_seen: Option<Instant>,
}

/// Kafka's default `session.timeout.ms` (45 s since Kafka 3.0), for a member whose JoinGroup
/// the tap did not see.
const DEFAULT_SESSION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(45);

/// The members the target had in `group` while it ran, as its requests name them, less those
/// that left before the stop (a rebalance, a rejoin under a new id): the ones the stop must
/// see leave.
fn members_at_stop(
    events: &[GroupEvent],
    group: &str,
    window: &StopWindow,
    stop_sent: Instant,
) -> BTreeMap<String, Member> {
    // Which link each member spoke on, for the session timeout of its first JoinGroup.
    let mut session_of_link: BTreeMap<u64, (i32, Option<String>)> = BTreeMap::new();
    let mut members: BTreeMap<String, Member> = BTreeMap::new();
    for event in events
        .iter()
        .filter(|e| e.group == group && e.at >= window.started && e.at <= window.exited)
    {
        if let GroupRequest::Join {
            session_timeout_ms,
            group_instance_id,
            ..
        } = &event.request
        {
            session_of_link.insert(event.link, (*session_timeout_ms, group_instance_id.clone()));
        }
        for id in event.request.member_ids() {
            let member = members.entry(id.to_owned()).or_default();
            member.last_seen = Some(event.at);
            member.client_id = member.client_id.take().or_else(|| event.client_id.clone());
            member.software = member.software.take().or_else(|| event.software.clone());
            if let Some((timeout, static_id)) = session_of_link.get(&event.link) {
                member.session_timeout_ms.get_or_insert(*timeout);
                if member.static_id.is_none() {
                    member.static_id = static_id.clone();
                }
            }
            match &event.request {
                GroupRequest::Sync { generation, .. }
                | GroupRequest::Heartbeat { generation, .. } => {
                    member.generation = Some(
                        member
                            .generation
                            .map_or(*generation, |g| g.max(*generation)),
                    );
                }
                GroupRequest::Leave { .. } => {
                    member.left.get_or_insert(event.at);
                }
                _ => {}
            }
        }
    }
    members.retain(|_, m| m.left.is_none_or(|at| at >= stop_sent));
    // A member silent for longer than its session timeout before the stop was no longer one:
    // the broker had dropped it (an outage, a rejoin under a new id).
    members.retain(|_, m| {
        let timeout = m
            .session_timeout_ms
            .and_then(|t| u64::try_from(t).ok())
            .map_or(DEFAULT_SESSION_TIMEOUT, std::time::Duration::from_millis);
        m.last_seen
            .is_some_and(|seen| stop_sent.saturating_duration_since(seen) <= timeout)
    });
    members
}

/// The JoinGroup or SyncGroup `member` of `group` had in flight at `stop`: its last of them
/// sent before the stop, if the broker answered it after.
fn in_round_at<'a>(
    events: &'a [GroupEvent],
    group: &str,
    member: &str,
    stop: Instant,
) -> Option<(usize, &'a GroupEvent)> {
    events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.group == group && e.at < stop && e.request.member_ids() == [member])
        .rfind(|(_, e)| {
            matches!(
                e.request,
                GroupRequest::Join { .. } | GroupRequest::Sync { .. }
            )
        })
        .filter(|(_, e)| e.answered.is_some_and(|a| a > stop))
}

/// How long after `stop`, and before the leave at `left`, the broker held `member` in the
/// rebalance round it was in at the stop, by the answers it saw: a JoinGroup in flight at the
/// stop, to its answer, and then the SyncGroup the member sent next, from its send to its
/// answer (a follower's waits for the leader's); or a SyncGroup in flight at the stop, to its
/// answer. The member's own time between the two is its own. Zero when no round was in
/// flight. Only a request alone in flight on its link is dated by its answer (see
/// [`GroupTap::client_bytes`]). With the name of the request in flight at the stop.
fn held_in_round(
    events: &[GroupEvent],
    group: &str,
    member: &str,
    stop: Instant,
    left: Instant,
) -> (std::time::Duration, &'static str) {
    let Some((i, request)) = in_round_at(events, group, member, stop) else {
        return (std::time::Duration::ZERO, "");
    };
    let name = match request.request {
        GroupRequest::Join { .. } => "JoinGroup",
        _ => "SyncGroup",
    };
    let answered = request.answered.unwrap_or(stop);
    let mut held = answered.min(left).saturating_duration_since(stop);
    if matches!(request.request, GroupRequest::Join { .. })
        && let Some(sync) = events[i + 1..]
            .iter()
            .filter(|e| e.group == group && e.request.member_ids() == [member])
            .find(|e| e.at >= answered)
            .filter(|e| matches!(e.request, GroupRequest::Sync { .. }))
        && let Some(synced) = sync.answered
    {
        held += synced.min(left).saturating_duration_since(sync.at);
    }
    (held, name)
}

/// How long the broker keeps the partitions of the members that did not leave by the time the
/// target exited: the longest session timeout among them (45 s, current clients' default,
/// where none was seen). `None`: every member left, or none was seen.
pub fn held_after_stop(
    events: &[GroupEvent],
    group: &str,
    window: &StopWindow,
) -> Option<std::time::Duration> {
    let stop_sent = window.stop_sent?;
    members_at_stop(events, group, window, stop_sent)
        .values()
        .filter(|m| m.left.is_none())
        .map(|m| m.session_timeout_ms.filter(|t| *t > 0).unwrap_or(45_000))
        .max()
        .map(|ms| std::time::Duration::from_millis(ms as u64))
}

/// `group_left`: after a clean stop, every member the target had in `group` sent LeaveGroup,
/// within `within` of the stop, so its partitions went to the others at once rather than
/// after its session timeout. Judged from what the target sent (`events`, from a
/// [`GroupTap`]), which no broker can misreport.
pub fn group_left(
    events: &[GroupEvent],
    group: &str,
    window: StopWindow,
    within: std::time::Duration,
) -> crate::verdict::Outcome {
    use crate::verdict::Outcome;
    let ms = |d: std::time::Duration| d.as_millis();
    let Some(stop_sent) = window.stop_sent else {
        return Outcome::inconclusive(
            "the target was never asked to stop, so it had no leave to make",
        );
    };
    let members = members_at_stop(events, group, &window, stop_sent);
    if members.is_empty() {
        return Outcome::inconclusive(format!(
            "the target never joined group `{group}` through the harness's Kafka proxy (no \
             JoinGroup, SyncGroup, Heartbeat or OffsetCommit from it while it ran)"
        ));
    }
    let describe = |id: &str, m: &Member| {
        let client = m.client_id.as_deref().unwrap_or("no client id");
        let timeout = m
            .session_timeout_ms
            .map_or("an unseen session timeout".to_owned(), |t| {
                format!("session timeout {t} ms")
            });
        format!("member `{id}` ({client}, {timeout})")
    };
    if window.killed && !window.hung {
        let held: Vec<String> = members.iter().map(|(id, m)| describe(id, m)).collect();
        return Outcome::inconclusive(format!(
            "the target was killed: a killed consumer cannot leave, so the broker keeps its \
             partitions until its session times out; not failed, reported: {}",
            held.join("; ")
        ));
    }
    let mut failed = Vec::new();
    let mut unsure = Vec::new();
    let mut passed = Vec::new();
    for (id, member) in &members {
        let who = describe(id, member);
        match member.left {
            Some(at) => {
                let after = at.saturating_duration_since(stop_sent);
                // The round's time is taken off only where the leave was late without it.
                let (held, request) = match after <= within {
                    true => (std::time::Duration::ZERO, ""),
                    false => held_in_round(events, group, id, stop_sent, at),
                };
                let own = after.saturating_sub(held);
                let how = match held.is_zero() {
                    true => String::new(),
                    false => format!(
                        ", {} ms of it in the rebalance round its {} was in at the stop (the \
                         broker answers a join when the round completes, and a member cannot \
                         leave before), {} ms its own",
                        ms(held),
                        request,
                        ms(own)
                    ),
                };
                if own <= within {
                    passed.push(format!(
                        "{who} sent LeaveGroup {} ms after the stop{how}",
                        ms(after)
                    ));
                } else {
                    failed.push(format!(
                        "{who} sent LeaveGroup {} ms after the stop{how} ({} ms allowed): its \
                         partitions waited that long for it",
                        ms(after),
                        ms(within)
                    ));
                }
            }
            None if member.static_id.is_some() => unsure.push(format!(
                "{who} is a static member (group.instance.id `{}`): it does not leave on close, by \
                 design, and a replacement with the same id takes its partitions over",
                member.static_id.as_deref().unwrap_or_default()
            )),
            None if member.generation.is_some_and(|g| g <= 0)
                && !member
                    .software
                    .as_deref()
                    .is_some_and(|s| LEAVES_IN_ANY_GENERATION.contains(&s)) =>
            {
                unsure.push(format!(
                    "{who} sent no LeaveGroup, but the broker had put it in generation {} \
                     (Kafka's first generation is 1; tansu 0.6.0 starts at 0) and clients such \
                     as aiokafka leave only from generation 1: the broker, not the target, may \
                     be why",
                    member.generation.unwrap_or_default()
                ))
            }
            None if window.hung => failed.push(format!(
                "{who} never sent LeaveGroup: the target hung in its shutdown past its grace \
                 period and was killed, so the broker keeps its partitions assigned until the \
                 session timeout, and the group waits that long"
            )),
            None => failed.push(format!(
                "{who} never sent LeaveGroup before the target exited: the broker keeps its \
                 partitions assigned until the session timeout, and the group waits that long"
            )),
        }
    }
    if !failed.is_empty() {
        let summary = format!(
            "{} of {} member(s) of group `{group}` did not leave at the stop",
            failed.len(),
            members.len()
        );
        failed.extend(passed);
        failed.extend(unsure);
        return Outcome::violation(summary, failed);
    }
    if !unsure.is_empty() {
        return Outcome::inconclusive(unsure.join("; "));
    }
    Outcome::pass(passed.join("; "))
}

impl crate::fault::Observer for GroupTap {
    fn client_bytes(&self, link: u64, bytes: &[u8]) {
        GroupTap::client_bytes(self, link, bytes);
    }

    fn server_bytes(&self, link: u64, bytes: &[u8]) {
        GroupTap::server_bytes(self, link, bytes);
    }

    fn closed(&self, link: u64) {
        GroupTap::closed(self, link);
    }

    fn opened(&self, link: u64, client: std::net::SocketAddr, listen: std::net::SocketAddr) {
        GroupTap::opened(self, link, client, listen);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_that_joins_after_a_moment_is_new_once_it_syncs() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + std::time::Duration::from_millis(ms);
        let event = |ms: u64, request: GroupRequest| GroupEvent {
            at: at(ms),
            link: 1,
            client_id: None,
            software: None,
            group: "g".into(),
            request,
            owner: None,
            owner_pending: false,
            answered: None,
        };
        let join = |m: &str| GroupRequest::Join {
            member_id: m.into(),
            session_timeout_ms: 10_000,
            group_instance_id: None,
        };
        let sync = |m: &str| GroupRequest::Sync {
            member_id: m.into(),
            generation: 2,
        };
        let events = vec![
            event(0, join("")),
            event(5, join("old")),
            event(6, sync("old")),
            // The rebalance the new member causes: the old one rejoins under its own id.
            event(100, join("")),
            event(101, join("new")),
            event(102, join("old")),
            event(103, sync("old")),
            event(104, sync("new")),
        ];
        assert_eq!(joined_since(&events, at(50)), Some(("new".into(), at(104))));
        assert_eq!(joined_since(&events[..7], at(50)), None, "not synced yet");
        assert_eq!(joined_since(&events, at(200)), None, "nothing new since");
        // Each step a rollout may stop the old instance at.
        let step = |events: &[GroupEvent], step| join_step_since(events, at(50), step, None);
        assert_eq!(step(&events, StopOld::Join), Some((String::new(), at(100))));
        assert_eq!(
            step(&events[4..], StopOld::Join),
            Some(("new".into(), at(101)))
        );
        assert_eq!(
            step(&events, StopOld::Ready),
            None,
            "ready waits for no step"
        );
        let heartbeat = |m: &str| GroupRequest::Heartbeat {
            member_id: m.into(),
            generation: 2,
        };
        let commit = |m: &str| GroupRequest::Commit {
            member_id: m.into(),
        };
        let mut later = events.clone();
        assert_eq!(
            step(&later, StopOld::Synced),
            None,
            "synced, not yet heard from"
        );
        // The old member's heartbeat says nothing of the new one.
        later.push(event(110, heartbeat("old")));
        assert_eq!(step(&later, StopOld::Synced), None);
        later.push(event(120, commit("new")));
        assert_eq!(step(&later, StopOld::Synced), Some(("new".into(), at(120))));
        // Another service's member joining at the same moment, on a connection its own
        // process opened, is not the new instance's.
        let owned = |e: GroupEvent, owner: &str| GroupEvent {
            owner: Some(owner.into()),
            ..e
        };
        let mut both = events[..3].to_vec();
        both.push(owned(event(90, join("other")), "run.api.1"));
        both.push(owned(event(91, sync("other")), "run.api.1"));
        both.push(owned(event(101, join("new")), "run.worker.1@2"));
        both.push(event(104, sync("new")));
        let mine = Some("run.worker.1@2");
        assert_eq!(
            join_step_since(&both, at(50), StopOld::Sync, mine),
            Some(("new".into(), at(104))),
            "its own, and one whose owner is unknown"
        );
        assert_eq!(
            join_step_since(&both, at(50), StopOld::Sync, None),
            Some(("other".into(), at(91))),
            "without an owner, the first new member"
        );
        // A connection whose owner is still being looked up is not taken yet.
        let mut pending = events[..3].to_vec();
        pending.push(GroupEvent {
            owner_pending: true,
            ..event(90, join("other"))
        });
        pending.push(GroupEvent {
            owner_pending: true,
            ..event(91, sync("other"))
        });
        assert_eq!(join_step_since(&pending, at(50), StopOld::Sync, mine), None);
    }

    /// Encodes requests the way clients do, for the tests.
    struct Enc {
        pub bytes: Vec<u8>,
        flexible: bool,
    }

    impl Enc {
        pub fn request(api_key: i16, version: i16, flexible: bool) -> Enc {
            let mut e = Enc {
                bytes: Vec::new(),
                flexible,
            };
            e.bytes.extend(api_key.to_be_bytes());
            e.bytes.extend(version.to_be_bytes());
            e.bytes.extend(7i32.to_be_bytes());
            // client id: a classic nullable string
            e.bytes.extend(6i16.to_be_bytes());
            e.bytes.extend(b"rdkafka");
            e.bytes.truncate(e.bytes.len() - 1); // "rdkafk": 6 bytes
            if flexible {
                e.bytes.push(0); // no tagged fields
            }
            e
        }

        pub fn string(mut self, s: Option<&str>) -> Enc {
            match (s, self.flexible) {
                (None, true) => self.bytes.push(0),
                (None, false) => self.bytes.extend((-1i16).to_be_bytes()),
                (Some(s), true) => {
                    self.bytes.push(s.len() as u8 + 1);
                    self.bytes.extend(s.as_bytes());
                }
                (Some(s), false) => {
                    self.bytes.extend((s.len() as i16).to_be_bytes());
                    self.bytes.extend(s.as_bytes());
                }
            }
            self
        }

        pub fn i32(mut self, v: i32) -> Enc {
            self.bytes.extend(v.to_be_bytes());
            self
        }

        pub fn array(mut self, n: usize) -> Enc {
            match self.flexible {
                true => self.bytes.push(n as u8 + 1),
                false => self.bytes.extend((n as i32).to_be_bytes()),
            }
            self
        }

        pub fn tags(mut self) -> Enc {
            self.bytes.push(0);
            self
        }

        /// The frame with its size in front.
        pub fn framed(&self) -> Vec<u8> {
            let mut f = (self.bytes.len() as i32).to_be_bytes().to_vec();
            f.extend(&self.bytes);
            f
        }
    }

    use std::time::Duration;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn event(t0: Instant, ms: u64, link: u64, request: GroupRequest) -> GroupEvent {
        GroupEvent {
            at: at(t0, ms),
            link,
            client_id: Some("svc".into()),
            software: None,
            group: "g".into(),
            request,
            owner: None,
            owner_pending: false,
            answered: None,
        }
    }

    fn join(id: &str, instance: Option<&str>) -> GroupRequest {
        GroupRequest::Join {
            member_id: id.into(),
            session_timeout_ms: 45_000,
            group_instance_id: instance.map(Into::into),
        }
    }

    fn beat(id: &str, generation: i32) -> GroupRequest {
        GroupRequest::Heartbeat {
            member_id: id.into(),
            generation,
        }
    }

    fn leave(id: &str) -> GroupRequest {
        GroupRequest::Leave {
            member_ids: vec![id.into()],
        }
    }

    /// Joined at 10 ms, in generation 1, stopped at 1000 ms, exited at 1500 ms.
    fn member(t0: Instant, then: Vec<GroupEvent>) -> Vec<GroupEvent> {
        let mut events = vec![
            event(t0, 10, 1, join("", None)),
            event(t0, 20, 1, join("m-1", None)),
            event(t0, 30, 1, beat("m-1", 1)),
        ];
        events.extend(then);
        events
    }

    fn window(t0: Instant) -> StopWindow {
        StopWindow {
            started: t0,
            stop_sent: Some(at(t0, 1000)),
            exited: at(t0, 1500),
            killed: false,
            hung: false,
        }
    }

    fn judged(events: &[GroupEvent], window: StopWindow) -> crate::verdict::Outcome {
        group_left(events, "g", window, Duration::from_secs(2))
    }

    #[test]
    fn a_member_that_leaves_at_the_stop_passes_and_says_when() {
        let t0 = Instant::now();
        let events = member(t0, vec![event(t0, 1012, 1, leave("m-1"))]);
        let crate::verdict::Outcome::Pass { detail, .. } = judged(&events, window(t0)) else {
            panic!("left at the stop")
        };
        assert_eq!(
            detail,
            "member `m-1` (svc, session timeout 45000 ms) sent LeaveGroup 12 ms after the stop"
        );
    }

    /// A consumer that exits without close() keeps its partitions until its session timeout;
    /// nothing judged this before.
    #[test]
    fn a_member_that_never_leaves_fails_with_its_session_timeout() {
        let t0 = Instant::now();
        let events = member(t0, Vec::new());
        let crate::verdict::Outcome::Violation { summary, evidence } = judged(&events, window(t0))
        else {
            panic!("no leave after a clean stop")
        };
        assert_eq!(
            summary,
            "1 of 1 member(s) of group `g` did not leave at the stop"
        );
        assert!(
            evidence[0].contains("session timeout 45000 ms"),
            "{evidence:?}"
        );
        assert!(
            evidence[0].contains("never sent LeaveGroup"),
            "{evidence:?}"
        );
        // Its partitions wait that long: the restart is given as much.
        assert_eq!(
            held_after_stop(&events, "g", &window(t0)),
            Some(std::time::Duration::from_secs(45))
        );
        let left = member(t0, vec![event(t0, 1100, 1, leave("m-1"))]);
        assert_eq!(held_after_stop(&left, "g", &window(t0)), None);
    }

    /// A member whose JoinGroup the broker held from before the stop until its round completed
    /// could not leave sooner: that time is the round's, and its own after it is judged. The
    /// excuse covers only what the answers show: not a join sent after the stop, not one
    /// never answered, not the member's own wait before its SyncGroup.
    #[test]
    fn a_leave_held_by_the_round_in_flight_at_the_stop_is_judged_on_its_own_time() {
        let t0 = Instant::now();
        let answered = |mut e: GroupEvent, ms: u64| {
            e.answered = Some(at(t0, ms));
            e
        };
        let sync = |id: &str| GroupRequest::Sync {
            member_id: id.into(),
            generation: 2,
        };
        let mut late = window(t0);
        late.exited = at(t0, 8000);
        // Joined at 900, held to 3600; synced at once, held 9 ms; left 10 ms later.
        let round = |join_at: u64, sync_at: u64| {
            member(
                t0,
                vec![
                    answered(event(t0, join_at, 1, join("m-1", None)), 3600),
                    answered(event(t0, sync_at, 1, sync("m-1")), sync_at + 9),
                    event(t0, sync_at + 19, 1, leave("m-1")),
                ],
            )
        };
        let crate::verdict::Outcome::Pass { detail, .. } = judged(&round(900, 3601), late) else {
            panic!("held by the round")
        };
        assert!(
            detail.contains(
                "sent LeaveGroup 2620 ms after the stop, 2609 ms of it in the rebalance round \
                 its JoinGroup was in at the stop"
            ) && detail.ends_with("11 ms its own"),
            "{detail}"
        );
        // Its own 3 s between the join's answer and its SyncGroup are its own.
        assert!(judged(&round(900, 6601), late).is_violation());
        // A join sent after the stop is the member's own doing.
        assert!(judged(&round(1005, 3601), late).is_violation());
        // A join never answered shows no round held.
        let mut unanswered = round(900, 3601);
        unanswered[3].answered = None;
        assert!(judged(&unanswered, late).is_violation());
        // A leave in time needs no excuse.
        let mut early = round(900, 3601);
        early[5].at = at(t0, 1040);
        let crate::verdict::Outcome::Pass { detail, .. } = judged(&early, late) else {
            panic!("left at once")
        };
        assert!(
            detail.ends_with("sent LeaveGroup 40 ms after the stop"),
            "{detail}"
        );
        // A leave sent while its SyncGroup was still held: the round counts up to the leave.
        let mut syncing = round(900, 3601);
        syncing[4].answered = Some(at(t0, 5700));
        syncing[5].at = at(t0, 5610);
        let crate::verdict::Outcome::Pass { detail, .. } = judged(&syncing, late) else {
            panic!("left inside its round")
        };
        assert!(detail.ends_with(", 1 ms its own"), "{detail}");
    }

    /// The broker's answers are read as far as their correlation ids, across reads, and each
    /// is matched to its JoinGroup or SyncGroup; answers to other requests are skipped,
    /// whatever their size. A request queued behind one still unanswered on its link (a
    /// long-polling fetch) would be held by that one: it is not dated by its answer.
    #[test]
    fn a_join_alone_in_flight_is_dated_by_its_answer() {
        let tap = GroupTap::default();
        let with_id = |mut bytes: Vec<u8>, id: i32| {
            bytes[8..12].copy_from_slice(&id.to_be_bytes());
            bytes
        };
        let join = |id| {
            let join = Enc::request(JOIN_GROUP, 5, false)
                .string(Some("g"))
                .i32(10_000)
                .i32(300_000)
                .string(Some("m-1"))
                .string(None)
                .framed();
            with_id(join, id)
        };
        let sync = with_id(
            Enc::request(SYNC_GROUP, 2, false)
                .string(Some("g"))
                .i32(2)
                .string(Some("m-1"))
                .framed(),
            13,
        );
        let fetch = |id| with_id(Enc::request(1, 4, false).i32(-1).framed(), id);
        let response = |id: i32, body: usize| {
            let mut r = ((body + 4) as i32).to_be_bytes().to_vec();
            r.extend(id.to_be_bytes());
            r.extend(vec![0u8; body]);
            r
        };
        // A fetch answered (a large answer), then the join alone, answered a byte at a time.
        tap.client_bytes(1, &fetch(10));
        tap.server_bytes(1, &response(10, 100_000));
        tap.client_bytes(1, &join(11));
        let before = Instant::now();
        for byte in &response(11, 40) {
            tap.server_bytes(1, std::slice::from_ref(byte));
        }
        tap.client_bytes(1, &sync);
        let events = tap.events("g");
        assert!(
            events[0].answered.is_some_and(|a| a >= before),
            "{events:?}"
        );
        assert_eq!(events[1].answered, None);
        tap.server_bytes(1, &response(13, 8));
        assert!(tap.events("g")[1].answered.is_some());
        // Queued behind a fetch: not dated.
        tap.client_bytes(1, &fetch(20));
        tap.client_bytes(1, &join(21));
        tap.server_bytes(1, &response(20, 8));
        tap.server_bytes(1, &response(21, 8));
        assert_eq!(tap.events("g")[2].answered, None);
        // A closed link's answers are not waited for.
        tap.closed(1);
        tap.server_bytes(1, &response(21, 8));
    }

    #[test]
    fn a_leave_long_after_the_stop_fails() {
        let t0 = Instant::now();
        let events = member(t0, vec![event(t0, 3500, 1, leave("m-1"))]);
        let mut late = window(t0);
        late.exited = at(t0, 4000);
        assert!(judged(&events, late).is_violation());
    }

    #[test]
    fn kill_static_membership_and_generation_0_are_reported_not_failed() {
        let t0 = Instant::now();
        let events = member(t0, Vec::new());
        let mut killed = window(t0);
        killed.killed = true;
        let unsure = |o: crate::verdict::Outcome| match o {
            crate::verdict::Outcome::Inconclusive { reason } => reason,
            other => panic!("{other:?}"),
        };
        assert!(unsure(judged(&events, killed)).contains("killed"));
        // Killed by the harness past its grace after a SIGTERM: it hung, and not leaving is
        // its failure.
        let mut hung = killed;
        hung.hung = true;
        let outcome = judged(&events, hung);
        assert!(outcome.is_violation(), "{outcome:?}");
        let left = member(t0, vec![event(t0, 1100, 1, leave("m-1"))]);
        assert!(!judged(&left, hung).is_violation());
        let statics = vec![
            event(t0, 10, 1, join("", Some("pod-0"))),
            event(t0, 30, 1, beat("m-1", 1)),
        ];
        assert!(unsure(judged(&statics, window(t0))).contains("static member"));
        let mut zero = vec![
            event(t0, 10, 1, join("", None)),
            event(t0, 30, 1, beat("m-1", 0)),
        ];
        assert!(unsure(judged(&zero, window(t0))).contains("generation 0"));
        // librdkafka leaves in generation 0 too: its silence there is the target's.
        for e in &mut zero {
            e.software = Some("librdkafka".into());
        }
        assert!(judged(&zero, window(t0)).is_violation());
    }

    #[test]
    fn only_the_targets_own_members_in_its_run_count() {
        let t0 = Instant::now();
        // Another group, and the restart's member after the exit: not this stop's business.
        let mut events = member(t0, vec![event(t0, 1010, 1, leave("m-1"))]);
        let mut other = event(t0, 50, 2, beat("x-1", 1));
        other.group = "other".into();
        events.push(other);
        events.push(event(t0, 2000, 3, beat("m-2", 2)));
        // A member that left in a rebalance before the stop, then rejoined as m-1.
        events.insert(0, event(t0, 5, 1, beat("m-0", 1)));
        events.insert(1, event(t0, 8, 1, leave("m-0")));
        assert!(matches!(
            judged(&events, window(t0)),
            crate::verdict::Outcome::Pass { .. }
        ));
        // Nothing from the target at all.
        let nothing = judged(&[], window(t0));
        assert!(
            matches!(&nothing, crate::verdict::Outcome::Inconclusive { reason } if reason.contains("never joined")),
            "{nothing:?}"
        );
    }

    /// A Kafka outage longer than the session timeout: the broker drops the member, the
    /// consumer rejoins under a new id, and only that one is asked to leave at the stop.
    #[test]
    fn a_member_the_broker_dropped_before_the_stop_is_not_asked_to_leave() {
        let t0 = Instant::now();
        let mut events = vec![
            event(t0, 10, 1, join("", None)),
            event(t0, 20, 1, join("m-old", None)),
            event(t0, 30, 1, beat("m-old", 1)),
            // The outage: silence, then a new id on a new connection.
            event(t0, 60_000, 2, join("", None)),
            event(t0, 60_010, 2, join("m-new", None)),
            event(t0, 60_020, 2, beat("m-new", 2)),
            event(t0, 99_990, 2, beat("m-new", 2)),
            event(t0, 100_010, 2, leave("m-new")),
        ];
        let window = StopWindow {
            started: t0,
            stop_sent: Some(at(t0, 100_000)),
            exited: at(t0, 100_500),
            killed: false,
            hung: false,
        };
        let crate::verdict::Outcome::Pass { detail, .. } = judged(&events, window) else {
            panic!("{:?}", judged(&events, window))
        };
        assert!(
            detail.contains("m-new") && !detail.contains("m-old"),
            "{detail}"
        );
        // Within its session timeout of the stop, a silent member still counts.
        events.insert(3, event(t0, 99_000, 1, beat("m-old", 1)));
        assert!(judged(&events, window).is_violation());
    }

    #[test]
    fn reads_leave_group_in_every_encoding() {
        let v1 = Enc::request(LEAVE_GROUP, 1, false)
            .string(Some("g"))
            .string(Some("m-1"));
        let v3 = Enc::request(LEAVE_GROUP, 3, false)
            .string(Some("g"))
            .array(2)
            .string(Some("m-1"))
            .string(None)
            .string(Some("m-2"))
            .string(Some("instance-2"));
        let v5 = Enc::request(LEAVE_GROUP, 5, true)
            .string(Some("g"))
            .array(1)
            .string(Some("m-1"))
            .string(None)
            .string(Some("the consumer is being closed"))
            .tags()
            .tags();
        for (enc, members) in [
            (v1, vec!["m-1"]),
            (v3, vec!["m-1", "m-2"]),
            (v5, vec!["m-1"]),
        ] {
            let (client, group, request) = parse_request(&enc.bytes).expect("a LeaveGroup");
            assert_eq!((client.as_deref(), group.as_str()), (Some("rdkafk"), "g"));
            assert_eq!(request.member_ids(), members);
            assert!(matches!(request, GroupRequest::Leave { .. }));
        }
    }

    #[test]
    fn reads_join_heartbeat_sync_and_commit() {
        let join = Enc::request(JOIN_GROUP, 5, false)
            .string(Some("g"))
            .i32(45_000)
            .i32(300_000)
            .string(Some(""))
            .string(Some("static-1"));
        let (_, _, request) = parse_request(&join.bytes).unwrap();
        assert_eq!(
            request,
            GroupRequest::Join {
                member_id: String::new(),
                session_timeout_ms: 45_000,
                group_instance_id: Some("static-1".into()),
            }
        );
        assert!(
            request.member_ids().is_empty(),
            "a first join has no id yet"
        );
        let join_flexible = Enc::request(JOIN_GROUP, 7, true)
            .string(Some("g"))
            .i32(10_000)
            .i32(300_000)
            .string(Some("m-9"))
            .string(None);
        let (_, _, request) = parse_request(&join_flexible.bytes).unwrap();
        assert_eq!(request.member_ids(), ["m-9"]);
        for (key, version, flexible) in [(HEARTBEAT, 4, true), (SYNC_GROUP, 2, false)] {
            let enc = Enc::request(key, version, flexible)
                .string(Some("g"))
                .i32(3)
                .string(Some("m-9"));
            let (_, group, request) = parse_request(&enc.bytes).unwrap();
            assert_eq!((group.as_str(), request.member_ids()), ("g", vec!["m-9"]));
        }
        let commit = Enc::request(OFFSET_COMMIT, 8, true)
            .string(Some("g"))
            .i32(3)
            .string(Some("m-9"));
        let (_, _, request) = parse_request(&commit.bytes).unwrap();
        assert_eq!(
            request,
            GroupRequest::Commit {
                member_id: "m-9".into()
            }
        );
    }

    #[test]
    fn the_kip_848_heartbeat_says_join_beat_and_leave_by_epoch() {
        let beat = |epoch| {
            Enc::request(CONSUMER_GROUP_HEARTBEAT, 0, true)
                .string(Some("g"))
                .string(Some("m-1"))
                .i32(epoch)
                .string(None)
        };
        let kind = |epoch| parse_request(&beat(epoch).bytes).unwrap().2;
        assert!(matches!(kind(0), GroupRequest::Join { .. }));
        assert!(matches!(kind(5), GroupRequest::Heartbeat { .. }));
        assert_eq!(kind(-1).member_ids(), ["m-1"]);
        assert!(matches!(kind(-1), GroupRequest::Leave { .. }));
    }

    #[test]
    fn reads_the_client_library_from_api_versions() {
        let v3 = Enc::request(API_VERSIONS, 3, true)
            .string(Some("librdkafka"))
            .string(Some("2.10.0"))
            .tags();
        assert_eq!(
            parse_client_software(&v3.bytes),
            Some(("librdkafka".into(), "2.10.0".into()))
        );
        let v0 = Enc::request(API_VERSIONS, 0, false);
        assert_eq!(parse_client_software(&v0.bytes), None);
        let tap = GroupTap::default();
        tap.client_bytes(4, &v3.framed());
        let heartbeat = Enc::request(HEARTBEAT, 4, true)
            .string(Some("g"))
            .i32(0)
            .string(Some("m-1"))
            .tags();
        tap.client_bytes(4, &heartbeat.framed());
        assert_eq!(tap.events("g")[0].software.as_deref(), Some("librdkafka"));
    }

    #[test]
    fn other_requests_and_garbage_are_ignored() {
        // A Fetch (api key 1) and truncated frames.
        assert_eq!(parse_request(&Enc::request(1, 11, false).bytes), None);
        let leave = Enc::request(LEAVE_GROUP, 1, false)
            .string(Some("g"))
            .string(Some("m-1"));
        for cut in 0..leave.bytes.len() {
            assert_eq!(parse_request(&leave.bytes[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn frames_split_across_reads_and_big_frames_are_skipped() {
        let tap = GroupTap::default();
        let leave = Enc::request(LEAVE_GROUP, 1, false)
            .string(Some("g"))
            .string(Some("m-1"))
            .framed();
        // A 2 MiB frame (a produce, say) before it, then the leave a byte at a time.
        let mut big = (2i32 << 20).to_be_bytes().to_vec();
        big.extend(vec![0u8; 2 << 20]);
        for piece in big.chunks(32 * 1024) {
            tap.client_bytes(1, piece);
        }
        for byte in &leave {
            tap.client_bytes(1, std::slice::from_ref(byte));
        }
        // Another connection's bytes do not mix in.
        tap.client_bytes(2, &leave[..5]);
        let events = tap.events("g");
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].link, 1);
        assert_eq!(events[0].request.member_ids(), ["m-1"]);
        tap.closed(2);
        tap.client_bytes(2, &leave[5..]);
        assert_eq!(
            tap.events("g").len(),
            1,
            "a closed link's half frame is gone"
        );
        assert!(tap.events("other").is_empty());
    }
}
