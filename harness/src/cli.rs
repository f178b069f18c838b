//! The `quiesce` command line. [`main`] returns an exit code from [`crate::exit_codes`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::exit_codes;
use crate::infra::{self, BackendKind, Infra, InfraConfig, InfraError, images};
use crate::signal::{SignalEvent, SignalHandler};

#[derive(Debug, Parser)]
#[command(
    name = "quiesce",
    version,
    about = "Shutdown-correctness harness and soak rig for services on Kafka and Redis",
    after_help = exit_codes::HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one scenario: start the infrastructure and the target, stop it, check every
    /// invariant, print the verdict.
    #[command(after_help = exit_codes::HELP)]
    Run(RunArgs),
    /// Run one scenario in cycles against infrastructure started once: the flake rate with
    /// its 95% bound, start/ready/stop percentiles, and every failing cycle explained.
    #[command(after_help = exit_codes::HELP)]
    Loop(LoopArgs),
    /// Generate fault schedules, run each; shrink the first that breaks an invariant to the
    /// smallest that still does, and write it as a scenario file `quiesce run` replays.
    #[command(after_help = exit_codes::HELP)]
    Explore(ExploreArgs),
    /// Run the target under steady load for a long time, sampling its memory, threads and
    /// fds; then stop it, check every invariant, and judge the memory trend in MB/day.
    #[command(after_help = exit_codes::HELP)]
    Soak(SoakArgs),
    /// Real Kafka and Redis behind fault proxies.
    #[command(subcommand)]
    Infra(InfraCommand),
    /// Container images for the containers backend, built from local binaries.
    #[command(subcommand)]
    Images(ImagesCommand),
}

#[derive(Debug, Subcommand)]
enum InfraCommand {
    /// Start Kafka and Redis, print their endpoints, and hold until Ctrl-C.
    #[command(after_help = exit_codes::HELP)]
    Up(UpArgs),
}

#[derive(Debug, Subcommand)]
enum ImagesCommand {
    /// Build the local images (`FROM scratch` + the binaries the local backend uses).
    #[command(after_help = exit_codes::HELP)]
    Build,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The scenario file (TOML).
    scenario: PathBuf,
    #[command(flatten)]
    infra: BackendArgs,
    #[command(flatten)]
    common: ScenarioArgs,
}

/// What `run`, `loop` and `soak` share: the target's variables and where the reports go.
#[derive(Debug, Args)]
struct ScenarioArgs {
    /// A variable for the target, over the scenario's (repeatable): KEY=VALUE.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Print the verdict (run, soak) or the report (loop) as JSON on stdout; the summary
    /// then goes to stderr.
    #[arg(long)]
    json: bool,
    /// Also write JUnit XML to FILE: a test case per check (run, soak), or per failing cycle
    /// plus a summary case (loop).
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Keep the target's output (run), the cycles' folders and loop.json (loop), or the
    /// timeline, plot, soak.json and the run's folder (soak) in DIR (default: a new folder in
    /// the temp dir).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Accept these checks being inconclusive (comma-separated, repeatable): they are still
    /// reported as such, but do not make the run INCONCLUSIVE (exit 6). Adds to the file's
    /// `[checks] allow_inconclusive`.
    #[arg(long, value_name = "CHECK,...", value_delimiter = ',')]
    allow_inconclusive: Vec<String>,
}

impl ScenarioArgs {
    /// Loads the scenario file, with the infrastructure overrides and the accepted
    /// inconclusive checks of the command line.
    fn load(
        &self,
        path: &std::path::Path,
        backend: &BackendArgs,
    ) -> Result<crate::scenario::Scenario, CliError> {
        let mut scenario = crate::scenario::Scenario::load(path)?;
        apply_overrides(&mut scenario.infra, backend)?;
        let accepted = by_name(
            &self.allow_inconclusive,
            &crate::verdict::CheckName::ALL,
            |c| c.as_str(),
        )
        .map_err(|message| {
            CliError::Config(infra::ConfigError::Value {
                origin: "--allow-inconclusive".to_owned(),
                message,
            })
        })?;
        for check in accepted {
            if !scenario.checks.allow_inconclusive.contains(&check) {
                scenario.checks.allow_inconclusive.push(check);
            }
        }
        Ok(scenario)
    }
}

