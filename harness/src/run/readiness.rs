//! `readiness_truthful`: poll `/health` and `/ready` through the run, take each dependency
//! down and up again once the target is ready, and judge what the endpoints said.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::fault::ProxySwitch;
use crate::infra::DependencyKind;
use crate::scenario::Readiness;
use crate::target::Hooks;
use crate::verdict::Outcome;

/// How often the endpoints are asked.
const POLL: Duration = Duration::from_millis(50);
/// How long the target runs, once ready, before the first outage: the baseline.
const BASELINE: Duration = Duration::from_millis(500);
/// How many items evidence lists before it summarises.
const LISTED: usize = 10;
/// How many polls inside an outage, and after it, make it judged: fewer, and what /ready
/// said there is not evidence enough either way.
const MIN_POLLS: usize = 3;
/// How long a service is given, after its stop signal was sent, to see it: a poll sent in
/// this window reached a service that may not have run its handler yet, so its 200 is noted,
/// not failed. A poll sent later that answers 200 is a lie.
const DRAIN_GRACE: Duration = Duration::from_millis(250);

/// One poll of both endpoints: their HTTP status, or `None` when they did not answer.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub at: Instant,
    pub health: Option<u16>,
    pub ready: Option<u16>,
}

/// One dependency outage, as played.
#[derive(Clone, Debug)]
pub struct Outage {
    pub dependency: DependencyKind,
    pub required: bool,
    pub down_at: Instant,
    pub up_at: Option<Instant>,
}

/// Everything `readiness_truthful` is decided from.
#[derive(Debug, Default)]
pub struct ReadinessLog {
    pub ready_at: Option<Instant>,
    pub samples: Vec<Sample>,
    pub outages: Vec<Outage>,
    pub stop_at: Option<Instant>,
    /// Outages that could not be played, and why.
    pub notes: Vec<String>,
}

/// Polls the endpoints and plays the outages in the background.
pub struct Player {
    task: tokio::task::JoinHandle<ReadinessLog>,
    done: CancellationToken,
}

impl Player {
    /// Starts waiting for the target to be ready; the hooks go to the target's runner.
    pub fn start(
        config: &Readiness,
        switches: BTreeMap<DependencyKind, ProxySwitch>,
    ) -> (Player, Hooks) {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let (early_tx, early_rx) = oneshot::channel();
        let done = CancellationToken::new();
        let task = tokio::spawn(play(
            config.clone(),
            switches,
            ready_rx,
            stop_rx,
            config.stop_after_outages.then_some(early_tx),
            done.clone(),
        ));
        let hooks = Hooks {
            on_ready: vec![ready_tx],
            on_stop: vec![stop_tx],
            stop_early: Some(early_rx),
            ..Hooks::default()
        };
        (Player { task, done }, hooks)
    }

    /// Ends the polling (every dependency is brought back up) and returns the log.
    pub async fn finish(self) -> ReadinessLog {
        self.done.cancel();
        self.task.await.unwrap_or_default()
    }
}

async fn play(
    config: Readiness,
    switches: BTreeMap<DependencyKind, ProxySwitch>,
    ready: oneshot::Receiver<()>,
    stop: oneshot::Receiver<Instant>,
    early: Option<oneshot::Sender<String>>,
    done: CancellationToken,
) -> ReadinessLog {
    let mut log = ReadinessLog::default();
    tokio::select! {
        ready = ready => if ready.is_err() { return log },
        () = done.cancelled() => return log,
    }
    log.ready_at = Some(Instant::now());
    let samples = Arc::new(Mutex::new(Vec::new()));
    let poller = tokio::spawn(poll(
        config.health.clone(),
        config.ready.clone(),
        samples.clone(),
        done.clone(),
    ));
    let mut stop = stop;
    let stopped = async |stop: &mut oneshot::Receiver<Instant>| stop.await.ok();

    // The outages, one dependency at a time, unless the stop comes first.
    let plan = config
        .required
        .iter()
        .map(|d| (*d, true))
        .chain(config.optional.iter().map(|d| (*d, false)));
    let script = async {
        tokio::time::sleep(BASELINE).await;
        let mut outages = Vec::new();
        for (dependency, required) in plan {
            let Some(switch) = switches.get(&dependency) else {
                continue;
            };
            switch.down();
            let mut outage = Outage {
                dependency,
                required,
                down_at: Instant::now(),
                up_at: None,
            };
            tokio::time::sleep(Duration::from_millis(config.outage_ms)).await;
            let _ = switch.up().await;
            outage.up_at = Some(Instant::now());
            outages.push(outage);
            // Time to recover before the next one.
            tokio::time::sleep(Duration::from_millis(config.within_ms)).await;
        }
        outages
    };
    let mut stop_at = None;
    tokio::select! {
        outages = script => {
            log.outages = outages;
            if let Some(early) = early {
                let _ = early.send("the dependency outages are over: stopping".to_owned());
            }
        }
        at = stopped(&mut stop) => {
            stop_at = at;
            log.notes.push("the stop came before the outages were over".to_owned());
        }
        () = done.cancelled() => {}
    }
    // Whatever was cut short, every dependency is up again.
    for switch in switches.values() {
        let _ = switch.up().await;
    }
    if stop_at.is_none() {
        tokio::select! {
            at = stopped(&mut stop) => stop_at = at,
            () = done.cancelled() => {}
        }
    }
    log.stop_at = stop_at;
    // Through the drain, until the run ends.
    done.cancelled().await;
    let _ = poller.await;
    log.samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|e| e.into_inner()));
    log
}

