//! The soak's timeline: one JSON object per line, written as the soak goes.
//!
//! A soak runs for hours and ends, too often, by being killed: a CI job hits its time limit,
//! an OOM killer picks the soak instead of the target, someone presses Ctrl-C twice. What the
//! soak measured until then is the evidence, so it must already be on disk. The timeline is
//! therefore append-only JSON Lines, each line written whole and flushed before the sampler
//! takes its next sample, and [`read_timeline`] accepts a file whose last line was cut short
//! by the kill.
//!
//! # Format
//!
//! The first line is the [`Header`], led by the format version:
//!
//! ```text
//! {"quiesce_soak":1,"scenario":"event-pipeline","pid":4242,"interval_ms":1000,"started_unix_ms":1760000000000,"threshold_mb_per_day":10.0,"warmup_ms":600000}
//! ```
//!
//! Every further line is either a [`Sample`] or an [`Event`]; an event is the line with an
//! `"event"` field:
//!
//! ```text
//! {"t_ms":1000,"rss_bytes":52428800,"anon_bytes":31457280,"pss_bytes":50331648,"threads":9,"fds":23}
//! {"t_ms":1500,"event":"fault: kill -9 leader"}
//! ```
//!
//! Readers ignore fields they do not know, so later versions may add fields without a new
//! format number; `quiesce_soak` changes only when an old reader would misread a file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::ProcessSample;

/// The format number written as the header's `quiesce_soak` field.
pub const FORMAT_VERSION: u32 = 1;

/// How often [`TimelineWriter`] forces its file to the disk at most.
///
/// Every line reaches the kernel before [`TimelineWriter::append`] returns, and the kernel
/// keeps it when the soak is killed, even with SIGKILL. Only a crash of the host itself (a
/// kernel panic, a VM stopped by its hypervisor) loses lines the kernel has not yet written
/// out; syncing bounds that loss to this interval. Syncing every line instead would put an
/// `fsync` behind each sample: on a busy CI disk one can wait hundreds of milliseconds for
/// other writers' journal commits, which would stall the sampler, skew its interval, and add
/// I/O load to the very system being measured.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(10);

/// What a soak was and how it was judged: the timeline's first line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// The scenario soaked, as the soak's configuration names it.
    pub scenario: String,
    /// The root process sampled (samples cover it and its descendants).
    pub pid: u32,
    /// The sampling interval.
    pub interval_ms: u64,
    /// Wall-clock start of the soak, in milliseconds since the Unix epoch; every `t_ms` counts
    /// from here.
    pub started_unix_ms: u64,
    /// The growth the soak tolerates after warm-up, in MB per day.
    pub threshold_mb_per_day: f64,
    /// The live heap's own threshold, where the soak set one (absent: the one above).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heap_threshold_mb_per_day: Option<f64>,
    /// How long after the start samples are excluded from the trend.
    pub warmup_ms: u64,
}

/// One sample of the soaked process tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// Milliseconds since the soak's start ([`Header::started_unix_ms`]).
    pub t_ms: u64,
    /// Resident set size.
    pub rss_bytes: u64,
    /// Anonymous resident memory, where the kernel reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anon_bytes: Option<u64>,
    /// Proportional set size, where `smaps_rollup` was readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pss_bytes: Option<u64>,
    /// OS threads.
    pub threads: u64,
    /// Open file descriptors, where `/proc/PID/fd` was readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fds: Option<u64>,
    /// The allocator's bytes in use, where the target's probe reports them
    /// (`QUIESCE_HEAP_FILE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heap_bytes: Option<u64>,
    /// The bytes the allocator holds from the system (in use or kept free), where the probe
    /// reports them: what tells allocator retention from growth outside the heap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heap_held_bytes: Option<u64>,
    /// Processes in the sampled tree (1: the target alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<u64>,
}

impl Sample {
    /// The sample taken `t_ms` after the soak's start, from what
    /// [`sample_tree`](crate::sample_tree) read.
    pub fn from_process(t_ms: u64, sample: &ProcessSample) -> Self {
        Self {
            t_ms,
            rss_bytes: sample.rss_bytes,
            // The sampler reads a missing `RssAnon` (kernels before 4.5) as 0; no live process
            // has no anonymous memory at all, so 0 means "not reported".
            anon_bytes: (sample.anon_bytes != 0).then_some(sample.anon_bytes),
            pss_bytes: sample.pss_bytes,
            threads: sample.threads,
            fds: sample.open_fds,
            heap_bytes: None,
            heap_held_bytes: None,
            processes: Some(sample.processes),
        }
    }
}