#[derive(Debug, Args)]
struct LoopArgs {
    /// The scenario file (TOML).
    scenario: PathBuf,
    #[command(flatten)]
    infra: BackendArgs,
    /// How many cycles (default 100; with --duration or --until-failure, at most this many,
    /// default 10000).
    #[arg(short = 'n', long = "cycles", value_name = "N")]
    cycles: Option<u64>,
    /// Start no cycle after this long: 90s, 30m, 2h (or seconds).
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Stop at the first failing cycle.
    #[arg(long, visible_alias = "fail-fast")]
    until_failure: bool,
    /// Ready deadline per cycle in ms (default: the scenario's starts_within deadline).
    #[arg(long, value_name = "MS")]
    ready_deadline: Option<u64>,
    /// Stop deadline per cycle in ms, after which the target is killed (default: the
    /// scenario's [stop] kill_after_ms).
    #[arg(long, value_name = "MS")]
    stop_deadline: Option<u64>,
    /// Run on a stuck process before it is killed; {pid} becomes its pid (over the
    /// scenario's [target] on_hang), e.g. 'py-spy dump --pid {pid}'.
    #[arg(long, value_name = "COMMAND")]
    on_hang: Option<String>,
    #[command(flatten)]
    common: ScenarioArgs,
    /// Keep the folders of passing cycles too (by default only failing cycles keep theirs).
    #[arg(long)]
    keep_passing: bool,
}

#[derive(Debug, Args)]
struct ExploreArgs {
    /// The scenario file (TOML). Generated schedules replace its [[faults]].
    scenario: PathBuf,
    #[command(flatten)]
    infra: BackendArgs,
    /// How many schedules to try at most.
    #[arg(long, value_name = "N", default_value_t = 50)]
    cases: u32,
    /// The seed: the same seed draws the same schedules (default: a new one, printed).
    #[arg(long, value_name = "SEED")]
    seed: Option<u64>,
    /// The most steps a schedule has.
    #[arg(long, value_name = "N", default_value_t = 3)]
    steps: usize,
    /// The actions schedules are made of, comma-separated (default: all): down, up,
    /// latency, timeout, reset_peer, bandwidth, clear, stop, start, kill, pause, resume,
    /// signal.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    actions: Vec<String>,
    /// Only a violation of these checks counts, comma-separated (default: any check's).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    checks: Vec<String>,
    /// The most runs shrinking may take.
    #[arg(long, value_name = "N", default_value_t = 40)]
    shrink_runs: u32,
    /// How often a shrink candidate that passed is run again before it is given up.
    #[arg(long, value_name = "N", default_value_t = 1)]
    retries: u32,
    /// A variable for the target, over the scenario's (repeatable): KEY=VALUE.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Print the report as JSON on stdout; the summary then goes to stderr.
    #[arg(long)]
    json: bool,
    /// Where runs, replay files and explore.json go; replay files found there are run first
    /// (default: .quiesce-explore next to the scenario file).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct SoakArgs {
    #[command(subcommand)]
    command: Option<SoakCommand>,
    /// The scenario file (TOML): a process target.
    #[arg(required = true)]
    scenario: Option<PathBuf>,
    #[command(flatten)]
    infra: BackendArgs,
    /// How long: 90s, 30m, 2h.
    #[arg(long, value_name = "TIME", value_parser = parse_duration, default_value = "30m")]
    duration: Duration,
    /// Between two samples.
    #[arg(long, value_name = "TIME", value_parser = parse_duration, default_value = "1s")]
    interval: Duration,
    /// Samples before this are not judged (default: a tenth of the soak, at most 5m).
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    warmup: Option<Duration>,
    /// Growth above this many MB (2^20 bytes) a day is a leak (default: 25 for a soak under
    /// 2h, 10 from 2h: in 30 minutes a correct service's warm-up drift alone reaches 10).
    /// Given alone, it is the live heap's threshold too.
    #[arg(long, value_name = "MB")]
    threshold: Option<f64>,
    /// The live heap's threshold, where the target reports its heap (default: --threshold if
    /// given, else 10 for any length: the heap has no allocator drift).
    #[arg(long, value_name = "MB")]
    heap_threshold: Option<f64>,
    /// Records a second of the [kafka] workload (default: the scenario's rate, else 50).
    #[arg(long, value_name = "N")]
    rate: Option<u32>,
    /// The least time after the warm-up a verdict rests on; a shorter soak's memory is
    /// inconclusive.
    #[arg(long, value_name = "TIME", value_parser = parse_duration, default_value = "10m")]
    min_span: Duration,
    #[command(flatten)]
    common: ScenarioArgs,
}

