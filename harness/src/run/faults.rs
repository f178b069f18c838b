//! Plays a scenario's `[[faults]]` while the target runs, and records when each step took
//! effect. Whatever the schedule did is undone when the run ends: every proxy it touched is
//! up again with none of its toxics, and every dependency it stopped, killed or paused runs
//! again.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::fault::{FaultError, FaultProxy, ProxySwitch, Toxic};
use crate::infra::{DependencyKind, Infra, LifecycleAction};
use crate::scenario::{Action, FaultStep, Instance, Point};
use crate::target::Hooks;

/// The proxies a schedule may act on.
pub type Proxies = BTreeMap<(DependencyKind, Instance), ProxySwitch>;

/// The infrastructure, for the schedule's stop, start, kill, pause and resume.
pub type SharedInfra = Arc<Mutex<Infra>>;

/// What a schedule may act on: proxies, the dependencies themselves, and the target.
pub struct Reachable {
    proxies: Proxies,
    infra: Option<SharedInfra>,
    signals: mpsc::UnboundedSender<crate::target::Scheduled>,
}

/// A run's fault schedule: its player, and the target's own Redis proxy when a step
/// partitions the target alone.
pub struct Schedule {
    player: Player,
    own: Option<FaultProxy>,
}

impl Schedule {
    /// Starts playing `steps` on the shared proxies (`switches`) and, for steps on the target
    /// alone, a proxy of its own in front of the shared Redis one. `None` without steps.
    pub async fn start(
        steps: &[FaultStep],
        switches: &BTreeMap<DependencyKind, ProxySwitch>,
        infra: Option<SharedInfra>,
    ) -> Result<Option<(Schedule, Hooks)>, FaultError> {
        if steps.is_empty() {
            return Ok(None);
        }
        let mut proxies: Proxies = switches
            .iter()
            .map(|(d, s)| ((*d, Instance::All), s.clone()))
            .collect();
        let mut own = None;
        if let (true, Some(shared)) = (
            steps.iter().any(|s| s.instance == Instance::Primary),
            switches.get(&DependencyKind::Redis),
        ) {
            let proxy = FaultProxy::start(
                "redis (the target's own)",
                std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                shared.listen_addr(),
            )
            .await?;
            proxies.insert((DependencyKind::Redis, Instance::Primary), proxy.switch());
            own = Some(proxy);
        }
        let (player, hooks) = Player::start(steps, proxies, infra);
        Ok(Some((Schedule { player, own }, hooks)))
    }

    /// The Redis URL the target is given: its own proxy's, when it has one.
    pub fn own_redis_url(&self) -> Option<String> {
        self.own
            .as_ref()
            .map(|own| format!("redis://{}", own.listen_addr()))
    }

    /// Ends the schedule (see [`Player::finish`]) and closes the target's own proxy.
    pub async fn finish(self) -> Vec<(Instant, String)> {
        let notes = self.player.finish().await;
        if let Some(own) = self.own {
            own.close().await;
        }
        notes
    }
}

/// A schedule being played.
pub struct Player {
    /// Taken by `finish`.
    task: Option<tokio::task::JoinHandle<Vec<(Instant, String)>>>,
    done: CancellationToken,
}

/// When a lifecycle point came, once it has.
type PointAt = Option<Instant>;

impl Player {
    /// Starts playing `steps`; the returned hooks tell it when the target is ready and when
    /// its stop was asked for. `start` is when the target started (near enough: now).
    pub fn start(
        steps: &[FaultStep],
        proxies: Proxies,
        infra: Option<SharedInfra>,
    ) -> (Player, Hooks) {
        let (ready_tx, ready_rx) = oneshot::channel::<()>();
        let (stop_tx, stop_rx) = oneshot::channel::<Instant>();
        let (signals, signals_rx) = mpsc::unbounded_channel();
        let done = CancellationToken::new();
        let mut steps = steps.to_vec();
        steps.sort_by_key(|s| (s.after, s.at_ms));
        let reach = Reachable {
            proxies,
            infra,
            signals,
        };
        let task = tokio::spawn(play(steps, reach, ready_rx, stop_rx, done.clone()));
        let hooks = Hooks {
            on_ready: vec![ready_tx],
            on_stop: vec![stop_tx],
            signals: Some(signals_rx),
            ..Hooks::default()
        };
        (
            Player {
                task: Some(task),
                done,
            },
            hooks,
        )
    }

    /// Ends the schedule (steps not yet due are noted as not played), undoes what it did, and
    /// returns what happened when.
    pub async fn finish(mut self) -> Vec<(Instant, String)> {
        self.done.cancel();
        match self.task.take() {
            Some(task) => task
                .await
                .unwrap_or_else(|e| vec![(Instant::now(), format!("fault schedule failed: {e}"))]),
            None => Vec::new(),
        }
    }
}

