//! `quiesce soak`: the target under steady load for a long time, its memory sampled as it
//! goes, then stopped and checked as `quiesce run` does, with a leak verdict in MB/day.
//!
//! The soak is one cycle of a [`Session`] whose run lasts the soak's duration: `[stop]
//! after_ms` becomes the duration and a `[kafka]` workload produces `rate` records a second
//! for all of it (`records = rate × seconds`), so the stop comes once the last of them is
//! processed. A `[[faults]]` schedule plays as in a run; a step with `every_ms` repeats for
//! the whole soak, and each fault played is added to the timeline as an event when the run
//! ends, so the plot marks it. The process target's tree is sampled
//! every interval from its start to its exit; each sample is appended to `timeline.jsonl` and
//! flushed at once, so a soak killed outright keeps every sample it took. At the end the
//! timeline is judged (`quiesce_soak::trend`), plotted, and the verdict gets `memory_flat`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::run::{RunError, RunOptions, Session};
use crate::scenario::{Scenario, Target};
use crate::signal::SignalHandler;
use crate::verdict::{CheckName, CheckResult, Outcome, Verdict};

/// Records a second when neither the scenario nor `--rate` says.
pub const DEFAULT_RATE: u32 = 50;

/// The leak threshold a soak of `duration` can hold, in MB (2^20 bytes) a day: 25 under two
/// hours, 10 from two hours. In 30-minute soaks of the correct `event-pipeline`, anonymous
/// memory rose 10.6–13.3 MB/day while its allocator and client buffers warmed up (10 of 10
/// soaks; README, Measured): a 10 MB/day threshold called half of them leaks, 25 none, and
/// 25 still caught a 24.7 MB/day leak.
pub fn default_threshold(duration: Duration) -> f64 {
    match duration < Duration::from_secs(2 * 3600) {
        true => 25.0,
        false => 10.0,
    }
}

/// The live heap's threshold, whatever the soak's length, in MB a day. The probe's heap
/// carries none of that drift: it rose 2.0–4.5 MB/day in 14 30-minute soaks of the correct
/// `event-pipeline` (none called a leak at 10) while a 10 MB/day leak measured +10.0 to
/// +14.2 and was caught in 4 of 4 (README, Measured).
pub const HEAP_THRESHOLD: f64 = 10.0;

/// What `quiesce soak` was asked to do.
#[derive(Clone, Debug)]
pub struct SoakOptions {
    pub duration: Duration,
    /// Between two samples.
    pub interval: Duration,
    /// Samples before this are not judged: start-up allocations, caches filling.
    pub warmup: Duration,
    /// A growth above these, in MB a day, is a leak.
    pub thresholds: Thresholds,
    /// Records a second of a `[kafka]` workload, over the scenario's.
    pub rate: Option<u32>,
    /// The least time after the warm-up a verdict rests on; shorter is inconclusive.
    pub min_span: Duration,
    pub env: Vec<(String, String)>,
    /// Where the timeline, the plot, `soak.json` and the run's folder go.
    pub out_dir: PathBuf,
}

impl SoakOptions {
    /// The CLI's defaults: 1 s samples, a warm-up of a tenth of the soak (at most 5 min),
    /// [`default_threshold`], [`HEAP_THRESHOLD`] for the live heap.
    pub fn new(duration: Duration, out_dir: PathBuf) -> SoakOptions {
        SoakOptions {
            duration,
            interval: Duration::from_secs(1),
            warmup: (duration / 10).min(Duration::from_secs(300)),
            thresholds: Thresholds {
                resident: default_threshold(duration),
                heap: Some(HEAP_THRESHOLD),
            },
            rate: None,
            min_span: Duration::from_secs(600),
            env: Vec::new(),
            out_dir,
        }
    }
}

/// Why a soak could not run.
#[derive(Debug, thiserror::Error)]
pub enum SoakError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("{0}")]
    Scenario(String),
    /// A timeline that cannot be read: bad input to `soak report`.
    #[error("timeline {path}: {message}")]
    Timeline { path: PathBuf, message: String },
    /// The soak could not write its own timeline or plot.
    #[error("soak output {path}: {message}")]
    Output { path: PathBuf, message: String },
}

impl SoakError {
    pub fn exit_code(&self) -> i32 {
        match self {
            SoakError::Run(e) => e.exit_code(),
            SoakError::Scenario(_) => crate::exit_codes::BAD_INPUT,
            SoakError::Timeline { .. } => crate::exit_codes::BAD_INPUT,
            SoakError::Output { .. } => crate::exit_codes::INFRA_FAILED,
        }
    }
}

