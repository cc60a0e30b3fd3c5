//! A progress line on stderr while a scan works, for the person waiting in a
//! recovery shell on a slow disk.
//!
//! Shown only when stderr is a terminal, output is not quiet, and the scan has
//! taken longer than a moment (300 ms; `KFD_AUDIT_PROGRESS_AFTER_MS` changes it),
//! so that quick scans, pipes and logs see nothing. One line redrawn in place with
//! `\r` and padded with spaces (no escape sequences, so `TERM=dumb` works too), and
//! erased before the report is printed.
//!
//! Written here rather than taken from `indicatif`: one line of counters is all
//! that is needed, and the scan's hot loop only bumps two atomics.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the scan has done so far. Updated from every hashing thread.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Files listed by the walk so far.
    found: AtomicU64,
    /// Whether a tree has been listed and hashing has begun.
    hashing: AtomicBool,
    /// Files and bytes there are to hash (known once a tree has been listed).
    total_files: AtomicU64,
    total_bytes: AtomicU64,
    files: AtomicU64,
    bytes: AtomicU64,
}

impl Counters {
    pub(crate) fn found(&self, n: u64) {
        self.found.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn add_total(&self, files: u64, bytes: u64) {
        self.hashing.store(true, Ordering::Relaxed);
        self.total_files.fetch_add(files, Ordering::Relaxed);
        self.total_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn file_done(&self) {
        self.files.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn files(&self) -> u64 {
        self.files.load(Ordering::Relaxed)
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The line to show, given the time since the scan started.
    pub(crate) fn line(&self, elapsed: Duration) -> String {
        if !self.hashing.load(Ordering::Relaxed) {
            return format!(
                "kfd-audit: listing files... {} found",
                self.found.load(Ordering::Relaxed)
            );
        }
        let bytes = self.bytes();
        let secs = elapsed.as_secs_f64().max(0.001);
        format!(
            "kfd-audit: hashing {}/{} files, {} of {}, {}/s",
            self.files(),
            self.total_files.load(Ordering::Relaxed),
            megabytes(bytes),
            megabytes(self.total_bytes.load(Ordering::Relaxed)),
            megabytes((bytes as f64 / secs) as u64),
        )
    }
}

fn megabytes(bytes: u64) -> String {
    if bytes >= 10_000_000_000 {
        format!("{:.1} GB", bytes as f64 / 1e9)
    } else {
        format!("{} MB", bytes / 1_000_000)
    }
}

/// The delay before the line appears: `KFD_AUDIT_PROGRESS_AFTER_MS`, else 300 ms.
pub(crate) fn delay() -> Duration {
    std::env::var("KFD_AUDIT_PROGRESS_AFTER_MS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .map_or(Duration::from_millis(300), Duration::from_millis)
}

/// How often the line is redrawn.
const REDRAW: Duration = Duration::from_millis(120);

/// The progress line while it is shown; [`Display::finish`] (or dropping it) erases it.
pub(crate) struct Display {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Display {
    /// Starts showing `counters` on stderr after [`delay`], if stderr is a terminal
    /// and `quiet` is off; `None` otherwise.
    pub(crate) fn start(counters: Arc<Counters>, quiet: bool) -> Option<Display> {
        if quiet || !std::io::stderr().is_terminal() {
            return None;
        }
        let after = delay();
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                let start = Instant::now();
                if stopped.recv_timeout(after) != Err(mpsc::RecvTimeoutError::Timeout) {
                    return;
                }
                let mut width: usize = 0;
                let draw = |width: &mut usize| {
                    let line = counters.line(start.elapsed());
                    let mut err = std::io::stderr().lock();
                    // Spaces erase what a longer previous line left.
                    let pad = width.saturating_sub(line.len());
                    let _ = write!(err, "\r{line}{:pad$}", "");
                    let _ = err.flush();
                    *width = line.len();
                };
                loop {
                    draw(&mut width);
                    if stopped.recv_timeout(REDRAW) != Err(mpsc::RecvTimeoutError::Timeout) {
                        break;
                    }
                }
                // The final counts, then a clean line for what follows.
                draw(&mut width);
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r{:width$}\r", "");
                let _ = err.flush();
            })
            .ok()?;
        Some(Display {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    fn stop_now(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        self.stop_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let c = Counters::default();
        c.found(120);
        assert_eq!(
            c.line(Duration::from_secs(1)),
            "kfd-audit: listing files... 120 found"
        );
        c.add_total(2539, 517_399_134);
        c.add_bytes(250_000_000);
        for _ in 0..1000 {
            c.file_done();
        }
        assert_eq!(
            c.line(Duration::from_millis(500)),
            "kfd-audit: hashing 1000/2539 files, 250 MB of 517 MB, 500 MB/s"
        );
    }
}