async fn poll(
    health: String,
    ready: String,
    samples: Arc<Mutex<Vec<Sample>>>,
    done: CancellationToken,
) {
    let ask = |url: String| async move {
        tokio::time::timeout(Duration::from_secs(1), crate::target::http_status(&url))
            .await
            .ok()
            .flatten()
    };
    while !done.is_cancelled() {
        let at = Instant::now();
        let (h, r) = tokio::join!(ask(health.clone()), ask(ready.clone()));
        samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Sample {
                at,
                health: h,
                ready: r,
            });
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            () = done.cancelled() => {}
        }
    }
}

fn status(code: Option<u16>) -> String {
    code.map_or("no answer".to_owned(), |c| c.to_string())
}

/// Decides `readiness_truthful` from what the endpoints said.
pub fn judge(config: &Readiness, log: &ReadinessLog) -> Outcome {
    let Some(ready_at) = log.ready_at else {
        return Outcome::inconclusive("the target was never ready");
    };
    let mut judged = Judged {
        log,
        ready_at,
        within: Duration::from_millis(config.within_ms),
        violations: Vec::new(),
        findings: Vec::new(),
        unseen: Vec::new(),
    };
    judged.health();
    judged.baseline();
    for outage in &log.outages {
        let during: Vec<&Sample> = log
            .samples
            .iter()
            .filter(|s| s.at >= outage.down_at && s.at < outage.up_at.unwrap_or(outage.down_at))
            .collect();
        judged.outage_seen(outage, &during);
        if outage.required {
            judged.required_down(outage, &during);
            judged.back_after(outage);
        } else {
            judged.optional_down(outage, &during);
        }
    }
    judged.drain();
    judged.verdict(config)
}

/// What [`judge`] found so far: each part of the run adds to it.
struct Judged<'a> {
    log: &'a ReadinessLog,
    ready_at: Instant,
    within: Duration,
    violations: Vec<String>,
    findings: Vec<String>,
    /// What was not seen well enough to judge.
    unseen: Vec<String>,
}