impl Drop for Player {
    /// A schedule dropped without `finish` (the run left early) stops playing: no step may
    /// act on the infrastructure after the run is over.
    fn drop(&mut self) {
        self.done.cancel();
    }
}

async fn play(
    steps: Vec<FaultStep>,
    reach: Reachable,
    ready_rx: oneshot::Receiver<()>,
    stop_rx: oneshot::Receiver<Instant>,
    done: CancellationToken,
) -> Vec<(Instant, String)> {
    let started = Instant::now();
    let mut notes = Vec::new();
    let mut added: Added = BTreeMap::new();
    // Each dependency the schedule stopped, killed or paused: what it did last.
    let mut acted: BTreeMap<DependencyKind, LifecycleAction> = BTreeMap::new();
    let (mut ready_rx, mut stop_rx) = (Some(ready_rx), Some(stop_rx));
    let (mut ready, mut stop): (PointAt, PointAt) = (None, None);
    // Each step is played when it is due, whichever point it is timed from: a step after the
    // stop may come before a late step after ready (a scheduled signal is an early stop). A
    // repeated step goes back in, `every_ms` later, with the count of times it was played.
    let mut pending: Vec<Due> = steps
        .into_iter()
        .map(|step| Due { step, played: 0 })
        .collect();
    while !pending.is_empty() {
        let due = |Due { step, .. }: &Due| {
            let base = match step.after {
                Point::Start => Some(started),
                Point::Ready => ready,
                Point::Stop => stop,
            };
            base.map(|at| at + Duration::from_millis(step.at_ms))
        };
        let next = pending
            .iter()
            .enumerate()
            .filter_map(|(i, step)| due(step).map(|at| (at, i)))
            .min();
        tokio::select! {
            () = sleep_until(next.map(|(at, _)| at)) => {}
            got = recv(&mut ready_rx) => {
                ready = got.map(|()| Instant::now());
                continue;
            }
            got = recv(&mut stop_rx) => {
                stop = got;
                continue;
            }
            () = done.cancelled() => break,
        }
        let Some((_, i)) = next else { break };
        let removed = pending.remove(i);
        if let Some(again) = removed.again() {
            pending.push(again);
        }
        let step = &removed.step;
        let outcome = act(step, &reach, &mut acted, &mut added).await;
        let at = Instant::now();
        let nth = removed.nth();
        notes.push((
            at,
            match outcome {
                Ok(()) => format!(
                    "fault: {} ({} + {} ms{nth})",
                    step.describe(),
                    step.after,
                    step.at_ms
                ),
                Err(e) => format!("fault failed: {}{nth}: {e}", step.describe()),
            },
        ));
    }
    notes.extend(not_played(&pending));
    // The run may go on after the last step; what the schedule did stays until it ends.
    done.cancelled().await;
    notes.extend(undo(&reach, acted, &added).await);
    notes
}

/// The toxics added, by proxy.
type Added = BTreeMap<(DependencyKind, Instance), Vec<String>>;

/// Plays one step: a signal to the target, an action on a dependency (recorded in `acted`,
/// to be undone), or a proxy fault (its toxic recorded in `added`).
async fn act(
    step: &FaultStep,
    reach: &Reachable,
    acted: &mut BTreeMap<DependencyKind, LifecycleAction>,
    added: &mut Added,
) -> Result<(), String> {
    match (step.action, step.dependency) {
        (Action::Signal, _) => match step.signal {
            // The target's runner sends it, and says so on the timeline.
            Some(signal) => reach
                .signals
                .send(crate::target::Scheduled {
                    service: step.service.clone(),
                    signal,
                    redeploy: None,
                    own_signal: false,
                })
                .map_err(|_| "the target is gone".to_owned()),
            None => Err("no signal named".to_owned()),
        },
        // The graph's runner stops and starts the service's instances.
        (Action::Restart | Action::Rollout, _) => reach
            .signals
            .send(crate::target::Scheduled {
                service: step.service.clone(),
                signal: step.signal.unwrap_or_default(),
                redeploy: Some(match step.action {
                    Action::Rollout => {
                        crate::target::Redeploy::Rollout(step.stop_old.unwrap_or_default())
                    }
                    _ => crate::target::Redeploy::Restart,
                }),
                own_signal: step.signal.is_none(),
            })
            .map_err(|_| "the target is gone".to_owned()),
        (_, None) => Err("no dependency named".to_owned()),
        (action, Some(dependency)) => match (action.lifecycle(), &reach.infra) {
            (Some(lifecycle), Some(infra)) => {
                let acting = infra.lock().await.act(dependency, lifecycle).await;
                if acting.is_ok() {
                    acted.insert(dependency, lifecycle);
                }
                acting.map_err(|e| e.to_string())
            }
            (Some(_), None) => Err("this run has no hold on the dependencies".to_owned()),
            (None, _) => {
                let key = (dependency, step.instance);
                match reach.proxies.get(&key) {
                    Some(proxy) => apply(step, proxy, added.entry(key).or_default()).await,
                    None => Err("no such proxy".to_owned()),
                }
            }
        },
    }
}