/// How the soak is going, for a progress bar.
#[derive(Clone, Debug, Default)]
pub struct Status {
    pub elapsed: Duration,
    pub samples: usize,
    pub rss_bytes: u64,
    /// The trend so far, once past the warm-up with enough samples.
    pub slope_mb_per_day: Option<f64>,
}

/// What a soak found.
#[derive(Debug, Serialize)]
pub struct SoakReport {
    /// The run's verdict, `memory_flat` included (one per instance for a graph).
    pub verdict: Verdict,
    /// What each process sampled showed: the target's, or each instance's of a graph.
    pub soaked: Vec<Soaked>,
}

/// One process's soak: its memory verdict, its timeline and its plot.
#[derive(Debug, Serialize)]
pub struct Soaked {
    /// The graph's instance (`worker#2`); none for a single target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    pub memory: quiesce_soak::Verdict,
    /// Each series judged alone (see [`Judged::each`]).
    pub series: Vec<quiesce_soak::Verdict>,
    pub samples: usize,
    pub timeline: PathBuf,
    pub plot: PathBuf,
}

/// Runs the soak. `progress` is told how it goes after each sample.
pub async fn soak(
    scenario: &Scenario,
    options: &SoakOptions,
    signals: &mut SignalHandler,
    progress: impl Fn(&Status) + Send + Sync + 'static,
) -> Result<SoakReport, SoakError> {
    let soaked = soak_scenario(scenario, options)?;
    let mut session = Session::start(&soaked, signals).await?;
    let report = soak_on(&mut session, scenario, options, signals, progress).await;
    let closed = session.close(signals).await;
    let report = report?;
    closed?;
    Ok(report)
}

/// [`soak`] on a session already started (several soaks on one infrastructure, one after
/// another): it is left running.
pub async fn soak_on(
    session: &mut Session,
    scenario: &Scenario,
    options: &SoakOptions,
    signals: &mut SignalHandler,
    progress: impl Fn(&Status) + Send + Sync + 'static,
) -> Result<SoakReport, SoakError> {
    let scenario = soak_scenario(scenario, options)?;
    std::fs::create_dir_all(&options.out_dir).map_err(|source| RunError::OutDir {
        path: options.out_dir.clone(),
        source,
    })?;
    let done = CancellationToken::new();
    let header = quiesce_soak::Header {
        scenario: scenario.name.clone(),
        pid: 0,
        interval_ms: options.interval.as_millis() as u64,
        started_unix_ms: 0,
        threshold_mb_per_day: options.thresholds.resident,
        heap_threshold_mb_per_day: options.thresholds.heap,
        warmup_ms: options.warmup.as_millis() as u64,
    };
    let mut env = options.env.clone();
    let samplers = match &scenario.target {
        // Each instance of a graph is sampled on its own, into a folder of its own.
        Target::Services(_) => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            session.report_instances_to(tx);
            tokio::spawn(sample_instances(
                rx,
                header,
                options.clone(),
                done.clone(),
                Box::new(progress),
            ))
        }
        _ => {
            // A target with quiesce's probe writes its live heap here (see quiesce-probe).
            let heap_file = std::path::absolute(options.out_dir.join("heap"))
                .unwrap_or_else(|_| options.out_dir.join("heap"));
            // Left by an earlier soak into the same folder, it would be read as this
            // target's.
            let _ = std::fs::remove_file(&heap_file);
            env.push((
                "QUIESCE_HEAP_FILE".to_owned(),
                heap_file.display().to_string(),
            ));
            let (pid_tx, pid_rx) = tokio::sync::watch::channel(None);
            session.report_pid_to(pid_tx);
            let timeline = options.out_dir.join("timeline.jsonl");
            let taken = sample(
                timeline.clone(),
                heap_file,
                header,
                pid_rx,
                options.clone(),
                done.clone(),
                Box::new(progress),
            );
            tokio::spawn(async move {
                vec![Sampled {
                    instance: None,
                    timeline,
                    taken: taken.await,
                }]
            })
        }
    };
    let run = RunOptions {
        env,
        out_dir: Some(options.out_dir.join("run")),
    };
    let cycle = session.cycle(&scenario, &run, signals).await;
    done.cancel();
    let sampled = samplers.await.map_err(|e| SoakError::Output {
        path: options.out_dir.clone(),
        message: e.to_string(),
    })?;
    let mut cycle = cycle?;
    let stalled = (scenario.kafka.is_some() && !cycle.interrupted)
        .then(|| workload_unfinished(&options.out_dir.join("run").join("kafka.json")))
        .flatten();
    let mut soaked = Vec::new();
    let mut judged = Vec::new();
    for sampled in sampled {
        let instance = sampled.instance.clone();
        let outcome = match settle(sampled, &cycle, options, stalled.as_deref()) {
            Ok((one, outcome)) => {
                soaked.push(one);
                outcome
            }
            // One instance's timeline that cannot be written is that instance's loss.
            Err(e) if instance.is_some() => Outcome::inconclusive(e.to_string()),
            Err(e) => return Err(e),
        };
        judged.push(instance.clone());
        cycle.verdict.results.push(CheckResult {
            check: CheckName::MemoryFlat,
            service: instance,
            outcome,
        });
    }
    // Every instance of a graph gets its row: one never started had nothing to sample.
    if matches!(scenario.target, Target::Services(_)) {
        let mut unsampled: Vec<String> = Vec::new();
        for name in cycle
            .verdict
            .results
            .iter()
            .filter_map(|r| r.service.as_ref())
        {
            if !judged.contains(&Some(name.clone())) && !unsampled.contains(name) {
                unsampled.push(name.clone());
            }
        }
        for name in unsampled {
            cycle.verdict.results.push(CheckResult {
                check: CheckName::MemoryFlat,
                service: Some(name),
                outcome: Outcome::inconclusive("never started: nothing was sampled"),
            });
        }
    }
    Ok(SoakReport {
        verdict: cycle.verdict,
        soaked,
    })
}