impl Judged<'_> {
    /// Milliseconds since ready.
    fn ms(&self, t: Instant) -> u128 {
        t.saturating_duration_since(self.ready_at).as_millis()
    }

    /// The samples before the stop.
    fn running(&self) -> impl Iterator<Item = &Sample> {
        let stop_at = self.log.stop_at;
        self.log
            .samples
            .iter()
            .filter(move |s| stop_at.is_none_or(|stop| s.at < stop))
    }

    /// /health: 200 whenever asked before the stop.
    fn health(&mut self) {
        let unhealthy: Vec<&Sample> = self.running().filter(|s| s.health != Some(200)).collect();
        if let Some(first) = unhealthy.first() {
            self.violations.push(format!(
                "/health answered {} at +{} ms ({} of {} polls before the stop were not 200)",
                status(first.health),
                self.ms(first.at),
                unhealthy.len(),
                self.running().count()
            ));
        }
    }

    /// The baseline: ready when it says it is.
    fn baseline(&mut self) {
        let first_down = self.log.outages.first().map(|o| o.down_at);
        let baseline: Vec<&Sample> = self
            .running()
            .filter(|s| first_down.is_none_or(|d| s.at < d))
            .collect();
        if !baseline.is_empty() && !baseline.iter().any(|s| s.ready == Some(200)) {
            self.violations.push(format!(
                "/ready never answered 200 before the first outage ({} polls; last: {})",
                baseline.len(),
                status(baseline.last().and_then(|s| s.ready))
            ));
        }
    }

    /// An outage polled too few times to judge is said so.
    fn outage_seen(&mut self, outage: &Outage, during: &[&Sample]) {
        if during.len() < MIN_POLLS {
            let up_at = outage.up_at.unwrap_or(outage.down_at);
            self.unseen.push(format!(
                "{} was down {} ms, polled {} time(s) inside it (at least {MIN_POLLS} judge it)",
                outage.dependency,
                up_at.duration_since(outage.down_at).as_millis(),
                during.len()
            ));
        }
    }

    /// A required dependency down: /ready not 200 within `within_ms`, and for the whole outage.
    fn required_down(&mut self, outage: &Outage, during: &[&Sample]) {
        let dep = outage.dependency;
        let up_at = outage.up_at.unwrap_or(outage.down_at);
        match during.iter().find(|s| s.ready != Some(200)) {
            Some(s) if s.at.duration_since(outage.down_at) <= self.within => {
                self.findings.push(format!(
                    "{dep} down: /ready {} after {} ms",
                    status(s.ready),
                    s.at.duration_since(outage.down_at).as_millis()
                ));
                // Not ready must last as long as the dependency is gone: one 503, then 200
                // again while it is still down, is a lie.
                let flapped: Vec<&&Sample> = during
                    .iter()
                    .filter(|later| later.at > s.at && later.ready == Some(200))
                    .collect();
                if let Some(back) = flapped.first() {
                    self.violations.push(format!(
                        "{dep} (required) still down: /ready answered 200 again at +{} ms, {} ms \
                         after it went {} ({} of the {} later polls inside the outage said 200)",
                        self.ms(back.at),
                        back.at.duration_since(s.at).as_millis(),
                        status(s.ready),
                        flapped.len(),
                        during.iter().filter(|later| later.at > s.at).count()
                    ));
                }
            }
            Some(s) => self.violations.push(format!(
                "{dep} (required) down at +{} ms: /ready still 200 until {} ms later (limit {} ms)",
                self.ms(outage.down_at),
                s.at.duration_since(outage.down_at).as_millis(),
                self.within.as_millis()
            )),
            None => self.violations.push(format!(
                "{dep} (required) down for {} ms from +{} ms: /ready answered 200 throughout ({} polls)",
                up_at.duration_since(outage.down_at).as_millis(),
                self.ms(outage.down_at),
                during.len()
            )),
        }
    }

    /// Back to ready once a required dependency is back, before the next outage or the stop.
    fn back_after(&mut self, outage: &Outage) {
        let dep = outage.dependency;
        let up_at = outage.up_at.unwrap_or(outage.down_at);
        let next = self
            .log
            .outages
            .iter()
            .map(|o| o.down_at)
            .find(|d| *d > up_at)
            .or(self.log.stop_at);
        let after: Vec<&Sample> = self
            .log
            .samples
            .iter()
            .filter(|s| s.at >= up_at && next.is_none_or(|n| s.at < n))
            .collect();
        match after.iter().find(|s| s.ready == Some(200)) {
            Some(s) => self.findings.push(format!(
                "back to 200 {} ms after {dep} returned",
                s.at.duration_since(up_at).as_millis()
            )),
            None if after.len() < MIN_POLLS => self.unseen.push(format!(
                "/ready polled {} time(s) after {dep} came back, before the next outage or \
                 the stop: whether it became ready again was not seen",
                after.len()
            )),
            None => self.violations.push(format!(
                "/ready did not answer 200 again after {dep} came back ({} polls over {} ms)",
                after.len(),
                after
                    .last()
                    .map_or(0, |s| s.at.duration_since(up_at).as_millis())
            )),
        }
    }

    /// An optional dependency down: still ready, degraded.
    fn optional_down(&mut self, outage: &Outage, during: &[&Sample]) {
        let dep = outage.dependency;
        let refused: Vec<&&Sample> = during.iter().filter(|s| s.ready != Some(200)).collect();
        match refused.first() {
            None => self
                .findings
                .push(format!("{dep} (optional) down: stayed ready, degraded")),
            Some(s) => self.violations.push(format!(
                "{dep} (optional) down at +{} ms: /ready answered {} {} ms later ({} of {} polls): it should run degraded",
                self.ms(outage.down_at),
                status(s.ready),
                s.at.duration_since(outage.down_at).as_millis(),
                refused.len(),
                during.len()
            )),
        }
    }

    /// The drain: never 200 once the service had time to see its stop signal.
    fn drain(&mut self) {
        let Some(stop_at) = self.log.stop_at else {
            return;
        };
        let ms = |s: &Sample| s.at.duration_since(stop_at).as_millis();
        let drained: Vec<&Sample> = self.log.samples.iter().filter(|s| s.at > stop_at).collect();
        let (early, late): (Vec<&Sample>, Vec<&Sample>) = drained
            .iter()
            .partition(|s| s.at.duration_since(stop_at) < DRAIN_GRACE);
        let lying: Vec<&&Sample> = late.iter().filter(|s| s.ready == Some(200)).collect();
        if let Some(s) = lying.first() {
            self.violations.push(format!(
                "/ready answered 200 {} ms after the stop, while draining ({} such polls)",
                ms(s),
                lying.len()
            ));
            return;
        }
        let early_200 = early.iter().filter(|s| s.ready == Some(200)).count();
        let grace = DRAIN_GRACE.as_millis();
        self.findings.push(match (drained.len(), early_200) {
            (0, _) => "no poll fell in the drain (it was shorter than a poll)".to_owned(),
            (_, 0) => format!("not ready while draining ({} polls)", drained.len()),
            (n, k) if k == n => format!(
                "ready for {} ms after the stop, then gone: within the {grace} ms a service \
                 is given to see its signal",
                early.iter().map(|s| ms(s)).max().unwrap_or(0)
            ),
            (n, k) => format!(
                "{k} poll(s) answered 200 within {grace} ms of the stop, before the service \
                 could see its signal; not ready in the other {} poll(s)",
                n - k
            ),
        });
    }

    /// The outcome: a violation if any; else a pass only if every listed outage played and
    /// everything was seen.
    fn verdict(mut self, config: &Readiness) -> Outcome {
        let log = self.log;
        if !self.violations.is_empty() {
            let total = self.violations.len();
            self.violations.truncate(LISTED);
            return Outcome::violation(
                format!("/health or /ready did not tell the truth ({total} finding(s))"),
                self.violations,
            );
        }
        let detail = format!(
            "{} ({} polls)",
            if self.findings.is_empty() {
                "/health and /ready answered as they should".to_owned()
            } else {
                self.findings.join("; ")
            },
            log.samples.len()
        );
        // Every listed outage must have played, and been polled: "0 of 2 played" is no pass.
        let wanted = config.required.len() + config.optional.len();
        if log.outages.len() < wanted {
            let played: Vec<String> = log
                .outages
                .iter()
                .map(|o| o.dependency.to_string())
                .collect();
            self.unseen.insert(
                0,
                format!(
                    "only {} of the {wanted} listed outage(s) played ({}){}",
                    log.outages.len(),
                    if played.is_empty() {
                        "none".to_owned()
                    } else {
                        played.join(", ")
                    },
                    log.notes
                        .first()
                        .map(|n| format!(": {n}"))
                        .unwrap_or_default()
                ),
            );
        }
        if !self.unseen.is_empty() {
            return Outcome::inconclusive(format!(
                "{}; what was seen: {detail}",
                self.unseen.join("; ")
            ));
        }
        Outcome::pass(detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log: ready at 0; kafka (required) down 1000..3000; redis (optional) down 5000..7000;
    /// stop at 9000; `ready_at(ms)` gives /ready's answer at each 50 ms poll.
    fn log(ready_at: impl Fn(u64) -> Option<u16>) -> (Readiness, ReadinessLog) {
        let config = Readiness {
            required: vec![DependencyKind::Kafka],
            optional: vec![DependencyKind::Redis],
            ..Readiness::default()
        };
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let log = ReadinessLog {
            ready_at: Some(t0),
            samples: (0..200)
                .map(|i| Sample {
                    at: at(i * 50),
                    health: (i * 50 < 9_000).then_some(200),
                    ready: ready_at(i * 50),
                })
                .collect(),
            outages: vec![
                Outage {
                    dependency: DependencyKind::Kafka,
                    required: true,
                    down_at: at(1_000),
                    up_at: Some(at(3_000)),
                },
                Outage {
                    dependency: DependencyKind::Redis,
                    required: false,
                    down_at: at(5_000),
                    up_at: Some(at(7_000)),
                },
            ],
            stop_at: Some(at(9_000)),
            notes: Vec::new(),
        };
        (config, log)
    }

    /// One 503 in an outage counted as truthful though /ready said 200 for the rest of it.
    #[test]
    fn a_ready_that_flaps_back_to_200_inside_an_outage_fails() {
        let (config, log) = log(|ms| match ms {
            1_200..1_300 => Some(503),
            9_000.. => None,
            _ => Some(200),
        });
        let Outcome::Violation { evidence, .. } = judge(&config, &log) else {
            panic!("a flap is a lie")
        };
        assert!(
            evidence.iter().any(|e| e
                .contains("kafka (required) still down: /ready answered 200 again at +1300 ms")),
            "{evidence:?}"
        );
    }

    /// When the stop won the race with the outages, "0 of 2 played" was a PASS.
    #[test]
    fn outages_that_did_not_play_leave_it_undecided() {
        let (config, mut log) = log(|ms| match ms {
            1_200..3_100 => Some(503),
            9_000.. => None,
            _ => Some(200),
        });
        log.outages.truncate(1);
        log.notes.push("the stop came first".into());
        let Outcome::Inconclusive { reason } = judge(&config, &log) else {
            panic!("{:?}", judge(&config, &log))
        };
        assert!(
            reason.starts_with(
                "only 1 of the 2 listed outage(s) played (kafka): the stop came first"
            ),
            "{reason}"
        );
        log.outages.clear();
        assert!(matches!(judge(&config, &log), Outcome::Inconclusive { .. }));
    }

    #[test]
    fn a_truthful_service_passes() {
        let (config, log) = log(|ms| match ms {
            1_200..3_100 => Some(503),
            9_000.. => None,
            _ => Some(200),
        });
        let Outcome::Pass { detail, limits } = judge(&config, &log) else {
            panic!("truthful")
        };
        assert!(
            detail.starts_with("kafka down: /ready 503 after 200 ms; back to 200 100 ms after kafka returned; redis (optional) down: stayed ready, degraded; not ready while draining"),
            "{detail}"
        );
        assert_eq!(limits, None);
    }

    #[test]
    fn always_200_is_caught_twice() {
        let (config, log) = log(|_| Some(200));
        let Outcome::Violation { evidence, .. } = judge(&config, &log) else {
            panic!("lies")
        };
        assert_eq!(evidence.len(), 2, "{evidence:?}");
        assert!(
            evidence[0].contains("kafka (required) down for 2000 ms"),
            "{evidence:?}"
        );
        assert!(
            evidence[1].contains("/ready answered 200 250 ms after the stop"),
            "{evidence:?}"
        );
    }

    #[test]
    fn an_optional_dependency_must_not_unready_it() {
        let (config, log) = log(|ms| match ms {
            1_200..3_100 | 5_100..7_100 => Some(503),
            9_000.. => None,
            _ => Some(200),
        });
        let Outcome::Violation { evidence, .. } = judge(&config, &log) else {
            panic!("redis is optional")
        };
        assert_eq!(evidence.len(), 1, "{evidence:?}");
        assert!(
            evidence[0]
                .starts_with("redis (optional) down at +5000 ms: /ready answered 503 100 ms later"),
            "{evidence:?}"
        );
    }

    /// A poll sent as the signal went out reached a service that had not run its handler
    /// yet: its 200 is no lie (seen in CI: "/ready answered 200 0 ms after the stop"). A
    /// 200 once the service had time to see the signal is.
    #[test]
    fn the_drain_forgives_a_200_only_while_the_signal_is_on_its_way() {
        let healthy = |ms: u64| match ms {
            1_200..3_100 => Some(503),
            _ => Some(200),
        };
        for (until, verdict) in [
            (9_000, "not ready while draining (19 polls)"),
            (9_100, "2 poll(s) answered 200 within 250 ms of the stop"),
            (9_250, "/ready answered 200 250 ms after the stop"),
            (
                9_600,
                "/ready answered 200 250 ms after the stop, while draining (8 such polls)",
            ),
        ] {
            let (config, log) = log(|ms| if ms <= until { healthy(ms) } else { Some(503) });
            let said = format!("{:?}", judge(&config, &log));
            assert!(said.contains(verdict), "200 until {until}: {said}");
        }
        // Ready until the service went, inside the grace: the drain was too short to lie in.
        let (config, mut log) = log(healthy);
        log.samples
            .retain(|s| s.at <= log.stop_at.unwrap() + Duration::from_millis(200));
        let said = format!("{:?}", judge(&config, &log));
        assert!(
            said.contains("ready for 200 ms after the stop, then gone"),
            "{said}"
        );
        log.samples.retain(|s| s.at <= log.stop_at.unwrap());
        let said = format!("{:?}", judge(&config, &log));
        assert!(said.contains("no poll fell in the drain"), "{said}");
    }
}
