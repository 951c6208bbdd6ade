//! Scrub: every `interval` the provider hashes each shard file again at a
//! bounded rate; a file whose SHA-1 is not its name (bit rot, truncation)
//! moves to `DIR/quarantine/` and is reported, signed with the provider's
//! key, to the metadata server, whose repair rebuilds it elsewhere. Files
//! deleted from the disk are found by the metadata server's verifier.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::Provider;
use crate::grant::{self, now_ms, now_secs};
use crate::meta::repair::Pacer;
use crate::proto::{ScrubHealth, ScrubReport};

/// Scrub counters for `/health`.
#[derive(Debug, Default)]
pub struct ScrubState {
    checked: AtomicU64,
    bad_found: AtomicU64,
    passes: AtomicU64,
    last_pass: AtomicU64,
    last_pass_bytes: AtomicU64,
    last_pass_ms: AtomicU64,
    running: AtomicBool,
}

impl ScrubState {
    pub fn health(&self) -> ScrubHealth {
        ScrubHealth {
            checked: self.checked.load(Ordering::Relaxed),
            bad_found: self.bad_found.load(Ordering::Relaxed),
            passes: self.passes.load(Ordering::Relaxed),
            last_pass: self.last_pass.load(Ordering::Relaxed),
            last_pass_bytes: self.last_pass_bytes.load(Ordering::Relaxed),
            last_pass_ms: self.last_pass_ms.load(Ordering::Relaxed),
            running: self.running.load(Ordering::Relaxed),
        }
    }
}

/// Scrub's figures as metrics (`labels`: the provider's).
pub fn record(h: &ScrubHealth, labels: Vec<metrics::Label>) {
    metrics::counter!(crate::metrics::SCRUB_PASSES, labels.clone()).absolute(h.passes);
    metrics::counter!(crate::metrics::SCRUB_BAD, labels.clone()).absolute(h.bad_found);
    metrics::gauge!(crate::metrics::SCRUB_CHECKED, labels.clone()).set(h.checked as f64);
    metrics::gauge!(crate::metrics::SCRUB_RUNNING, labels.clone()).set(u8::from(h.running));
    metrics::gauge!(crate::metrics::SCRUB_LAST_PASS_TIME, labels.clone()).set(h.last_pass as f64);
    metrics::gauge!(crate::metrics::SCRUB_LAST_PASS_BYTES, labels.clone())
        .set(h.last_pass_bytes as f64);
    metrics::gauge!(crate::metrics::SCRUB_LAST_PASS_SECONDS, labels)
        .set(h.last_pass_ms as f64 / 1000.0);
}

async fn report(http: &reqwest::Client, meta: &str, p: &Provider, r: ScrubReport) {
    let token = grant::sign(&r, &p.key);
    if let Err(e) = http
        .post(format!("{meta}/api/providers/report"))
        .body(token)
        .send()
        .await
        .and_then(|r| r.error_for_status())
    {
        tracing::warn!(error = %e, "scrub report failed");
    }
}

/// One pass over every shard: returns (checked, bad).
async fn pass(http: &reqwest::Client, meta: &str, p: &Provider, pacer: &Pacer) -> (u64, u64) {
    let s = &p.scrub;
    s.running.store(true, Ordering::Relaxed);
    s.checked.store(0, Ordering::Relaxed);
    let names = match p.store.shard_names() {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "scrub cannot list shards");
            Vec::new()
        }
    };
    let (mut checked, mut bad) = (0, 0);
    let (started, bytes) = (std::time::Instant::now(), AtomicU64::new(0));
    for sha1 in names {
        let hashed = p
            .store
            .hash_file(&sha1, |n| {
                bytes.fetch_add(n, Ordering::Relaxed);
                pacer.pace(n)
            })
            .await;
        match hashed {
            Ok(Some(h)) if h == sha1 => {}
            Ok(None) => continue,
            Ok(Some(_)) | Err(_) => match p.store.quarantine(&sha1).await {
                Ok(true) => {
                    tracing::warn!(shard = %sha1, "scrub: shard fails its hash; quarantined");
                    bad += 1;
                    s.bad_found.fetch_add(1, Ordering::Relaxed);
                    let r = ScrubReport {
                        id: p.id.clone(),
                        ts_ms: now_ms(),
                        bad: vec![sha1.clone()],
                        ..Default::default()
                    };
                    report(http, meta, p, r).await;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(shard = %sha1, error = %e, "scrub: quarantine failed"),
            },
        }
        checked += 1;
        s.checked.store(checked, Ordering::Relaxed);
    }
    s.running.store(false, Ordering::Relaxed);
    s.passes.fetch_add(1, Ordering::Relaxed);
    s.last_pass.store(now_secs(), Ordering::Relaxed);
    s.last_pass_bytes
        .store(bytes.load(Ordering::Relaxed), Ordering::Relaxed);
    s.last_pass_ms
        .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
    let r = ScrubReport {
        id: p.id.clone(),
        ts_ms: now_ms(),
        bad: Vec::new(),
        pass_checked: Some(checked),
        pass_bad: bad,
    };
    report(http, meta, p, r).await;
    (checked, bad)
}

/// A pass every `interval` (after the first wait), at most `rate` bytes a
/// second (0: unbounded), forever.
pub async fn run(
    http: reqwest::Client,
    meta: String,
    p: Arc<Provider>,
    rate: u64,
    interval: Duration,
) {
    let pacer = Arc::new(Pacer::new(rate));
    loop {
        tokio::time::sleep(interval).await;
        // In its own task: a panic costs one pass, never the provider.
        let (http, meta, p, pacer) = (http.clone(), meta.clone(), p.clone(), pacer.clone());
        let run = tokio::spawn(async move {
            let started = std::time::Instant::now();
            let (checked, bad) = pass(&http, &meta, &p, &pacer).await;
            tracing::info!(
                checked,
                bad,
                secs = started.elapsed().as_secs_f64(),
                "scrub pass done"
            );
        });
        if let Err(e) = run.await {
            tracing::error!(error = %e, "scrub pass panicked");
        }
    }
}