/// One process's samples, as its sampler left them.
struct Sampled {
    /// The graph's instance; none for a single target.
    instance: Option<String>,
    timeline: PathBuf,
    taken: Result<(usize, Option<quiesce_soak::TimelineWriter>), String>,
}

/// Samples each instance of a graph as it is announced, into `OUT/<instance>/timeline.jsonl`,
/// until the run ends. Progress is the first instance's.
async fn sample_instances(
    mut announced: tokio::sync::mpsc::UnboundedReceiver<crate::target::InstancePid>,
    header: quiesce_soak::Header,
    options: SoakOptions,
    done: CancellationToken,
    progress: Box<dyn Fn(&Status) + Send + Sync>,
) -> Vec<Sampled> {
    let mut progress = Some(progress);
    let mut samplers = Vec::new();
    loop {
        let (instance, pid_rx) = tokio::select! {
            next = announced.recv() => match next {
                Some(next) => next,
                None => break,
            },
            () = done.cancelled() => break,
        };
        // Apart from the run's own folder (`OUT/run`), whatever the services are called.
        let folder = options
            .out_dir
            .join("services")
            .join(instance.replace('#', "-"));
        let timeline = folder.join("timeline.jsonl");
        let header = quiesce_soak::Header {
            scenario: format!("{} / {instance}", header.scenario),
            ..header.clone()
        };
        let (options, done) = (options.clone(), done.clone());
        let progress = progress.take().unwrap_or_else(|| Box::new(|_: &Status| {}));
        samplers.push(tokio::spawn(async move {
            let taken = match std::fs::create_dir_all(&folder) {
                // No heap file: the instances would share it (a graph's services run with
                // no probe heap of their own).
                Ok(()) => {
                    let heap = folder.join("heap");
                    let sampled = sample(
                        timeline.clone(),
                        heap,
                        header,
                        pid_rx,
                        options,
                        done,
                        progress,
                    );
                    sampled.await
                }
                Err(e) => Err(format!("{}: {e}", folder.display())),
            };
            Sampled {
                instance: Some(instance),
                timeline,
                taken,
            }
        }));
    }
    let mut sampled = Vec::new();
    for sampler in samplers {
        if let Ok(one) = sampler.await {
            sampled.push(one);
        }
    }
    sampled
}

