//! HTTP client for providers' shard routes.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::StatusCode;

use crate::grant::GRANT_HEADER;
use crate::proto::{ProviderInfo, ShardReport};

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("provider {provider} answered {status}: {body}")]
    Status {
        provider: String,
        status: StatusCode,
        body: String,
    },
    #[error("provider {provider} unreachable: {source}")]
    Transport {
        provider: String,
        source: reqwest::Error,
    },
    #[error("shard {sha1} from provider {provider} is corrupt")]
    Corrupt { provider: String, sha1: String },
}

/// A request that moves no byte for this long has failed: a stalled
/// provider is given up on in seconds, whatever the shard's size.
pub const STALL: Duration = Duration::from_secs(5);
/// How long a provider that failed or stalled is tried last.
const SUSPECT_FOR: Duration = Duration::from_secs(30);
/// Bounds of the hedging delay: a request that moved no byte for it has
/// stalled. Above a busy machine's scheduling hiccups, so a provider that
/// is merely slow is not hedged onto parity shards.
const HEDGE_MIN: Duration = Duration::from_millis(300);
const HEDGE_MAX: Duration = Duration::from_millis(1500);

/// Talks to providers. Cheap to clone; shares one connection pool and one
/// memory of the providers that recently failed or stalled.
#[derive(Clone)]
pub struct ShardClient {
    http: reqwest::Client,
    suspects: Arc<Mutex<HashMap<String, Instant>>>,
    /// Moving average of a shard GET's time, in microseconds.
    typical_get_us: Arc<AtomicU64>,
    /// Copies a read found missing or corrupt, for the metadata server.
    routed_around: Arc<Mutex<Vec<ShardReport>>>,
    /// Providers being probed (`probe`), each once at a time.
    probing: Arc<Mutex<HashSet<String>>>,
}

/// When a request last moved bytes (or started): readers hedge a request
/// that stalled, not one that is merely slow.
pub struct Moved(Mutex<Instant>);

impl Default for Moved {
    fn default() -> Self {
        Moved(Mutex::new(Instant::now()))
    }
}

impl Moved {
    fn touch(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// How long since bytes last moved.
    pub fn idle(&self) -> Duration {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).elapsed()
    }
}

/// Reports waiting at most: a reader never holds more than this many.
const MAX_REPORTS: usize = 1024;

impl ShardClient {
    /// `timeout` bounds each request as a whole; a request without progress
    /// for `STALL` fails sooner.
    pub fn new(timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .read_timeout(STALL)
            .connect_timeout(Duration::from_secs(3))
            .pool_max_idle_per_host(16)
            .build()
            .expect("HTTP client builds");
        ShardClient {
            http,
            suspects: Arc::default(),
            typical_get_us: Arc::new(AtomicU64::new(20_000)),
            routed_around: Arc::default(),
            probing: Arc::default(),
        }
    }

    /// Notes that provider `provider` served shard `sha1` missing, short or
    /// corrupt, so the metadata server can check it and repair it.
    pub fn routed_around(&self, sha1: &str, provider: &str) {
        let mut r = self.routed_around.lock().unwrap_or_else(|e| e.into_inner());
        let report = ShardReport {
            sha1: sha1.to_string(),
            provider: provider.to_string(),
        };
        if r.len() < MAX_REPORTS && !r.contains(&report) {
            r.push(report);
        }
    }

    /// The copies noted since the last call.
    pub fn take_routed_around(&self) -> Vec<ShardReport> {
        std::mem::take(&mut *self.routed_around.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// How long a read waits for a shard before asking another provider
    /// alongside: a few times a typical shard's time, so a stopped provider
    /// costs a reader a fraction of a second, not the request timeout.
    pub fn hedge_after(&self) -> Duration {
        let typical = self.typical_get_us.load(Ordering::Relaxed);
        Duration::from_micros(typical.saturating_mul(4)).clamp(HEDGE_MIN, HEDGE_MAX)
    }

    fn observe_get(&self, took: Duration) {
        let us = took.as_micros().min(u64::MAX as u128) as u64;
        // An exponential moving average, 1/8 weight for the new sample.
        let _ = self
            .typical_get_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(old - old / 8 + us / 8)
            });
    }

    /// Asks provider `p` for its health in the background, once at a time:
    /// a request to it stalled. It is asked last meanwhile, and becomes a
    /// suspect only if it fails or stalls (`STALL`) here too.
    pub fn probe(&self, p: &ProviderInfo) {
        let fresh = self
            .probing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(p.id.clone());
        if !fresh {
            return;
        }
        let (client, p) = (self.clone(), p.clone());
        tokio::spawn(async move {
            let req = client.http.get(format!("{}/health", p.url));
            if let Ok(r) = client.send(&p, req).await {
                // Its body, too, must come within STALL.
                if r.bytes().await.is_err() {
                    client.suspect(&p.id);
                }
            }
            let mut probing = client.probing.lock().unwrap_or_else(|e| e.into_inner());
            probing.remove(&p.id);
        });
    }

    /// Remembers that provider `id` failed or stalled.
    pub fn suspect(&self, id: &str) {
        let mut s = self.suspects.lock().unwrap_or_else(|e| e.into_inner());
        s.insert(id.to_string(), Instant::now());
    }

    /// Whether provider `id` failed or stalled recently, or is being
    /// probed after a request of its stalled: either way, best asked last.
    pub fn is_suspect(&self, id: &str) -> bool {
        let s = self.suspects.lock().unwrap_or_else(|e| e.into_inner());
        s.get(id).is_some_and(|at| at.elapsed() < SUSPECT_FOR)
            || self
                .probing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(id)
    }

