//! Ctrl-C and SIGTERM as a stream of events, so that every long wait in the CLI can also end
//! on a signal, and tests can use a handler that never fires.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// A signal the harness acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalEvent {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM (a CI runner cancelling the job).
    Terminate,
}

/// Receives [`SignalEvent`]s.
pub struct SignalHandler {
    streams: Option<(Signal, Signal)>,
    /// Events another handler passes on (see [`SignalHandler::relay`]).
    relayed: Option<tokio::sync::watch::Receiver<SignalEvent>>,
}

impl SignalHandler {
    /// Listens for SIGINT and SIGTERM. Once created, these signals no longer end the process
    /// by default: the caller must act on them.
    pub fn new() -> std::io::Result<Self> {
        Ok(SignalHandler {
            streams: Some((
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
            )),
            relayed: None,
        })
    }

    /// A handler that never fires.
    pub fn noop() -> Self {
        SignalHandler {
            streams: None,
            relayed: None,
        }
    }

    /// A handler that yields each event sent on `events` after it was made: how one handler's
    /// Ctrl-C reaches each of several runs that go on at once.
    pub fn relay(events: &tokio::sync::watch::Sender<SignalEvent>) -> Self {
        SignalHandler {
            streams: None,
            relayed: Some(events.subscribe()),
        }
    }

    /// The next signal; pending forever for a no-op handler.
    pub async fn recv(&mut self) -> SignalEvent {
        if let Some(rx) = &mut self.relayed {
            return match rx.changed().await {
                Ok(()) => *rx.borrow_and_update(),
                Err(_) => std::future::pending().await,
            };
        }
        match &mut self.streams {
            Some((int, term)) => tokio::select! {
                Some(()) = int.recv() => SignalEvent::Interrupt,
                Some(()) = term.recv() => SignalEvent::Terminate,
                else => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }
}