#[derive(Debug, Subcommand)]
enum SoakCommand {
    /// Judge a soak's timeline again and redraw its plot (next to it, soak.svg).
    #[command(after_help = exit_codes::HELP)]
    Report(SoakReportArgs),
}

#[derive(Debug, Args)]
struct SoakReportArgs {
    /// A soak's timeline.jsonl.
    timeline: PathBuf,
    /// Growth above this many MB a day is a leak (default: the soak's). Given alone, it is
    /// the live heap's threshold too.
    #[arg(long, value_name = "MB")]
    threshold: Option<f64>,
    /// The live heap's threshold (default: --threshold if given, else the soak's).
    #[arg(long, value_name = "MB")]
    heap_threshold: Option<f64>,
    /// Samples before this are not judged (default: the soak's).
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    warmup: Option<Duration>,
    /// The least time after the warm-up a verdict rests on.
    #[arg(long, value_name = "TIME", value_parser = parse_duration, default_value = "10m")]
    min_span: Duration,
}

/// `90s`, `30m`, `2h`, `1h30m` or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("`{text}` is not a duration (e.g. 90s, 30m, 2h)");
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(bad)?;
        number.clear();
    }
    if !number.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

#[derive(Debug, Args)]
struct InfraArgs {
    /// A TOML file with an `[infra]` table (a scenario file will do).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    backend: BackendArgs,
}

#[derive(Debug, Args)]
struct BackendArgs {
    /// auto, local, containers or external [env: QUIESCE_BACKEND]
    #[arg(long, value_name = "BACKEND")]
    backend: Option<String>,
    /// Where the Kafka proxy listens: PORT or IP:PORT [env: QUIESCE_KAFKA_LISTEN]
    #[arg(long, value_name = "ADDR")]
    kafka_listen: Option<String>,
    /// Where the Redis proxy listens: PORT or IP:PORT [env: QUIESCE_REDIS_LISTEN]
    #[arg(long, value_name = "ADDR")]
    redis_listen: Option<String>,
}

#[derive(Debug, Args)]
struct UpArgs {
    #[command(flatten)]
    infra: InfraArgs,
    /// Print only the JSON line (no shell exports).
    #[arg(long)]
    json: bool,
    /// Stop after this many seconds instead of waiting for Ctrl-C.
    #[arg(long, value_name = "SECS")]
    hold: Option<u64>,
    /// Where the Toxiproxy-compatible fault API listens: PORT or IP:PORT (default: a free
    /// loopback port).
    #[arg(long, value_name = "ADDR", conflicts_with = "no_api")]
    api: Option<String>,
    /// Do not serve the fault API.
    #[arg(long)]
    no_api: bool,
}

/// Runs the command line and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                exit_codes::BAD_INPUT
            } else {
                exit_codes::OK
            };
        }
    };
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("quiesce: error: cannot start the async runtime: {e}");
            return exit_codes::INFRA_FAILED;
        }
    };
    let code = runtime.block_on(run(cli));
    // Anything still running was abandoned on purpose (a second Ctrl-C); do not wait for it.
    runtime.shutdown_timeout(Duration::from_secs(1));
    // The last stop path: a process group whose owner the runtime abandoned.
    let stopped = crate::process::teardown().stop_all();
    if stopped > 0 {
        eprintln!("quiesce: killed {stopped} process group(s) still running at exit");
    }
    code
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("QUIESCE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

async fn run(cli: Cli) -> i32 {
    let result = match cli.command {
        Command::Run(args) => run_scenario(args).await,
        Command::Loop(args) => loop_scenario(args).await,
        Command::Explore(args) => explore_scenario(args).await,
        Command::Soak(args) => soak_scenario(args).await,
        Command::Infra(InfraCommand::Up(args)) => infra_up(args).await.map_err(CliError::from),
        Command::Images(ImagesCommand::Build) => images_build().await.map_err(CliError::from),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("quiesce: error: {}", chain(&e));
            e.exit_code()
        }
    }
}