/// The steps left when the run ended. A step repeated until the run ends is not "not played"
/// for its next time; one with a count left, or never played at all, is.
fn not_played(pending: &[Due]) -> Vec<(Instant, String)> {
    pending
        .iter()
        .filter(|rest| rest.played == 0 || rest.step.times.is_some())
        .map(|rest| {
            (
                Instant::now(),
                format!(
                    "fault not played: {} at {} + {} ms{} (the run ended first)",
                    rest.step.describe(),
                    rest.step.after,
                    rest.step.at_ms,
                    rest.nth()
                ),
            )
        })
        .collect()
}

/// Undoes what the schedule did: each dependency it stopped, killed or paused runs again,
/// its toxics go, every proxy is up. Returns what could not be undone.
async fn undo(
    reach: &Reachable,
    acted: BTreeMap<DependencyKind, LifecycleAction>,
    added: &Added,
) -> Vec<(Instant, String)> {
    let mut notes = Vec::new();
    for (dependency, last) in acted {
        let undo = match last {
            LifecycleAction::Stop | LifecycleAction::Kill => LifecycleAction::Start,
            LifecycleAction::Pause => LifecycleAction::Resume,
            LifecycleAction::Start | LifecycleAction::Resume => continue,
        };
        if let Some(infra) = &reach.infra
            && let Err(e) = infra.lock().await.act(dependency, undo).await
        {
            notes.push((
                Instant::now(),
                format!("could not {undo} {} again: {e}", dependency.as_str()),
            ));
        }
    }
    for (key, names) in added {
        if let Some(proxy) = reach.proxies.get(key) {
            for name in names {
                let _ = proxy.remove_toxic(name);
            }
        }
    }
    for proxy in reach.proxies.values() {
        if proxy.up().await.is_err() {
            notes.push((
                Instant::now(),
                format!("could not bring the {} proxy up again", proxy.name()),
            ));
        }
    }
    notes
}

/// A step waiting to be played, and how many times it was played before.
struct Due {
    step: FaultStep,
    played: u32,
}

impl Due {
    /// The step's next time, `every_ms` after this one, if it repeats and has times left.
    fn again(&self) -> Option<Due> {
        let every = self.step.every_ms?;
        let played = self.played + 1;
        if self.step.times.is_some_and(|times| played >= times) {
            return None;
        }
        let mut step = self.step.clone();
        step.at_ms = step.at_ms.saturating_add(every);
        Some(Due { step, played })
    }

    /// `, time 2 of 6` (or `, time 2, every 600000 ms`) for a repeated step; nothing otherwise.
    fn nth(&self) -> String {
        match (self.step.every_ms, self.step.times) {
            (None, _) => String::new(),
            (Some(_), Some(times)) => format!(", time {} of {times}", self.played + 1),
            (Some(every), None) => format!(", time {}, every {every} ms", self.played + 1),
        }
    }
}

/// The value a lifecycle point's channel yields, once; then, or if it never comes (the
/// sender dropped), pending for good.
async fn recv<T>(rx: &mut Option<oneshot::Receiver<T>>) -> Option<T> {
    match rx.as_mut() {
        Some(receiver) => {
            let got = receiver.await.ok();
            *rx = None;
            if got.is_none() {
                // Never coming: a step timed from it stays unplayed.
                std::future::pending::<()>().await;
            }
            got
        }
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`; pending for good without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Applies one step; `added` holds the names of the toxics the schedule put on this proxy.
async fn apply(
    step: &FaultStep,
    proxy: &ProxySwitch,
    added: &mut Vec<String>,
) -> Result<(), String> {
    match step.action {
        Action::Down => {
            proxy.down();
            Ok(())
        }
        Action::Up => proxy.up().await.map_err(|e| e.to_string()),
        Action::Clear => {
            for name in added.drain(..) {
                let _ = proxy.remove_toxic(&name);
            }
            Ok(())
        }
        _ => {
            let kind = step.toxic().ok_or("not a toxic")?;
            let name = format!("schedule-{}-{}", kind.type_name(), added.len() + 1);
            let toxic = Toxic::new(kind).named(name);
            let toxic = proxy.add_toxic(toxic).map_err(|e| e.to_string())?;
            added.push(toxic.name);
            Ok(())
        }
    }
}