/// Something that happened during the soak, such as `"fault: ..."`, `"restart"` or `"stop"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Milliseconds since the soak's start.
    pub t_ms: u64,
    /// What happened, for a human.
    pub event: String,
}

/// What [`read_timeline`] tolerated in a file it could read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadNotes {
    /// The unparsable last line, dropped: the soak was killed while writing it.
    pub torn_last_line: Option<TornLine>,
}

impl ReadNotes {
    /// Whether the file was read without dropping anything.
    pub fn is_clean(&self) -> bool {
        self.torn_last_line.is_none()
    }
}

/// A last line cut short, without its newline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TornLine {
    /// Its line number, counting from 1.
    pub line: usize,
    /// How many bytes of it were written.
    pub bytes: usize,
}

/// Why a timeline could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    /// The file could not be created, written or synced.
    #[error("cannot write timeline {path}")]
    Write {
        /// The timeline file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The file could not be read.
    #[error("cannot read timeline {path}")]
    Read {
        /// The timeline file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The header's threshold is NaN or infinite, which JSON cannot carry.
    #[error("threshold {0} MB/day is not a finite number")]
    NonFiniteThreshold(f64),
    /// The file is empty, or its first line is not a complete line.
    #[error("{path} has no header line (hint: the soak was killed before its first write)")]
    MissingHeader {
        /// The timeline file.
        path: PathBuf,
    },
    /// The first line is not a soak timeline header.
    #[error("{path} does not start with a quiesce soak header: {reason}")]
    InvalidHeader {
        /// The timeline file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The header names a format this reader does not know.
    #[error(
        "{path} is timeline format {version}, this reader knows format {FORMAT_VERSION} \
         (hint: read it with the quiesce version that wrote it)"
    )]
    UnsupportedVersion {
        /// The timeline file.
        path: PathBuf,
        /// The header's `quiesce_soak` value.
        version: u64,
    },
    /// A line other than the last is not a sample or an event.
    #[error("{path}: line {line} is not a timeline record")]
    MalformedLine {
        /// The timeline file.
        path: PathBuf,
        /// The line number, counting from 1.
        line: usize,
        /// What the JSON parser said.
        #[source]
        source: serde_json::Error,
    },
}

/// The header line as written: the format number first, so `head -1` identifies the file.
#[derive(Serialize)]
struct HeaderLine<'a> {
    quiesce_soak: u32,
    #[serde(flatten)]
    header: &'a Header,
}

/// Appends a soak's samples and events to its timeline file, each line on disk (in the
/// kernel's hands) before the call returns.
///
/// Each line goes to the file in a single `write` call, so a soak killed with SIGKILL leaves
/// every line it appended intact, except at worst the one it was writing when killed, which
/// [`read_timeline`] drops and reports. The file is synced to the disk at most every
/// [`SYNC_INTERVAL`], and on [`close`](Self::close) or drop.
///
/// ```
/// use quiesce_soak::{Event, Header, Sample, TimelineWriter, read_timeline};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("soak.jsonl");
/// let header = Header {
///     scenario: "event-pipeline".into(),
///     pid: 4242,
///     interval_ms: 1000,
///     started_unix_ms: 1_760_000_000_000,
///     threshold_mb_per_day: 25.0,
///     heap_threshold_mb_per_day: Some(10.0),
///     warmup_ms: 600_000,
/// };
/// let mut timeline = TimelineWriter::create(&path, &header)?;
/// let sample = Sample { t_ms: 1000, rss_bytes: 50 << 20, anon_bytes: Some(30 << 20),
///                       pss_bytes: None, threads: 9, fds: Some(23), heap_bytes: None,
///                       heap_held_bytes: None, processes: Some(1) };
/// timeline.append(&sample)?;
/// timeline.append_event(&Event { t_ms: 1500, event: "stop".into() })?;
/// timeline.close()?;
///
/// let (read_header, samples, events, notes) = read_timeline(&path)?;
/// assert_eq!(read_header, header);
/// assert_eq!(samples, [sample]);
/// assert_eq!(events.len(), 1);
/// assert!(notes.is_clean());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct TimelineWriter {
    path: PathBuf,
    file: Option<File>,
    last_sync: Instant,
    /// Whether lines were written since the last sync.
    dirty: bool,
}