/// An error and its sources, joined with ": ".
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

fn resolve_config(args: &InfraArgs) -> Result<InfraConfig, InfraError> {
    let mut config = match &args.config {
        Some(path) => infra::load_config(path)?,
        None => InfraConfig::default(),
    };
    apply_overrides(&mut config, &args.backend)?;
    Ok(config)
}

/// Environment, then flags, over what the file says.
fn apply_overrides(config: &mut InfraConfig, args: &BackendArgs) -> Result<(), InfraError> {
    config.apply_env(|k| std::env::var(k).ok())?;
    let flag = |flag: &str, message: String| {
        InfraError::Config(infra::ConfigError::Value {
            origin: format!("--{flag}"),
            message,
        })
    };
    if let Some(backend) = &args.backend {
        config.backend = backend.parse().map_err(|m| flag("backend", m))?;
    }
    if let Some(listen) = &args.kafka_listen {
        config.kafka.listen =
            Some(infra::parse_listen(listen).map_err(|m| flag("kafka-listen", m))?);
    }
    if let Some(listen) = &args.redis_listen {
        config.redis.listen =
            Some(infra::parse_listen(listen).map_err(|m| flag("redis-listen", m))?);
    }
    Ok(())
}

/// Any error the CLI reports, with its exit code.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Infra(#[from] InfraError),
    #[error(transparent)]
    Run(#[from] crate::run::RunError),
    #[error(transparent)]
    Config(#[from] infra::ConfigError),
    #[error(transparent)]
    Soak(#[from] crate::soak::SoakError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl CliError {
    fn exit_code(&self) -> i32 {
        match self {
            CliError::Infra(e) => e.exit_code(),
            CliError::Run(e) => e.exit_code(),
            CliError::Config(_) => exit_codes::BAD_INPUT,
            CliError::Soak(e) => e.exit_code(),
            CliError::Write { .. } => exit_codes::INFRA_FAILED,
        }
    }
}

/// `--env KEY=VALUE` pairs.
fn parse_env(pairs: &[String]) -> Result<Vec<(String, String)>, infra::ConfigError> {
    pairs
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| infra::ConfigError::Value {
                    origin: "--env".to_owned(),
                    message: format!("`{pair}` is not KEY=VALUE"),
                })
        })
        .collect()
}

/// Writes `text` to `path`.
fn write_file(path: &std::path::Path, text: &str) -> Result<(), CliError> {
    std::fs::write(path, text).map_err(|source| CliError::Write {
        path: path.to_owned(),
        source,
    })
}

async fn run_scenario(args: RunArgs) -> Result<i32, CliError> {
    let scenario = args.common.load(&args.scenario, &args.infra)?;
    let env = parse_env(&args.common.env)?;
    let options = crate::run::RunOptions {
        env,
        out_dir: args.common.out.clone(),
    };
    let mut signals = signal_handler()?;
    let verdict = crate::run::run(&scenario, &options, &mut signals).await?;
    emit(
        &args.common,
        &crate::report::summary(&verdict),
        &crate::report::json(&verdict),
        || crate::report::junit_xml(&verdict),
    )?;
    Ok(verdict.exit_code())
}

