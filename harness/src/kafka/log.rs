//! Processed evidence from the target's own log: a line it prints per processed input (`order
//! o-17 done`), matched by `[kafka] processed = { by = "log", pattern = ... }`. The pattern's
//! group named `key` (else its first group) is the input's key.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;

use crate::kafka::client::{Counter, InputRef, Output, OutputCount};

/// The key a line names, if it matches.
pub fn key_in(pattern: &Regex, line: &str) -> Option<String> {
    let captures = pattern.captures(line)?;
    captures
        .name("key")
        .or_else(|| captures.get(1))
        .map(|m| m.as_str().to_owned())
}

/// Every line of `files` that names a key, as outputs (with no place in a topic). A file that
/// is not there yet holds no line.
pub fn read_outputs(files: &[PathBuf], pattern: &Regex) -> Vec<Output> {
    let mut outputs = Vec::new();
    for file in files {
        let Ok(bytes) = std::fs::read(file) else {
            continue;
        };
        for line in String::from_utf8_lossy(&bytes).lines() {
            if let Some(key) = key_in(pattern, line) {
                outputs.push(Output {
                    input: InputRef::Key(key.clone()),
                    key,
                    at: None,
                });
            }
        }
    }
    outputs
}

/// How often the log is looked at while the target runs.
const TAIL: Duration = Duration::from_millis(50);

/// Counts the inputs of the run named by lines of `files` into `seen`, as they are written,
/// until dropped. Only whole lines count: a line still being written is read once it ends.
pub async fn count_lines(
    files: Vec<PathBuf>,
    pattern: Regex,
    prefix: String,
    seen: tokio::sync::watch::Sender<OutputCount>,
) {
    let mut counter = Counter::new(&prefix);
    let mut tails: Vec<Tail> = files.into_iter().map(Tail::new).collect();
    loop {
        for tail in &mut tails {
            for line in tail.new_lines() {
                if let Some(key) = key_in(&pattern, &line)
                    && counter.count(InputRef::Key(key))
                {
                    seen.send_replace(counter.seen);
                }
            }
        }
        tokio::time::sleep(TAIL).await;
    }
}

/// A file read as it grows.
pub struct Tail {
    path: PathBuf,
    read: u64,
    partial: Vec<u8>,
}

impl Tail {
    pub fn new(path: PathBuf) -> Tail {
        Tail {
            path,
            read: 0,
            partial: Vec::new(),
        }
    }

    /// The lines completed since the last call.
    pub fn new_lines(&mut self) -> Vec<String> {
        let mut more = Vec::new();
        if read_from(&self.path, self.read, &mut more).is_err() {
            return Vec::new();
        }
        self.read += more.len() as u64;
        self.partial.extend(more);
        let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return Vec::new();
        };
        let whole: Vec<u8> = self.partial.drain(..=end).collect();
        String::from_utf8_lossy(&whole)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn read_from(path: &Path, at: u64, into: &mut Vec<u8>) -> std::io::Result<()> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(at))?;
    file.read_to_end(into)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_named_group_wins_over_the_first() {
        let pattern = Regex::new(r"(shipped|held) order (?<key>\S+)").unwrap();
        assert_eq!(
            key_in(&pattern, "INFO shipped order r1-7 in 3 ms").as_deref(),
            Some("r1-7")
        );
        let first = Regex::new(r"done: (\S+)").unwrap();
        assert_eq!(key_in(&first, "done: r1-8").as_deref(), Some("r1-8"));
        assert_eq!(key_in(&first, "started r1-8"), None);
    }

    /// A line counts once it is whole, and once: a tail that re-read the file, or counted a
    /// half-written line, would trigger the stop early.
    #[tokio::test]
    async fn lines_are_counted_once_each_as_they_are_completed() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("stdout.log");
        let (tx, mut rx) = tokio::sync::watch::channel(OutputCount::default());
        let task = tokio::spawn(count_lines(
            vec![log.clone(), dir.path().join("absent.log")],
            Regex::new(r"done (?<key>\S+)").unwrap(),
            "r1".to_owned(),
            tx,
        ));
        use std::io::Write;
        let mut file = std::fs::File::create(&log).unwrap();
        // Another run's key, then a half line.
        write!(file, "done r0-1\ndone r1-1\ndone r1-").unwrap();
        file.flush().unwrap();
        let first = tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|c| c.total >= 1))
            .await
            .unwrap()
            .unwrap()
            .to_owned();
        assert_eq!(
            first,
            OutputCount {
                distinct: 1,
                total: 1
            }
        );
        // The half line ends; r1-1 is seen again (a redelivery): one more, not distinct.
        write!(file, "2\ndone r1-1\n").unwrap();
        file.flush().unwrap();
        let last = tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|c| c.total >= 3))
            .await
            .unwrap()
            .unwrap()
            .to_owned();
        assert_eq!(
            last,
            OutputCount {
                distinct: 2,
                total: 3
            }
        );
        task.abort();
    }
}
