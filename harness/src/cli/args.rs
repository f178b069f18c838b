//! What the commands share: the scenario and backend arguments, loading a scenario with
//! them, and writing the reports where they were asked for.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::infra::{self, InfraConfig, InfraError};
use crate::signal::SignalHandler;

use super::CliError;

/// What `run`, `loop` and `soak` share: the target's variables and where the reports go.
#[derive(Debug, Args)]
pub(super) struct ScenarioArgs {
    /// A variable for the target, over the scenario's (repeatable): KEY=VALUE.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub(super) env: Vec<String>,
    /// Print the verdict (run, soak) or the report (loop) as JSON on stdout; the summary
    /// then goes to stderr.
    #[arg(long)]
    pub(super) json: bool,
    /// Also write JUnit XML to FILE: a test case per check (run, soak), or per failing cycle
    /// plus a summary case (loop).
    #[arg(long, value_name = "FILE")]
    pub(super) junit: Option<PathBuf>,
    /// Keep the target's output (run), the cycles' folders and loop.json (loop), or the
    /// timeline, plot, soak.json and the run's folder (soak) in DIR (default: a new folder in
    /// the temp dir).
    #[arg(long, value_name = "DIR")]
    pub(super) out: Option<PathBuf>,
    /// Accept these checks being inconclusive (comma-separated, repeatable): they are still
    /// reported as such, but do not make the run INCONCLUSIVE (exit 6). Adds to the file's
    /// `[checks] allow_inconclusive`.
    #[arg(long, value_name = "CHECK,...", value_delimiter = ',')]
    pub(super) allow_inconclusive: Vec<String>,
}

impl ScenarioArgs {
    /// Loads the scenario file, with the infrastructure overrides and the accepted
    /// inconclusive checks of the command line.
    pub(super) fn load(
        &self,
        path: &std::path::Path,
        backend: &BackendArgs,
    ) -> Result<crate::scenario::Scenario, CliError> {
        let mut scenario = crate::scenario::Scenario::load(path)?;
        for off in scenario.off() {
            eprintln!("quiesce: note: {}: {off}", path.display());
        }
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
pub(super) struct BackendArgs {
    /// auto, local, containers or external [env: QUIESCE_BACKEND]
    #[arg(long, value_name = "BACKEND")]
    pub(super) backend: Option<String>,
    /// Where the Kafka proxy listens: PORT or IP:PORT [env: QUIESCE_KAFKA_LISTEN]
    #[arg(long, value_name = "ADDR")]
    pub(super) kafka_listen: Option<String>,
    /// Where the Redis proxy listens: PORT or IP:PORT [env: QUIESCE_REDIS_LISTEN]
    #[arg(long, value_name = "ADDR")]
    pub(super) redis_listen: Option<String>,
}

#[derive(Debug, Args)]
pub(super) struct InfraArgs {
    /// A TOML file with an `[infra]` table (a scenario file will do).
    #[arg(long, value_name = "FILE")]
    pub(super) config: Option<PathBuf>,
    #[command(flatten)]
    pub(super) backend: BackendArgs,
}

/// `90s`, `30m`, `2h`, `1h30m` or plain seconds.
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
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

pub(super) fn resolve_config(args: &InfraArgs) -> Result<InfraConfig, InfraError> {
    let mut config = match &args.config {
        Some(path) => infra::load_config(path)?,
        None => InfraConfig::default(),
    };
    apply_overrides(&mut config, &args.backend)?;
    Ok(config)
}

/// Environment, then flags, over what the file says.
pub(super) fn apply_overrides(
    config: &mut InfraConfig,
    args: &BackendArgs,
) -> Result<(), InfraError> {
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

/// `--env KEY=VALUE` pairs.
pub(super) fn parse_env(pairs: &[String]) -> Result<Vec<(String, String)>, infra::ConfigError> {
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
pub(super) fn write_file(path: &std::path::Path, text: &str) -> Result<(), CliError> {
    std::fs::write(path, text).map_err(|source| CliError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Ctrl-C and SIGTERM, from here on the CLI's to act on.
pub(super) fn signal_handler() -> Result<SignalHandler, CliError> {
    SignalHandler::new().map_err(|e| CliError::Infra(InfraError::Workdir(e)))
}

/// Prints the summary, or the JSON with the summary on stderr (`--json`), and writes the
/// JUnit XML `--junit` asks for.
pub(super) fn emit(
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
pub(super) fn fresh_out_dir(job: &str, scenario: &str) -> PathBuf {
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
pub(super) fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

/// The values named in `names`, each one of `all` by its `name`.
pub(super) fn by_name<T: Copy>(
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

/// The files `paths` name: files as given, folders walked for `*.toml` (hidden folders and
/// `target/` skipped), sorted within each folder.
pub(super) fn scenario_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, CliError> {
    let mut out = Vec::new();
    for path in paths {
        if !path.is_dir() {
            out.push(path.clone());
            continue;
        }
        let mut found = Vec::new();
        let mut stack = vec![path.clone()];
        while let Some(dir) = stack.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|source| {
                CliError::Config(crate::infra::ConfigError::Read {
                    path: dir.clone(),
                    source,
                })
            })?;
            for entry in entries.flatten() {
                let p = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if p.is_dir() {
                    if !name.starts_with('.') && name != "target" {
                        stack.push(p);
                    }
                } else if name.ends_with(".toml") && name != "Cargo.toml" {
                    found.push(p);
                }
            }
        }
        found.sort();
        out.extend(found);
    }
    Ok(out)
}

/// Starts the infrastructure `config` asks for, unless Ctrl-C comes first: `None` then, with
/// everything started stopped (dropping the start future stops it).
pub(super) async fn start_infra(
    config: &InfraConfig,
    signals: &mut crate::signal::SignalHandler,
) -> Result<Option<crate::infra::Infra>, InfraError> {
    if config.backend == crate::infra::BackendKind::Auto {
        eprintln!("quiesce: choosing a backend (QUIESCE_BACKEND or --backend to choose)");
    }
    tokio::select! {
        started = crate::infra::Infra::start(config) => started.map(Some),
        _ = signals.recv() => {
            eprintln!("quiesce: interrupted during start; everything started was stopped");
            Ok(None)
        }
    }
}