async fn loop_scenario(args: LoopArgs) -> Result<i32, CliError> {
    use crate::repeat::{LoopOptions, MAX_CYCLES, run_loop};
    let mut scenario = args.common.load(&args.scenario, &args.infra)?;
    if let Some(ms) = args.ready_deadline {
        scenario.checks.starts_within.params.deadline_ms = ms;
    }
    if let Some(ms) = args.stop_deadline {
        scenario.stop.kill_after_ms = ms;
    }
    if let (Some(command), crate::scenario::Target::Process(target)) =
        (&args.on_hang, &mut scenario.target)
    {
        target.on_hang = Some(command.clone());
    }
    let bounded = args.duration.is_some() || args.until_failure;
    let cycles = match args.cycles {
        Some(0) => {
            return Err(CliError::Config(infra::ConfigError::Value {
                origin: "--cycles".to_owned(),
                message: "`0`: a loop runs at least one cycle".to_owned(),
            }));
        }
        Some(n) => n,
        None if bounded => MAX_CYCLES,
        None => 100,
    };
    let out_dir = args
        .common
        .out
        .clone()
        .unwrap_or_else(|| fresh_out_dir("loop", &scenario.name));
    let options = LoopOptions {
        env: parse_env(&args.common.env)?,
        out_dir: out_dir.clone(),
        cycles,
        duration: args.duration,
        until_failure: args.until_failure,
        keep_passing: args.keep_passing,
    };
    let mut signals = signal_handler()?;
    let mut bar = LoopProgress::new(cycles, args.duration);
    let report = run_loop(&scenario, &options, &mut signals, |p| bar.update(p)).await;
    bar.finish();
    let report = report?;
    let json = serde_json::to_string_pretty(&report).unwrap_or_default();
    write_file(&out_dir.join("loop.json"), &json)?;
    emit(
        &args.common,
        &crate::repeat::summary(&report),
        &json,
        || crate::repeat::junit_xml(&report),
    )?;
    Ok(report.exit_code())
}

async fn explore_scenario(args: ExploreArgs) -> Result<i32, CliError> {
    use crate::explore::{ExploreOptions, explore, summary};
    let mut scenario = crate::scenario::Scenario::load(&args.scenario)?;
    apply_overrides(&mut scenario.infra, &args.infra)?;
    let bad = |origin: &str, message: String| {
        CliError::Config(infra::ConfigError::Value {
            origin: origin.to_owned(),
            message,
        })
    };
    let actions = by_name(&args.actions, &crate::scenario::Action::ALL, |a| a.name())
        .map_err(|e| bad("--actions", e))?;
    let checks = by_name(&args.checks, &crate::verdict::CheckName::ALL, |c| {
        c.as_str()
    })
    .map_err(|e| bad("--checks", e))?;
    if args.steps == 0 {
        return Err(bad(
            "--steps",
            "`0`: a schedule has at least one step".to_owned(),
        ));
    }
    let out_dir = args.out.clone().unwrap_or_else(|| {
        args.scenario
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join(".quiesce-explore")
    });
    let mut options = ExploreOptions::new(out_dir.clone());
    options.cases = args.cases;
    options.seed = args.seed.unwrap_or_else(rand::random);
    options.max_steps = args.steps;
    if !actions.is_empty() {
        options.actions = actions;
    }
    options.shrink_runs = args.shrink_runs;
    options.retries = args.retries;
    options.checks = checks;
    options.env = parse_env(&args.env)?;
    eprintln!(
        "quiesce explore: {} cases of up to {} step(s), seed {} (--seed {} repeats them)",
        options.cases, options.max_steps, options.seed, options.seed
    );
    let mut signals = signal_handler()?;
    let mut progress = |line: &str| eprintln!("  {line}");
    let report = explore(
        &scenario,
        &args.scenario,
        &options,
        &mut signals,
        &mut progress,
    )
    .await?;
    let json = serde_json::to_string_pretty(&report).unwrap_or_default();
    write_file(&out_dir.join("explore.json"), &json)?;
    let summary = summary(&report);
    if args.json {
        eprint!("{summary}");
        println!("{json}");
    } else {
        print!("{summary}");
    }
    Ok(report.exit_code())
}

