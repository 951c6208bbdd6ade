//! One registry of transfers in flight: every upload and download reports
//! here, and the sidecar's `/store/progress` reads it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
pub struct Progress {
    inner: Arc<Mutex<HashMap<String, (u64, u64)>>>,
}

impl Progress {
    pub fn start(&self, path: &str, total: u64) {
        self.lock().insert(path.to_string(), (0, total));
    }

    /// Counts bytes moved; short of the total until `finish`, since a
    /// transfer is done only when its commit is (a reader polling for 1.0
    /// must find the file there).
    pub fn advance(&self, path: &str, bytes: u64) {
        if let Some(e) = self.lock().get_mut(path) {
            e.0 = (e.0 + bytes).min(e.1.saturating_sub(1));
        }
    }

    pub fn finish(&self, path: &str) {
        if let Some(e) = self.lock().get_mut(path) {
            e.0 = e.1;
        }
    }

    /// Fraction done of each transfer (1.0 for an empty one).
    pub fn snapshot(&self) -> HashMap<String, f64> {
        self.lock()
            .iter()
            .map(|(k, &(done, total))| {
                (
                    k.clone(),
                    if total == 0 {
                        1.0
                    } else {
                        done as f64 / total as f64
                    },
                )
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, u64)>> {
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
}