/// One process's soak: its timeline closed with the run's faults on it, judged and plotted.
fn settle(
    sampled: Sampled,
    cycle: &crate::run::Cycle,
    options: &SoakOptions,
    stalled: Option<&str>,
) -> Result<(Soaked, Outcome), SoakError> {
    let Sampled {
        instance,
        timeline,
        taken,
    } = sampled;
    let output = |message: String| SoakError::Output {
        path: timeline.clone(),
        message,
    };
    let (samples, writer) = taken.map_err(output)?;
    // The schedule's faults, each where it took effect: the run's timeline counts from the
    // target's spawn (a graph's from its start: an instance's own spawn is subtracted), and
    // so does the sampler, to within the moment its pid was reported. They are written when
    // the run ends, so a soak killed outright has its samples only.
    if let Some(mut writer) = writer {
        let spawned = match &instance {
            Some(name) => {
                let started = format!("{name}: started pid ");
                let events = cycle.verdict.timeline.iter();
                events
                    .filter(|e| e.event.starts_with(&started))
                    .map(|e| e.at_ms)
                    .next()
                    .unwrap_or(0)
            }
            None => 0,
        };
        for event in cycle
            .verdict
            .timeline
            .iter()
            .filter(|e| e.event.starts_with("fault: ") && e.at_ms >= spawned)
        {
            let fault = quiesce_soak::Event {
                t_ms: event.at_ms - spawned,
                event: event.event.clone(),
            };
            writer
                .append_event(&fault)
                .map_err(|e| output(e.to_string()))?;
        }
        writer.close().map_err(|e| output(e.to_string()))?;
    }
    let Judged {
        verdict: memory,
        plot,
        each: series,
        allocator,
    } = judge(
        &timeline,
        options.thresholds,
        options.warmup,
        options.min_span,
    )?;
    let outcome = memory_outcome(
        &memory,
        // The heap was judged alone exactly when some sample carried it.
        series
            .iter()
            .any(|alone| alone.series() == quiesce_soak::Series::Heap),
        stalled,
        allocator.as_deref(),
        cycle.interrupted,
    );
    let soaked = Soaked {
        instance,
        memory,
        series,
        samples,
        timeline,
        plot,
    };
    Ok((soaked, outcome))
}

/// The scenario as the soak runs it: as long as the soak, with a steady workload.
fn soak_scenario(scenario: &Scenario, options: &SoakOptions) -> Result<Scenario, SoakError> {
    if matches!(scenario.target, Target::Graph(_)) {
        return Err(SoakError::Scenario(format!(
            "{}: a soak samples a process tree; an in-process graph shares the harness's \
             memory (run it as a process target)",
            scenario.name
        )));
    }
    let bad = |what: String| Err(SoakError::Scenario(what));
    if options.interval.is_zero() {
        return bad(
            "--interval: a soak samples at least once per interval of more than 0 s".into(),
        );
    }
    options.thresholds.check()?;
    if options.rate == Some(0) {
        return bad("--rate: a steady load needs at least 1 record a second".into());
    }
    if options.warmup + options.min_span > options.duration {
        return bad(format!(
            "--duration {} s leaves less than --min-span {} s after the {} s warm-up: the memory \
             verdict could only be inconclusive",
            options.duration.as_secs(),
            options.min_span.as_secs(),
            options.warmup.as_secs()
        ));
    }
    let mut soaked = scenario.clone();
    let secs = options.duration.as_secs().max(1);
    soaked.stop.after_ms = options.duration.as_millis() as u64;
    if let Some(kafka) = &mut soaked.kafka {
        let rate = options
            .rate
            .or(Some(kafka.rate).filter(|r| *r > 0))
            .unwrap_or(DEFAULT_RATE);
        kafka.rate = rate;
        kafka.records = (u64::from(rate) * secs) as usize;
        kafka.stop_when_processed = Some(true);
        kafka.stop_after_processed = None;
        // The stop comes once the last record is processed; this is only the backstop.
        soaked.stop.after_ms += 60_000;
    }
    Ok(soaked)
}