async fn soak_scenario(args: SoakArgs) -> Result<i32, CliError> {
    use crate::soak::{SoakOptions, soak};
    let Some(path) = args.scenario.as_ref() else {
        let Some(SoakCommand::Report(report)) = &args.command else {
            unreachable!("clap requires a scenario or a subcommand");
        };
        return soak_report(report);
    };
    let scenario = args.common.load(path, &args.infra)?;
    let out_dir = args
        .common
        .out
        .clone()
        .unwrap_or_else(|| fresh_out_dir("soak", &scenario.name));
    let mut options = SoakOptions::new(args.duration, out_dir.clone());
    options.interval = args.interval;
    if let Some(warmup) = args.warmup {
        options.warmup = warmup;
    }
    options.thresholds = options
        .thresholds
        .overridden(args.threshold, args.heap_threshold);
    options.rate = args.rate;
    options.min_span = args.min_span;
    options.env = parse_env(&args.common.env)?;
    eprintln!(
        "quiesce soak: {} for {}, a sample every {} s, judged after {} s; timeline {}",
        scenario.name,
        humantime(args.duration),
        options.interval.as_secs(),
        options.warmup.as_secs(),
        out_dir.join("timeline.jsonl").display()
    );
    let mut signals = signal_handler()?;
    let bar = SoakProgress::new(args.duration);
    let shown = bar.clone();
    let report = soak(&scenario, &options, &mut signals, move |status| {
        shown.update(status)
    })
    .await;
    bar.finish();
    let report = report?;
    let json = serde_json::to_string_pretty(&report).unwrap_or_default();
    write_file(&out_dir.join("soak.json"), &json)?;
    let mut summary = crate::report::summary(&report.verdict);
    summary.push_str(&format!(
        "soak timeline {} ({} samples), plot {}\n",
        report.timeline.display(),
        report.samples,
        report.plot.display()
    ));
    emit(&args.common, &summary, &json, || {
        crate::report::junit_xml(&report.verdict)
    })?;
    Ok(report.verdict.exit_code())
}

/// `quiesce soak report`: a timeline judged again, its plot redrawn.
fn soak_report(args: &SoakReportArgs) -> Result<i32, CliError> {
    let (taken, warmup) = crate::soak::timeline_settings(&args.timeline)?;
    let thresholds = taken.overridden(args.threshold, args.heap_threshold);
    thresholds.check()?;
    let judged = crate::soak::judge(
        &args.timeline,
        thresholds,
        args.warmup.unwrap_or(warmup),
        args.min_span,
    )?;
    println!("memory: {}", judged.verdict.explain());
    for alone in &judged.each {
        println!("  alone: {}", alone.explain());
    }
    println!("  plot {}", judged.plot.display());
    Ok(match &judged.verdict {
        v if v.is_leak() => exit_codes::VIOLATION,
        // Too few samples or too short to tell: no evidence that memory is flat.
        quiesce_soak::Verdict::Inconclusive { .. } => exit_codes::INCONCLUSIVE,
        _ => exit_codes::OK,
    })
}

/// Ctrl-C and SIGTERM, from here on the CLI's to act on.
fn signal_handler() -> Result<SignalHandler, CliError> {
    SignalHandler::new().map_err(|e| CliError::Infra(InfraError::Workdir(e)))
}

/// Prints the summary, or the JSON with the summary on stderr (`--json`), and writes the
/// JUnit XML `--junit` asks for.
fn emit(
    common: &ScenarioArgs,
    summary: &str,
    json: &str,
    junit: impl FnOnce() -> String,
) -> Result<(), CliError> {
    if common.json {
        eprint!("{summary}");
        println!("{json}");
    } else {
        print!("{summary}");
    }
    if let Some(path) = &common.junit {
        write_file(path, &junit())?;
    }
    Ok(())
}

/// A new folder in the temp dir for a `job`'s reports: `quiesce-loop-NAME-PID-SECS`.
fn fresh_out_dir(job: &str, scenario: &str) -> PathBuf {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    std::env::temp_dir().join(format!(
        "quiesce-{job}-{}-{}-{stamp}",
        scenario.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
        std::process::id()
    ))
}

/// `30m`, `2h`, `1h30m`, `90s`.
fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

