//! One registry of transfers in flight: every upload and download reports
//! here, and the sidecar's `/store/progress` reads it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A transfer: bytes moved, bytes in all, and the highest fraction shown
/// (a transfer that grows as it goes shows no step back).
#[derive(Clone, Copy, Default)]
struct Entry {
    done: u64,
    total: u64,
    shown: f64,
}

impl Entry {
    fn finished(&self) -> bool {
        self.done == self.total
    }
}

#[derive(Clone, Default)]
pub struct Progress {
    inner: Arc<Mutex<HashMap<String, Entry>>>,
}

impl Progress {
    pub fn start(&self, path: &str, total: u64) {
        let entry = Entry {
            total,
            ..Entry::default()
        };
        self.lock().insert(path.to_string(), entry);
    }

    /// Adds `bytes` to a transfer whose size is known only as it goes (a
    /// file written on the mount, uploaded partition by partition); a
    /// finished one (or none) starts over.
    pub fn grow(&self, path: &str, bytes: u64) {
        let mut all = self.lock();
        let e = all.entry(path.to_string()).or_default();
        if e.finished() {
            *e = Entry::default();
        }
        e.total += bytes;
    }

    /// Counts bytes moved; short of the total until `finish`, since a
    /// transfer is done only when its commit is (a reader polling for 1.0
    /// must find the file there).
    pub fn advance(&self, path: &str, bytes: u64) {
        if let Some(e) = self.lock().get_mut(path) {
            e.done = (e.done + bytes).min(e.total.saturating_sub(1));
        }
    }

    pub fn finish(&self, path: &str) {
        if let Some(e) = self.lock().get_mut(path) {
            e.done = e.total;
        }
    }

    /// Fraction done of each transfer (1.0 for an empty one), never below
    /// what it showed before.
    pub fn snapshot(&self) -> HashMap<String, f64> {
        self.lock()
            .iter_mut()
            .map(|(k, e)| {
                let now = if e.total == 0 {
                    1.0
                } else {
                    e.done as f64 / e.total as f64
                };
                e.shown = e.shown.max(now);
                (k.clone(), e.shown)
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::Progress;

    #[test]
    fn only_finish_reports_a_transfer_whole() {
        let p = Progress::default();
        p.start("f", 100);
        p.advance("f", 60);
        assert_eq!(p.snapshot()["f"], 0.6);
        p.advance("f", 60);
        assert!(
            p.snapshot()["f"] < 1.0,
            "all bytes moved, not yet committed"
        );
        p.finish("f");
        assert_eq!(p.snapshot()["f"], 1.0);
    }

    #[test]
    fn a_growing_transfer_never_shows_a_step_back_and_starts_over_once_finished() {
        let p = Progress::default();
        p.grow("f", 100);
        p.advance("f", 50);
        assert_eq!(p.snapshot()["f"], 0.5);
        p.grow("f", 100);
        assert_eq!(p.snapshot()["f"], 0.5, "50 of 200, shown as before");
        p.advance("f", 100);
        assert_eq!(p.snapshot()["f"], 0.75);
        p.finish("f");
        assert_eq!(p.snapshot()["f"], 1.0);
        p.grow("f", 10);
        assert_eq!(p.snapshot()["f"], 0.0, "a new transfer of the same file");
    }
}