/// Samples the target's tree from its start to its exit (or the end of the run), appending
/// each sample to the timeline as it is taken. Returns how many it took, and the timeline
/// (none when the target never started) for the events the run adds.
async fn sample(
    path: PathBuf,
    heap_file: PathBuf,
    mut header: quiesce_soak::Header,
    mut pid_rx: tokio::sync::watch::Receiver<Option<u32>>,
    options: SoakOptions,
    done: CancellationToken,
    progress: Box<dyn Fn(&Status) + Send + Sync>,
) -> Result<(usize, Option<quiesce_soak::TimelineWriter>), String> {
    let pid = loop {
        if let Some(pid) = *pid_rx.borrow_and_update() {
            break pid;
        }
        tokio::select! {
            changed = pid_rx.changed() => if changed.is_err() { return Ok((0, None)) },
            () = done.cancelled() => return Ok((0, None)),
        }
    };
    header.pid = pid;
    header.started_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut writer =
        quiesce_soak::TimelineWriter::create(&path, &header).map_err(|e| e.to_string())?;
    let begun = Instant::now();
    let mut ticks = tokio::time::interval(options.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut points: Vec<quiesce_soak::Point> = Vec::new();
    let mut count = 0;
    let mut slope = None;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = done.cancelled() => break,
        }
        // The stop was asked for: what the drain frees is not the trend's to judge.
        if pid_rx.has_changed().unwrap_or(true) && pid_rx.borrow_and_update().is_none() {
            let stopping = quiesce_soak::Event {
                t_ms: begun.elapsed().as_millis() as u64,
                event: "stop requested: sampling ends".to_owned(),
            };
            writer.append_event(&stopping).map_err(|e| e.to_string())?;
            break;
        }
        let Some(taken) = quiesce_soak::sample_tree(pid) else {
            break;
        };
        let t_ms = begun.elapsed().as_millis() as u64;
        let mut sample = quiesce_soak::Sample::from_process(t_ms, &taken);
        // `IN_USE [HELD]`: the live heap, and what the allocator holds from the system.
        let heap = std::fs::read_to_string(&heap_file).unwrap_or_default();
        let mut numbers = heap.split_whitespace().map(|n| n.parse::<u64>().ok());
        sample.heap_bytes = numbers.next().flatten();
        sample.heap_held_bytes = numbers.next().flatten();
        writer.append(&sample).map_err(|e| e.to_string())?;
        count += 1;
        points.push(quiesce_soak::Point {
            t_secs: t_ms as f64 / 1000.0,
            value: taken.rss_bytes as f64,
        });
        // The slope so far, every 30 samples: a quick look, not the verdict.
        if count % 30 == 0 {
            slope = running_slope(&points, options.warmup).or(slope);
        }
        progress(&Status {
            elapsed: begun.elapsed(),
            samples: count,
            rss_bytes: taken.rss_bytes,
            slope_mb_per_day: slope,
        });
    }
    Ok((count, Some(writer)))
}

/// The Theil–Sen slope of RSS after the warm-up, in MB/day (the verdict's unit), on the
/// series thinned as the verdict thins it: the pairwise slopes grow with the square of the count.
fn running_slope(points: &[quiesce_soak::Point], warmup: Duration) -> Option<f64> {
    let after: Vec<quiesce_soak::Point> = points
        .iter()
        .filter(|p| p.t_secs >= warmup.as_secs_f64())
        .copied()
        .collect();
    if after.len() < 30 {
        return None;
    }
    let (thinned, _) = quiesce_soak::trend::thin(&after);
    quiesce_soak::trend::theil_sen(&thinned)
        .map(|fit| fit.slope * 86_400.0 / quiesce_soak::trend::BYTES_PER_MB)
}

/// The least share of the resident growth the allocator's holdings must show for the growth
/// to be its retention.
const EXPLAINED: f64 = 0.75;

/// Whether resident growth over a flat live heap is memory the allocator keeps: the target is
/// one process (the most `processes` sampled; the heap is the root's alone), the probe
/// reported the allocator's holdings (`held`), and they grew by at least [`EXPLAINED`] of the
/// resident slope. `Err` says which failed.
fn retention_explained(
    processes: Option<u64>,
    rss: &[quiesce_soak::Point],
    held: &[quiesce_soak::Point],
    warmup: Duration,
) -> Result<String, String> {
    match processes {
        None => return Err("the timeline does not say how many processes were sampled".into()),
        Some(n) if n > 1 => {
            return Err(format!(
                "the target's tree had up to {n} processes, and the live heap is the root's alone"
            ));
        }
        Some(_) => {}
    }
    if held.is_empty() {
        return Err(
            "the probe reported no allocator holdings, so growth outside the heap (mmap, \
             thread stacks, another allocator) cannot be told from retention"
                .into(),
        );
    }
    let (Some(resident), Some(holdings)) =
        (running_slope(rss, warmup), running_slope(held, warmup))
    else {
        return Err("too few samples after the warm-up to compare the two slopes".into());
    };
    let what = format!(
        "the allocator's holdings from the system grew {holdings:.1} MB/day of the resident \
         {resident:.1} MB/day"
    );
    match holdings >= EXPLAINED * resident {
        true => Ok(format!("{what}: memory it keeps")),
        false => Err(format!(
            "{what}; the rest grew outside the malloc heap (mmap, thread stacks, another allocator)"
        )),
    }
}

/// The thresholds a soak is judged against, in MB a day.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    /// RSS and anonymous memory.
    pub resident: f64,
    /// The live heap; `None`: [`Thresholds::resident`].
    pub heap: Option<f64>,
}

impl Thresholds {
    /// These with the CLI's `--threshold` and `--heap-threshold` over them: `--threshold`
    /// given alone sets both.
    pub fn overridden(self, threshold: Option<f64>, heap_threshold: Option<f64>) -> Thresholds {
        Thresholds {
            resident: threshold.unwrap_or(self.resident),
            heap: heap_threshold.or(threshold).or(self.heap),
        }
    }