impl TimelineWriter {
    /// Creates (or truncates) the timeline at `path` and writes its header.
    pub fn create(path: impl AsRef<Path>, header: &Header) -> Result<Self, TimelineError> {
        let path = path.as_ref().to_owned();
        for threshold in [header.threshold_mb_per_day]
            .into_iter()
            .chain(header.heap_threshold_mb_per_day)
        {
            if !threshold.is_finite() {
                return Err(TimelineError::NonFiniteThreshold(threshold));
            }
        }
        let write_error = |source| TimelineError::Write {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(write_error)?;
        let mut writer = Self {
            path: path.clone(),
            file: Some(file),
            last_sync: Instant::now(),
            dirty: false,
        };
        writer.write_line(&HeaderLine {
            quiesce_soak: FORMAT_VERSION,
            header,
        })?;
        writer.sync()?;
        // A new file survives a host crash only once its directory entry is on disk too.
        // Best effort: some file systems refuse to sync a directory, and the lines written
        // still survive the kill of the soak, which is what matters most.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(writer)
    }

    /// The timeline file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one sample.
    pub fn append(&mut self, sample: &Sample) -> Result<(), TimelineError> {
        self.write_line(sample)
    }

    /// Appends one event.
    pub fn append_event(&mut self, event: &Event) -> Result<(), TimelineError> {
        self.write_line(event)
    }

    /// Syncs the file to the disk and closes it. Idempotent; appending afterwards fails.
    pub fn close(&mut self) -> Result<(), TimelineError> {
        let result = self.sync();
        self.file = None;
        result
    }

    fn write_line(&mut self, record: &impl Serialize) -> Result<(), TimelineError> {
        let mut line = serde_json::to_vec(record).expect("timeline records serialize to JSON");
        line.push(b'\n');
        let file = self.file.as_mut().ok_or_else(|| TimelineError::Write {
            path: self.path.clone(),
            source: io::Error::other("the timeline was closed"),
        })?;
        // One buffer, one `write_all`: a line is torn only if the soak dies inside this call.
        // `File` has no user-space buffer, so after `write_all` the line is the kernel's and
        // `flush` only states that intent for readers of this code.
        file.write_all(&line)
            .and_then(|()| file.flush())
            .map_err(|source| TimelineError::Write {
                path: self.path.clone(),
                source,
            })?;
        self.dirty = true;
        if self.last_sync.elapsed() >= SYNC_INTERVAL {
            self.sync()?;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), TimelineError> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        if self.dirty {
            file.sync_data().map_err(|source| TimelineError::Write {
                path: self.path.clone(),
                source,
            })?;
            self.dirty = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }
}

impl Drop for TimelineWriter {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// Reads a timeline: its header, its samples and its events, each in file order.
///
/// A last line that does not parse and has no newline is what a killed soak leaves behind:
/// it is dropped and reported in [`ReadNotes`]. Any other line that does not parse is an
/// error naming its line number. Blank lines are skipped.
pub fn read_timeline(
    path: impl AsRef<Path>,
) -> Result<(Header, Vec<Sample>, Vec<Event>, ReadNotes), TimelineError> {
    let path = path.as_ref();
    let bytes = fs::read(path).map_err(|source| TimelineError::Read {
        path: path.to_owned(),
        source,
    })?;
    let ends_with_newline = bytes.last() == Some(&b'\n');
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if ends_with_newline || bytes.is_empty() {
        // `split` yields an empty piece after the final newline; it is not a line.
        lines.pop();
    }

    let Some((first, rest)) = lines.split_first() else {
        return Err(TimelineError::MissingHeader {
            path: path.to_owned(),
        });
    };
    let header = match parse_header(path, first) {
        Ok(header) => header,
        // The soak was killed while writing its header: there is no header, not a bad one.
        Err(_) if rest.is_empty() && !ends_with_newline => {
            return Err(TimelineError::MissingHeader {
                path: path.to_owned(),
            });
        }
        Err(e) => return Err(e),
    };

    let mut samples = Vec::new();
    let mut events = Vec::new();
    let mut notes = ReadNotes::default();
    for (index, line) in rest.iter().enumerate() {
        let number = index + 2;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse_record(line) {
            Ok(Record::Sample(sample)) => samples.push(sample),
            Ok(Record::Event(event)) => events.push(event),
            Err(_) if index + 1 == rest.len() && !ends_with_newline => {
                notes.torn_last_line = Some(TornLine {
                    line: number,
                    bytes: line.len(),
                });
            }
            Err(source) => {
                return Err(TimelineError::MalformedLine {
                    path: path.to_owned(),
                    line: number,
                    source,
                });
            }
        }
    }
    Ok((header, samples, events, notes))
}

fn parse_header(path: &Path, line: &[u8]) -> Result<Header, TimelineError> {
    let invalid = |reason: String| TimelineError::InvalidHeader {
        path: path.to_owned(),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| invalid(e.to_string()))?;
    let version = value
        .get("quiesce_soak")
        .ok_or_else(|| invalid("no \"quiesce_soak\" field".into()))?
        .as_u64()
        .ok_or_else(|| invalid("\"quiesce_soak\" is not a format number".into()))?;
    if version != u64::from(FORMAT_VERSION) {
        return Err(TimelineError::UnsupportedVersion {
            path: path.to_owned(),
            version,
        });
    }
    serde_json::from_value(value).map_err(|e| invalid(e.to_string()))
}

enum Record {
    Sample(Sample),
    Event(Event),
}

fn parse_record(line: &[u8]) -> Result<Record, serde_json::Error> {
    // Parsed twice (a `Value`, then the record) so that an error names the kind of line it
    // is about rather than "did not match any variant", as an untagged enum would.
    let value: serde_json::Value = serde_json::from_slice(line)?;
    if value.get("event").is_some() {
        serde_json::from_value(value).map(Record::Event)
    } else {
        serde_json::from_value(value).map(Record::Sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            scenario: "event-pipeline".into(),
            pid: 4242,
            interval_ms: 1000,
            started_unix_ms: 1_760_000_000_000,
            threshold_mb_per_day: 25.0,
            heap_threshold_mb_per_day: Some(10.0),
            warmup_ms: 600_000,
        }
    }

    fn sample(t_ms: u64) -> Sample {
        Sample {
            t_ms,
            rss_bytes: (50 << 20) + t_ms,
            anon_bytes: Some(30 << 20),
            pss_bytes: t_ms.is_multiple_of(2).then_some(48 << 20),
            threads: 9,
            fds: Some(23),
            heap_bytes: t_ms.is_multiple_of(3000).then_some(20 << 20),
            heap_held_bytes: t_ms.is_multiple_of(3000).then_some(24 << 20),
            processes: Some(1),
        }
    }

    fn write(path: &Path, samples: u64) -> Vec<Sample> {
        let mut writer = TimelineWriter::create(path, &header()).unwrap();
        let written: Vec<Sample> = (1..=samples).map(|i| sample(i * 1000)).collect();
        for s in &written {
            writer.append(s).unwrap();
        }
        writer.close().unwrap();
        written
    }

    #[test]
    fn round_trip_keeps_header_samples_and_events_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("soak.jsonl");
        let mut writer = TimelineWriter::create(&path, &header()).unwrap();
        let events = [
            Event {
                t_ms: 1500,
                event: "fault: kill -9 leader".into(),
            },
            Event {
                t_ms: 2500,
                event: "restart".into(),
            },
        ];
        writer.append(&sample(1000)).unwrap();
        writer.append_event(&events[0]).unwrap();
        writer.append(&sample(2000)).unwrap();
        writer.append_event(&events[1]).unwrap();
        writer.append(&sample(3000)).unwrap();
        writer.close().unwrap();
        writer.close().expect("close is idempotent");
        assert!(writer.append(&sample(4000)).is_err());

        let (read_header, samples, read_events, notes) = read_timeline(&path).unwrap();
        assert_eq!(read_header, header());
        assert_eq!(samples, [sample(1000), sample(2000), sample(3000)]);
        assert_eq!(read_events, events);
        assert!(notes.is_clean());

        let text = fs::read_to_string(&path).unwrap();
        let first = text.lines().next().unwrap();
        assert!(first.starts_with(r#"{"quiesce_soak":1,"scenario":"event-pipeline","#));
        assert_eq!(text.lines().count(), 6);
    }

    #[test]
    fn sample_from_process_keeps_what_the_sampler_read() {
        let me = crate::sample_process(std::process::id()).unwrap();
        let sample = Sample::from_process(7, &me);
        assert_eq!(sample.t_ms, 7);
        assert_eq!(sample.rss_bytes, me.rss_bytes);
        assert_eq!(sample.anon_bytes, Some(me.anon_bytes));
        assert_eq!(sample.fds, me.open_fds);
    }

    /// A soak killed with SIGKILL inside `write_all` leaves its last line cut short and no
    /// newline after it; simulated by appending half a line by hand, which is the same file.
    #[test]
    fn killed_writer_keeps_every_complete_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("soak.jsonl");
        let written = write(&path, 50);
        let line = serde_json::to_string(&sample(51_000)).unwrap();
        let half = &line[..line.len() / 2];
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(half.as_bytes())
            .unwrap();

        let (_, samples, _, notes) = read_timeline(&path).unwrap();
        assert_eq!(samples, written);
        assert_eq!(
            notes.torn_last_line,
            Some(TornLine {
                line: 52,
                bytes: half.len()
            })
        );
    }

    #[test]
    fn torn_last_line_is_dropped_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("soak.jsonl");
        let torn = r#"{"t_ms":2000,"rss_b"#;
        let text = format!(
            "{}\n{}\n{torn}",
            serde_json::to_string(&HeaderLine {
                quiesce_soak: 1,
                header: &header()
            })
            .unwrap(),
            serde_json::to_string(&sample(1000)).unwrap(),
        );
        fs::write(&path, text).unwrap();
        let (_, samples, _, notes) = read_timeline(&path).unwrap();
        assert_eq!(samples, [sample(1000)]);
        assert_eq!(
            notes.torn_last_line,
            Some(TornLine {
                line: 3,
                bytes: torn.len()
            })
        );
    }

    /// The write can stop exactly before the newline: the line is whole and is kept.
    #[test]
    fn complete_last_line_without_newline_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("soak.jsonl");
        write(&path, 3);
        let mut text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.pop(), Some('\n'));
        fs::write(&path, text).unwrap();
        let (_, samples, _, notes) = read_timeline(&path).unwrap();
        assert_eq!(samples.len(), 3);
        assert!(notes.is_clean());
    }

