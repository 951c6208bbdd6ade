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

    pub fn advance(&self, path: &str, bytes: u64) {
        if let Some(e) = self.lock().get_mut(path) {
            e.0 = (e.0 + bytes).min(e.1);
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