    /// Refuses a threshold that is not a rate: NaN, infinite or negative, naming its flag.
    pub fn check(&self) -> Result<(), SoakError> {
        let named = [
            ("--threshold", Some(self.resident)),
            ("--heap-threshold", self.heap),
        ];
        for (flag, threshold) in named {
            if let Some(threshold) = threshold.filter(|t| !t.is_finite() || *t < 0.0) {
                return Err(SoakError::Scenario(format!(
                    "{flag}: `{threshold}` is not a rate of MB/day (a number, 0 or more)"
                )));
            }
        }
        Ok(())
    }
}

/// The thresholds and warm-up a timeline was taken with (its header's).
pub fn timeline_settings(timeline: &Path) -> Result<(Thresholds, Duration), SoakError> {
    let (header, ..) = quiesce_soak::read_timeline(timeline).map_err(|e| SoakError::Timeline {
        path: timeline.to_owned(),
        message: e.to_string(),
    })?;
    Ok((
        Thresholds {
            resident: header.threshold_mb_per_day,
            heap: header.heap_threshold_mb_per_day,
        },
        Duration::from_millis(header.warmup_ms),
    ))
}

/// Judges a timeline and writes its plot next to it: `soak.svg`. `min_span` is the least
/// time after the warm-up a verdict rests on (shorter: inconclusive).
pub fn judge(
    timeline: &Path,
    thresholds: Thresholds,
    warmup: Duration,
    min_span: Duration,
) -> Result<Judged, SoakError> {
    let failed = |message: String| SoakError::Timeline {
        path: timeline.to_owned(),
        message,
    };
    let (header, samples, events, notes) =
        quiesce_soak::read_timeline(timeline).map_err(|e| failed(e.to_string()))?;
    let rss: Vec<_> = samples.iter().map(|s| point(s.t_ms, s.rss_bytes)).collect();
    let anon: Option<Vec<_>> = samples
        .iter()
        .map(|s| s.anon_bytes.map(|a| point(s.t_ms, a)))
        .collect();
    // The live heap, from the samples that have it (the probe writes its first one soon
    // after the start, so the earliest samples may not).
    let heap: Vec<_> = samples
        .iter()
        .filter_map(|s| s.heap_bytes.map(|h| point(s.t_ms, h)))
        .collect();
    let heap = (!heap.is_empty()).then_some(heap);
    let rule = quiesce_soak::LeakRule {
        threshold_mb_per_day: thresholds.resident,
        heap_threshold_mb_per_day: thresholds.heap,
        warm_up_secs: warmup.as_secs_f64(),
        min_span_secs: min_span.as_secs_f64(),
        ..quiesce_soak::LeakRule::default()
    };
    let verdict = rule.assess_with_heap(&rss, anon.as_deref(), heap.as_deref());
    let (verdict, allocator) = settle_retention(verdict, &samples, &rss, warmup);
    let each: Vec<quiesce_soak::Verdict> = [
        Some((quiesce_soak::Series::Rss, rss.as_slice())),
        anon.as_deref().map(|a| (quiesce_soak::Series::Anon, a)),
        heap.as_deref().map(|h| (quiesce_soak::Series::Heap, h)),
    ]
    .into_iter()
    .flatten()
    .map(|(series, points)| rule.assess_series(series, points))
    .collect();
    // The plot shows the series the verdict rests on, in MiB, with its fitted line.
    let series = match (verdict.series(), &anon, &heap) {
        (quiesce_soak::Series::Anon, Some(anon), _) => anon.as_slice(),
        (quiesce_soak::Series::Heap, _, Some(heap)) => heap.as_slice(),
        _ => rss.as_slice(),
    };
    let caption = format!(
        "{} samples every {} ms of pid {}, {} event(s){}",
        samples.len(),
        header.interval_ms,
        header.pid,
        events.len(),
        match notes.torn_last_line {
            Some(_) => "; the last line was torn (the soak was killed) and is left out",
            None => "",
        }
    );
    let plot = write_plot(
        timeline,
        &header.scenario,
        &verdict,
        series,
        &rule,
        caption,
        &events,
    )?;
    Ok(Judged {
        verdict,
        plot,
        each,
        allocator,
    })
}

/// A sample's value at its time.
fn point(t_ms: u64, bytes: u64) -> quiesce_soak::Point {
    quiesce_soak::Point {
        t_secs: t_ms as f64 / 1000.0,
        value: bytes as f64,
    }
}