    /// Providers that failed or stalled recently.
    pub fn suspects(&self) -> Vec<String> {
        let s = self.suspects.lock().unwrap_or_else(|e| e.into_inner());
        s.iter()
            .filter(|(_, at)| at.elapsed() < SUSPECT_FOR)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Sends a request to `p`; a provider that cannot be reached, stalls or
    /// fails on its side becomes a suspect.
    async fn send(
        &self,
        p: &ProviderInfo,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ShardError> {
        let result = match req.send().await {
            Ok(r) => Self::status(p, r).await,
            Err(e) => Err(Self::transport(p)(e)),
        };
        if let Err(ShardError::Transport { .. }) = &result {
            self.suspect(&p.id);
        }
        if let Err(ShardError::Status { status, .. }) = &result {
            if status.is_server_error() {
                self.suspect(&p.id);
            }
        }
        result
    }

    fn url(p: &ProviderInfo, sha1: &str) -> String {
        format!("{}/shards/{sha1}", p.url)
    }

    fn transport(p: &ProviderInfo) -> impl FnOnce(reqwest::Error) -> ShardError + '_ {
        move |source| ShardError::Transport {
            provider: p.id.clone(),
            source,
        }
    }

    async fn status(
        p: &ProviderInfo,
        r: reqwest::Response,
    ) -> Result<reqwest::Response, ShardError> {
        if r.status().is_success() {
            return Ok(r);
        }
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        Err(ShardError::Status {
            provider: p.id.clone(),
            status,
            body,
        })
    }

    /// Stores a shard; returns the provider's signed receipt.
    pub async fn put(
        &self,
        p: &ProviderInfo,
        sha1: &str,
        grant: &str,
        data: Bytes,
    ) -> Result<String, ShardError> {
        let req = self
            .http
            .put(Self::url(p, sha1))
            .header(GRANT_HEADER, grant)
            .body(data);
        let stored: crate::proto::ShardStored = self
            .send(p, req)
            .await?
            .json()
            .await
            .map_err(Self::transport(p))?;
        Ok(stored.receipt)
    }

    /// Fetches a shard. With `verify`, its hash is checked and a corrupt
    /// shard is an error, never data; without, the caller authenticates the
    /// bytes otherwise (an encrypted partition's GCM tag).
    pub async fn get(
        &self,
        p: &ProviderInfo,
        sha1: &str,
        grant: &str,
        verify: bool,
    ) -> Result<Bytes, ShardError> {
        let (moved, started) = (Moved::default(), Instant::now());
        let r = self.ask(p, sha1, grant, &moved).await?;
        // A shard is a few MiB at most: its announced length is trusted
        // that far only.
        let mut data = vec![0; r.content_length().unwrap_or(0).min(64 << 20) as usize];
        let n = self.receive(p, sha1, r, verify, &moved, &mut data).await?;
        self.observe_get(started.elapsed());
        data.truncate(n);
        Ok(data.into())
    }

    /// `get` into `dst`, which the shard is expected to fill: its length in
    /// bytes. Each time bytes arrive `moved` is touched; the body is copied
    /// once, from the connection's buffers into `dst`. A body longer than
    /// `dst` is not the shard asked for: corrupt.
    pub async fn get_into(
        &self,
        p: &ProviderInfo,
        sha1: &str,
        grant: &str,
        verify: bool,
        moved: &Moved,
        dst: &mut [u8],
    ) -> Result<usize, ShardError> {
        let started = Instant::now();
        let r = self.ask(p, sha1, grant, moved).await?;
        let n = self.receive(p, sha1, r, verify, moved, dst).await?;
        self.observe_get(started.elapsed());
        Ok(n)
    }

    async fn ask(
        &self,
        p: &ProviderInfo,
        sha1: &str,
        grant: &str,
        moved: &Moved,
    ) -> Result<reqwest::Response, ShardError> {
        moved.touch();
        let req = self
            .http
            .get(Self::url(p, sha1))
            .header(GRANT_HEADER, grant);
        let r = self.send(p, req).await?;
        moved.touch();
        Ok(r)
    }

    async fn receive(
        &self,
        p: &ProviderInfo,
        sha1: &str,
        mut r: reqwest::Response,
        verify: bool,
        moved: &Moved,
        dst: &mut [u8],
    ) -> Result<usize, ShardError> {
        let corrupt = || ShardError::Corrupt {
            provider: p.id.clone(),
            sha1: sha1.to_string(),
        };
        let mut n = 0;
        loop {
            match r.chunk().await {
                Ok(Some(chunk)) => {
                    moved.touch();
                    let to = dst.get_mut(n..n + chunk.len()).ok_or_else(corrupt)?;
                    to.copy_from_slice(&chunk);
                    n += chunk.len();
                }
                Ok(None) => break,
                Err(e) => {
                    self.suspect(&p.id);
                    return Err(Self::transport(p)(e));
                }
            }
        }
        if verify && !crate::codec::shard_matches(sha1, &dst[..n]) {
            return Err(corrupt());
        }
        Ok(n)
    }

    pub async fn delete(
        &self,
        p: &ProviderInfo,
        sha1: &str,
        grant: &str,
    ) -> Result<(), ShardError> {
        let req = self
            .http
            .delete(Self::url(p, sha1))
            .header(GRANT_HEADER, grant);
        self.send(p, req).await.map(drop)
    }
}