    #[test]
    fn corrupt_middle_line_is_an_error_naming_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("soak.jsonl");
        write(&path, 5);
        let text = fs::read_to_string(&path).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines[3] = r#"{"t_ms":3000,"rss_bytes":"many"}"#;
        fs::write(&path, lines.join("\n") + "\n").unwrap();

        let err = read_timeline(&path).unwrap_err();
        assert!(
            matches!(err, TimelineError::MalformedLine { line: 4, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("line 4"), "{err}");
    }

    /// A line that ends with its newline was written whole, so it is corrupt, not torn.
    #[test]
    fn corrupt_last_line_with_newline_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("soak.jsonl");
        write(&path, 2);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"t_ms\":\n").unwrap();
        let err = read_timeline(&path).unwrap_err();
        assert!(
            matches!(err, TimelineError::MalformedLine { line: 4, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn missing_or_invalid_header_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("soak.jsonl");
        // (file contents, the error's variant as `Debug` prints it)
        let cases = [
            ("", "MissingHeader"),
            (r#"{"quiesce_soak":1,"scen"#, "MissingHeader"),
            (
                "{\"t_ms\":1000,\"rss_bytes\":1,\"threads\":1}\n",
                "InvalidHeader",
            ),
            ("{\"quiesce_soak\":1,\"scenario\":\"x\"}\n", "InvalidHeader"),
            ("{\"quiesce_soak\":2}\n", "UnsupportedVersion"),
        ];
        for (text, variant) in cases {
            fs::write(&path, text).unwrap();
            let err = read_timeline(&path).unwrap_err();
            assert!(format!("{err:?}").starts_with(variant), "{text:?}: {err:?}");
            assert!(err.to_string().contains("soak.jsonl"), "{err}");
        }
        let err = read_timeline(dir.path().join("absent.jsonl")).unwrap_err();
        assert!(matches!(err, TimelineError::Read { .. }), "{err:?}");
    }

    #[test]
    fn non_finite_threshold_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let resident = Header {
            threshold_mb_per_day: f64::NAN,
            ..header()
        };
        let err = TimelineWriter::create(dir.path().join("soak.jsonl"), &resident).unwrap_err();
        assert!(
            matches!(err, TimelineError::NonFiniteThreshold(_)),
            "{err:?}"
        );
        let heap = Header {
            heap_threshold_mb_per_day: Some(f64::INFINITY),
            ..header()
        };
        let err = TimelineWriter::create(dir.path().join("soak.jsonl"), &heap).unwrap_err();
        assert!(
            matches!(err, TimelineError::NonFiniteThreshold(_)),
            "{err:?}"
        );
    }
}
