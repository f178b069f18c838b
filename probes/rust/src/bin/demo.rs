//! A small tokio service that uses the probe, with the lifecycle bugs of the seeds as variants
//! (QUIESCE_VARIANT):
//!
//! - `correct`: one shutdown token, every task tracked, the sampler thread joined.
//! - `untracked-task`: a fire-and-forget task per "batch" that nobody cancels (seed 001).
//! - `sampler-thread`: a raw std::thread sampler that is never stopped or joined (seed 000).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let probe = quiesce_probe::Probe::start();
    let variant = std::env::var("QUIESCE_VARIANT").unwrap_or_else(|_| "correct".into());
    if !["correct", "untracked-task", "sampler-thread"].contains(&variant.as_str()) {
        eprintln!("unknown QUIESCE_VARIANT {variant:?}");
        std::process::exit(2);
    }
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let stop = Arc::new(AtomicBool::new(false));

    let worker = tokio::spawn({
        let stop = stop.clone();
        async move {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if variant == "untracked-task" {
                    // Fire and forget: the handle is dropped, the task lives on.
                    drop(tokio::spawn(async {
                        tokio::time::sleep(Duration::from_secs(3600)).await
                    }));
                }
            }
        }
    });
    let sampler = {
        let stop = stop.clone();
        let joinable = std::env::var("QUIESCE_VARIANT").as_deref() != Ok("sampler-thread");
        let handle = std::thread::Builder::new()
            .name("rss-sampler".into())
            .spawn(move || {
                // The broken variant never looks at the stop flag.
                while !(joinable && stop.load(Ordering::Relaxed)) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
            .expect("sampler thread");
        joinable.then_some(handle)
    };

    println!("ready");
    term.recv().await;
    stop.store(true, Ordering::Relaxed);
    let _ = worker.await;
    if let Some(sampler) = sampler {
        let _ = sampler.join();
    }
    probe.report().await;
}