/// Resident growth over a flat heap is the allocator's retention only if the allocator's own
/// holdings grew with it, in a target that is one process; else the growth stands. Returns
/// the verdict and what was found of the allocator.
fn settle_retention(
    verdict: quiesce_soak::Verdict,
    samples: &[quiesce_soak::Sample],
    rss: &[quiesce_soak::Point],
    warmup: Duration,
) -> (quiesce_soak::Verdict, Option<String>) {
    match verdict {
        quiesce_soak::Verdict::Retained { resident, heap } => {
            let held: Vec<_> = samples
                .iter()
                .filter_map(|s| s.heap_held_bytes.map(|h| point(s.t_ms, h)))
                .collect();
            let processes = samples.iter().filter_map(|s| s.processes).max();
            match retention_explained(processes, rss, &held, warmup) {
                Ok(why) => (
                    quiesce_soak::Verdict::Retained { resident, heap },
                    Some(why),
                ),
                Err(why) => (
                    quiesce_soak::Verdict::Leak(resident),
                    Some(format!(
                        "not the allocator's retention, though the live heap stayed flat: {why}"
                    )),
                ),
            }
        }
        verdict => (verdict, None),
    }
}

/// Draws the series the verdict rests on, in MiB, with its fitted line, the verdict's
/// clauses and `caption` under it and the timeline's events on it, into `soak.svg` next to
/// the timeline.
fn write_plot(
    timeline: &Path,
    scenario: &str,
    verdict: &quiesce_soak::Verdict,
    series: &[quiesce_soak::Point],
    rule: &quiesce_soak::LeakRule,
    caption: String,
    events: &[quiesce_soak::Event],
) -> Result<PathBuf, SoakError> {
    let shown: Vec<(f64, f64)> = series
        .iter()
        .map(|p| (p.t_secs, p.value / quiesce_soak::trend::BYTES_PER_MB))
        .collect();
    let fit = verdict.trend().map(|trend| {
        let slope = trend.slope_mb_per_day / 86_400.0;
        let mut rest: Vec<f64> = shown
            .iter()
            .filter(|(t, _)| *t >= rule.warm_up_secs)
            .map(|(t, mb)| mb - slope * t)
            .collect();
        rest.sort_by(f64::total_cmp);
        (slope, rest.get(rest.len() / 2).copied().unwrap_or_default())
    });
    // The verdict's clauses a line each: one line would run off the plot.
    let explained = verdict.explain();
    let mut lines: Vec<String> = explained
        .split("; ")
        .enumerate()
        .map(|(i, part)| match i {
            0 => format!("memory_flat: {part}"),
            _ => format!("    {part}"),
        })
        .collect();
    lines.push(caption);
    let title = format!("{scenario} soak: {}", verdict.series());
    let marks: Vec<(f64, String)> = events
        .iter()
        .map(|e| (e.t_ms as f64 / 1000.0, e.event.clone()))
        .collect();
    let svg = quiesce_soak::plot::svg_with_marks(
        &shown,
        fit,
        rule.threshold_for(verdict.series()),
        rule.warm_up_secs,
        &title,
        &lines,
        &marks,
    );
    let plot = timeline.with_file_name("soak.svg");
    std::fs::write(&plot, svg).map_err(|e| SoakError::Output {
        path: plot.clone(),
        message: e.to_string(),
    })?;
    Ok(plot)
}

/// What [`judge`] found.
#[derive(Debug)]
pub struct Judged {
    /// The memory verdict.
    pub verdict: quiesce_soak::Verdict,
    /// `soak.svg`, beside the timeline.
    pub plot: PathBuf,
    /// Each series judged alone (RSS, then anonymous memory and the live heap where sampled):
    /// what the verdict was decided from.
    pub each: Vec<quiesce_soak::Verdict>,
    /// Where resident memory grew over a flat live heap: whether the allocator's own holdings
    /// account for it (then it is retention) or not (then the growth stands as a leak).
    pub allocator: Option<String>,
}

/// The least share of the acknowledged inputs a soak's target must have processed by the
/// stop for its memory to count as measured under the load asked for.
const KEPT_UP: f64 = 0.9;