/// A soak's progress: a bar with ETA, RSS and the slope so far on a terminal; else a line
/// per tenth of the way.
#[derive(Clone)]
struct SoakProgress {
    bar: Option<indicatif::ProgressBar>,
    duration: Duration,
    tenth: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl SoakProgress {
    fn new(duration: Duration) -> SoakProgress {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(duration.as_secs().max(1));
            let template = "{elapsed_precise} [{bar:30}] {pos}/{len} s, ETA {eta}: {msg}";
            if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        SoakProgress {
            bar,
            duration,
            tenth: Default::default(),
        }
    }

    fn update(&self, status: &crate::soak::Status) {
        let slope = match status.slope_mb_per_day {
            Some(slope) => format!("{slope:+.1} MB/day so far"),
            None => "slope after the warm-up".to_owned(),
        };
        let line = format!(
            "RSS {:.1} MB, {} samples, {slope}",
            status.rss_bytes as f64 / quiesce_soak::trend::BYTES_PER_MB,
            status.samples
        );
        match &self.bar {
            Some(bar) => {
                bar.set_position(status.elapsed.as_secs());
                if status.slope_mb_per_day.is_some() || status.samples < 30 {
                    bar.set_message(line);
                }
            }
            None => {
                let tenth = (status.elapsed.as_secs_f64() / self.duration.as_secs_f64().max(1.0)
                    * 10.0) as u64;
                let before = self
                    .tenth
                    .fetch_max(tenth, std::sync::atomic::Ordering::SeqCst);
                if tenth > before {
                    eprintln!("quiesce: soak {}0%: {line}", tenth.min(10));
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The values named in `names`, each one of `all` by its `name`.
fn by_name<T: Copy>(
    names: &[String],
    all: &[T],
    name: fn(T) -> &'static str,
) -> Result<Vec<T>, String> {
    names
        .iter()
        .map(|wanted| {
            all.iter()
                .copied()
                .find(|v| name(*v) == wanted.trim())
                .ok_or_else(|| {
                    let known: Vec<&str> = all.iter().map(|v| name(*v)).collect();
                    format!("unknown name `{wanted}` (expected {})", known.join(", "))
                })
        })
        .collect()
}

/// A loop's progress: a bar with ETA on a terminal, else a line per failing cycle and one
/// per tenth of the way.
struct LoopProgress {
    bar: Option<indicatif::ProgressBar>,
    begun: std::time::Instant,
    duration: Option<Duration>,
}

impl LoopProgress {
    fn new(cycles: u64, duration: Option<Duration>) -> LoopProgress {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let (length, template) = match duration {
                Some(d) => (
                    d.as_secs(),
                    "{elapsed_precise} [{bar:30}] {pos}/{len} s, ETA {eta}: {msg}",
                ),
                None => (
                    cycles,
                    "{elapsed_precise} [{bar:30}] {pos}/{len} cycles, ETA {eta}: {msg}",
                ),
            };
            let bar = indicatif::ProgressBar::new(length);
            if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        LoopProgress {
            bar,
            begun: std::time::Instant::now(),
            duration,
        }
    }

    fn update(&mut self, p: crate::repeat::Progress<'_>) {
        let failure = p.last.failure.map(|class| {
            let phase = p
                .last
                .phase
                .map(|ph| format!(" at {ph}"))
                .unwrap_or_default();
            format!("cycle {}: {class}{phase}", p.last.cycle)
        });
        let status = format!("{} done, {} failed", p.done, p.failed);
        match &self.bar {
            Some(bar) => {
                if let Some(line) = failure {
                    bar.println(format!("quiesce: {line}"));
                }
                bar.set_message(status);
                match self.duration {
                    Some(_) => bar.set_position(self.begun.elapsed().as_secs()),
                    None => bar.set_position(p.done),
                }
            }
            None => {
                if let Some(line) = failure {
                    eprintln!("quiesce: {line}");
                }
                let tenth = (p.planned / 10).max(1);
                if p.done.is_multiple_of(tenth) {
                    eprintln!("quiesce: {status}");
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("n/a".to_owned(), |b| {
        format!("{:.1} MiB", b as f64 / 1048576.0)
    })
}

async fn infra_up(args: UpArgs) -> Result<i32, InfraError> {
    let config = resolve_config(&args.infra)?;
    let mut signals = SignalHandler::new().map_err(InfraError::Workdir)?;
    if config.backend == BackendKind::Auto {
        eprintln!("quiesce: choosing a backend (QUIESCE_BACKEND or --backend to choose)");
    }
    let mut infra = tokio::select! {
        started = Infra::start(&config) => started?,
        _ = signals.recv() => {
            // Dropping the start future stopped whatever it had started.
            eprintln!("quiesce: interrupted during start; everything started was stopped");
            return Ok(exit_codes::INTERRUPTED);
        }
    };
    eprintln!(
        "quiesce: backend {} ({})",
        infra.backend(),
        infra.backend_reason()
    );
    let status = infra.status();
    for dep in &status {
        eprintln!(
            "quiesce: {:<5} {} -> {} ({}, RSS {})",
            dep.dependency.as_str(),
            dep.endpoint,
            dep.upstream,
            dep.runner,
            mib(dep.rss_bytes),
        );
    }
    eprintln!(
        "quiesce: ready in {:.3} s; logs in {}",
        infra.started_in().as_secs_f64(),
        infra.workdir().display()
    );
    let api_listen = match &args.api {
        Some(addr) => infra::parse_listen(addr).map_err(|message| {
            InfraError::Config(infra::ConfigError::Value {
                origin: "--api".to_owned(),
                message,
            })
        })?,
        None => std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let endpoints = infra.endpoints().clone();
    let backend = infra.backend();
    let reason = infra.backend_reason().to_owned();
    let ready_secs = infra.started_in().as_secs_f64();
    let shared = std::sync::Arc::new(tokio::sync::Mutex::new(infra));
    let api_stop = tokio_util::sync::CancellationToken::new();
    let api = if args.no_api {
        None
    } else {
        match infra::api::serve(shared.clone(), api_listen, api_stop.clone()).await {
            Ok(served) => Some(served),
            Err(e) => {
                let _ = shared.lock().await.close().await;
                return Err(e);
            }
        }
    };
    let api_url = api.as_ref().map(|(addr, _)| format!("http://{addr}"));
    let json = serde_json::json!({
        "backend": backend,
        "backend_reason": reason,
        "endpoints": endpoints,
        "env": endpoints.env().into_iter().collect::<std::collections::BTreeMap<_, _>>(),
        "fault_api": api_url,
        "ready_secs": ready_secs,
        "dependencies": status,
    });
    if let Some(url) = &api_url {
        eprintln!("quiesce: fault API (Toxiproxy-compatible) at {url}");
    }
    if !args.json {
        print!("{}", endpoints.shell_exports());
        if let Some(url) = &api_url {
            println!("export QUIESCE_FAULT_API='{url}'");
        }
    }
    println!("{json}");
    use std::io::Write;
    let _ = std::io::stdout().flush();

    let held = match args.hold {
        Some(secs) => {
            eprintln!("quiesce: holding for {secs} s (Ctrl-C stops earlier)");
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(secs)) => None,
                event = signals.recv() => Some(event),
            }
        }
        None => {
            eprintln!("quiesce: holding until Ctrl-C");
            Some(signals.recv().await)
        }
    };
    if let Some(event) = held {
        let name = match event {
            SignalEvent::Interrupt => "Ctrl-C",
            SignalEvent::Terminate => "SIGTERM",
        };
        eprintln!("quiesce: {name}: stopping (press Ctrl-C again to kill at once)");
    }
    api_stop.cancel();
    let api_task = api.map(|(_, task)| task);
    let abort = api_task.as_ref().map(|t| t.abort_handle());
    let close = async {
        if let Some(task) = api_task {
            let _ = task.await;
        }
        shared.lock().await.close().await
    };
    tokio::select! {
        closed = close => closed?,
        _ = signals.recv() => {
            eprintln!("quiesce: second signal: killing everything now");
            // The API task holds a handle too; once it is gone, dropping ours drops the
            // infrastructure, which kills the processes and removes the containers.
            if let Some(abort) = abort {
                abort.abort();
            }
            tokio::task::yield_now().await;
            drop(shared);
            return Ok(exit_codes::INTERRUPTED);
        }
    }
    eprintln!("quiesce: stopped");
    Ok(exit_codes::OK)
}

async fn images_build() -> Result<i32, InfraError> {
    let config = {
        let mut c = InfraConfig::default();
        c.apply_env(|k| std::env::var(k).ok())?;
        c
    };
    let built = images::build_local_images(&config).await?;
    for image in &built {
        eprintln!(
            "quiesce: {} {} ({})",
            image.name,
            if image.reused { "up to date" } else { "built" },
            image.source.display()
        );
    }
    println!("{}", images::exports(&built));
    Ok(exit_codes::OK)
}
