//! Is the target ready? A log line, an HTTP 200, or a TCP connection, polled until a deadline.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::scenario::ReadyProbe;

/// One attempt's budget.
const ATTEMPT: Duration = Duration::from_secs(2);
/// The longest pause between two looks: the time to ready is measured to within it.
const POLL_AT_MOST: Duration = Duration::from_millis(20);

/// Checks the probe once. `logs` are the target's output files.
pub async fn probe_once(
    probe: &ReadyProbe,
    pattern: Option<&regex::Regex>,
    logs: &[&Path],
) -> bool {
    match probe {
        ReadyProbe::Started(_) => true,
        ReadyProbe::Log(_) => {
            let Some(pattern) = pattern else { return false };
            logs.iter().any(|log| {
                std::fs::read(log)
                    .map(|bytes| {
                        String::from_utf8_lossy(&bytes)
                            .lines()
                            .any(|l| pattern.is_match(l))
                    })
                    .unwrap_or(false)
            })
        }
        ReadyProbe::Tcp(addr) => {
            matches!(
                tokio::time::timeout(ATTEMPT, TcpStream::connect(addr.as_str())).await,
                Ok(Ok(_))
            )
        }
        ReadyProbe::Http(url) => matches!(http_status(url).await, Some(200)),
    }
}

/// GETs `url` (http only) and returns the status code.
pub async fn http_status(url: &str) -> Option<u16> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let attempt = async {
        let mut stream = TcpStream::connect(authority).await.ok()?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 64];
        let mut len = 0;
        while len < head.len() {
            let n = stream.read(&mut head[len..]).await.ok()?;
            if n == 0 {
                break;
            }
            len += n;
            if head[..len].contains(&b'\n') {
                break;
            }
        }
        let line = String::from_utf8_lossy(&head[..len]).into_owned();
        line.split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(ATTEMPT, attempt).await.ok().flatten()
}

/// Polls `probe` until it holds (`true`), `stop` returns true, or `timeout` passes (`false`).
pub async fn wait_ready(
    probe: &ReadyProbe,
    logs: &[&Path],
    timeout: Duration,
    mut stop: impl FnMut() -> bool,
) -> bool {
    let pattern = match probe {
        ReadyProbe::Log(p) => regex::Regex::new(p).ok(),
        _ => None,
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if probe_once(probe, pattern.as_ref(), logs).await {
            return true;
        }
        if stop() || tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(pause.min(deadline - tokio::time::Instant::now())).await;
        pause = (pause * 2).min(POLL_AT_MOST);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn http_probe_reads_the_status() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for status in ["503 Service Unavailable", "200 OK"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let url = format!("http://{addr}/ready");
        assert_eq!(http_status(&url).await, Some(503));
        assert_eq!(http_status(&url).await, Some(200));
        assert_eq!(http_status("https://x").await, None);
    }

    #[tokio::test]
    async fn log_probe_matches_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("out.log");
        std::fs::write(&log, "booting\nlistening on 8080\n").unwrap();
        let yes = ReadyProbe::Log("^listening on \\d+$".into());
        assert!(wait_ready(&yes, &[&log], Duration::from_secs(5), || false).await);
        let no = ReadyProbe::Log("^ready$".into());
        assert!(!wait_ready(&no, &[&log], Duration::from_millis(50), || false).await);
    }
}