/// Why the soak's load was not what was asked, when the target processed less than
/// [`KEPT_UP`] of the inputs the broker acknowledged by the stop (it stalled or fell behind,
/// and the soak ended at its backstop): its memory was then measured under less load, or
/// none. Read from the run's `kafka.json`; `None` when it is not there to read.
fn workload_unfinished(kafka_json: &Path) -> Option<String> {
    let text = std::fs::read(kafka_json).ok()?;
    let evidence: serde_json::Value = serde_json::from_slice(&text).ok()?;
    let acked = evidence["acked"].as_array()?.len();
    let processed = evidence["first"]["processed"].as_array()?.len();
    (acked > 0 && (processed as f64) < KEPT_UP * acked as f64).then(|| {
        format!(
            "the target processed {processed} of the {acked} acknowledged input(s) by the \
             stop (it stalled or fell behind), so its memory was not measured under the load \
             asked for"
        )
    })
}

/// `memory_flat` from the memory verdict: a leak fails it; flat, grown then stopped, or
/// retained by the allocator passes and says which. Without the live heap it says so: then
/// only the plateau test tells what the allocator retains from a leak.
fn memory_outcome(
    memory: &quiesce_soak::Verdict,
    heap: bool,
    stalled: Option<&str>,
    allocator: Option<&str>,
    interrupted: bool,
) -> Outcome {
    let cut = match interrupted {
        true => " (the soak was cut short by Ctrl-C; judged on what was sampled)",
        false => "",
    };
    let allocator = allocator.map_or(String::new(), |why| format!("; {why}"));
    // Memory that grew under less load still grew; anything else is no evidence of flat.
    if let Some(why) = stalled {
        return match memory {
            quiesce_soak::Verdict::Leak(_) => {
                Outcome::violation(format!("{}; {why}", memory.explain()), Vec::new())
            }
            _ => Outcome::inconclusive(format!("{why}; memory alone: {}", memory.explain())),
        };
    }
    let heap = match heap {
        true => "",
        false => {
            "; the target reported no live heap (no quiesce probe, or not glibc), so what the \
             allocator retains is told from a leak by the plateau test alone"
        }
    };
    match memory {
        quiesce_soak::Verdict::Leak(_) => Outcome::violation(
            format!("{}{allocator}{heap}{cut}", memory.explain()),
            Vec::new(),
        ),
        quiesce_soak::Verdict::Flat(_)
        | quiesce_soak::Verdict::Plateau(_)
        | quiesce_soak::Verdict::Retained { .. } => {
            Outcome::pass(format!("{}{allocator}{heap}{cut}", memory.explain()))
        }
        quiesce_soak::Verdict::Inconclusive { .. } => {
            Outcome::inconclusive(format!("{}{cut}", memory.explain()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A soak whose target kept up with its workload is judged on memory; one that processed
    /// less than 90% of what was acknowledged (stalled; the soak ended at its backstop)
    /// cannot pass `memory_flat`, and a leak seen under less load is still a leak.
    #[test]
    fn a_stalled_workload_makes_memory_flat_inconclusive_not_a_pass() {
        let dir = tempfile::tempdir().unwrap();
        let evidence = |acked: usize, processed: usize| {
            let path = dir.path().join(format!("kafka-{acked}-{processed}.json"));
            let record = serde_json::json!({"partition": 0, "offset": 1});
            let json = serde_json::json!({
                "acked": vec![record.clone(); acked],
                "first": {"processed": vec![record; processed]},
            });
            std::fs::write(&path, json.to_string()).unwrap();
            path
        };
        assert_eq!(workload_unfinished(&evidence(1000, 997)), None);
        assert_eq!(workload_unfinished(&dir.path().join("none.json")), None);
        let stalled = workload_unfinished(&evidence(1000, 230));
        let why = stalled.as_deref().expect("stalled");
        assert!(why.contains("processed 230 of the 1000"), "{why}");

        let rule = quiesce_soak::LeakRule::default();
        let at = |i: usize, mb_per_day: f64| quiesce_soak::Point {
            t_secs: i as f64,
            value: 4e6 + (i % 7) as f64 * 2e3 + mb_per_day * 1_048_576.0 * i as f64 / 86_400.0,
        };
        let flat: Vec<_> = (0..3600).map(|i| at(i, 0.0)).collect();
        let leaking: Vec<_> = (0..3600).map(|i| at(i, 50.0)).collect();
        let flat = rule.assess(&flat, None);
        let leak = rule.assess(&leaking, None);
        assert!(matches!(
            memory_outcome(&flat, true, None, None, false),
            Outcome::Pass { .. }
        ));
        let Outcome::Inconclusive { reason } = memory_outcome(&flat, true, Some(why), None, false)
        else {
            panic!("a stalled soak is no evidence of flat memory")
        };
        assert!(
            reason.contains("processed 230") && reason.contains("flat"),
            "{reason}"
        );
        assert!(memory_outcome(&leak, true, Some(why), None, false).is_violation());
    }
}
