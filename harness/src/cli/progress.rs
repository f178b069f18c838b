//! How long commands show their progress: a bar with ETA on a terminal, else a line per
//! milestone, so CI logs show progress without control characters.

use std::time::Duration;

/// A soak's progress: a bar with ETA, RSS and the slope so far on a terminal; else a line
/// per tenth of the way.
#[derive(Clone)]
pub(super) struct SoakProgress {
    pub(super) bar: Option<indicatif::ProgressBar>,
    pub(super) duration: Duration,
    pub(super) tenth: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl SoakProgress {
    pub(super) fn new(duration: Duration) -> SoakProgress {
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

    pub(super) fn update(&self, status: &crate::soak::Status) {
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

    pub(super) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// A loop's progress: a bar with ETA on a terminal, else a line per failing cycle and one
/// per tenth of the way.
pub(super) struct LoopProgress {
    pub(super) bar: Option<indicatif::ProgressBar>,
    pub(super) begun: std::time::Instant,
    pub(super) duration: Option<Duration>,
}

impl LoopProgress {
    pub(super) fn new(cycles: u64, duration: Option<Duration>) -> LoopProgress {
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

    pub(super) fn update(&mut self, p: crate::repeat::Progress<'_>) {
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

    pub(super) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// A suite's progress: on a terminal, a bar of scenarios with ETA above the line each
/// finished scenario prints; else the lines alone (a CI log).
pub(super) struct ScenariosBar {
    bar: Option<indicatif::ProgressBar>,
}

impl ScenariosBar {
    pub(super) fn new(total: usize) -> ScenariosBar {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total as u64);
            let template = "{elapsed_precise} [{bar:30}] {pos}/{len} scenarios, ETA {eta}";
            if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        ScenariosBar { bar }
    }

    /// One scenario finished: its line, and the bar one step on.
    pub(super) fn finished(&self, line: String) {
        match &self.bar {
            Some(bar) => {
                bar.println(line);
                bar.inc(1);
            }
            None => eprintln!("{line}"),
        }
    }

    pub(super) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
