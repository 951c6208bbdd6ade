//! Repair, on ciphertext shards and without any key. A shard copy is lost
//! when its provider has been silent past `repair_after`, is draining or
//! retired, or when the copy was found missing or corrupt (a provider's
//! scrub, a reader's report checked here, or the verifier's HEAD). The
//! worker takes partitions holding lost copies, most at risk first; for an
//! erasure-coded partition it copies a lost shard still readable (on a
//! draining provider), or else fetches k readable shards (checking their
//! SHA-1), decodes and encodes again with the partition's own k+m, and
//! stores each shard that has no kept copy on a provider holding no shard
//! of that partition; a replicated object gets copies of a readable
//! replica until it has its replica count again. Placement switches in one
//! transaction, on receipts only; the lost copies leave the layout and
//! become garbage, deleted when their provider answers again, so a
//! provider that comes back never serves them as current.
//!
//! The verifier HEADs placed copies at a bounded rate, round-robin over the
//! whole store: it finds shard files deleted or truncated on a provider's
//! disk, which that provider's scrub (which hashes the files it has) cannot.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;

use super::api::{new_session_id, proven_providers};
use super::placement::choose;
use super::store::{CopyRow, Horizons, PartitionHealth};
use super::{Meta, MetaError, MetaResult};
use crate::client::provider::ShardError;
use crate::codec::erasure::Scheme;
use crate::grant::{now_secs, Op};
use crate::proto::{ProviderInfo, StoredShard};
use crate::transfer::{put_shards, PutOutcome, ShardJob};

/// Partitions taken per round.
const BATCH: usize = 256;

/// Bounds repair bandwidth: each transfer takes the next slot of the
/// rate, so the bytes moved never run ahead of it (no credit for idle time).
pub struct Pacer {
    next: std::sync::Mutex<Instant>,
    /// Bytes per second; 0 for unbounded.
    rate: u64,
}

impl Pacer {
    pub fn new(rate: u64) -> Self {
        Pacer {
            next: std::sync::Mutex::new(Instant::now()),
            rate,
        }
    }

    pub async fn pace(&self, bytes: u64) {
        if self.rate == 0 {
            return;
        }
        let due = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let due = (*next).max(Instant::now())
                + Duration::from_secs_f64(bytes as f64 / self.rate as f64);
            *next = due;
            due
        };
        tokio::time::sleep_until(due.into()).await;
    }
}

/// What repair has done since the server started.
#[derive(Debug)]
pub struct RepairStats {
    /// When the server started (Unix seconds).
    started: u64,
    /// Shards (or replica copies) stored by repair.
    pub shards: AtomicU64,
    pub bytes: AtomicU64,
    pub failures: AtomicU64,
    /// The last round that stored anything: its bytes and milliseconds.
    pub round_bytes: AtomicU64,
    pub round_ms: AtomicU64,
    /// Verifier's place in the shards table (rowid).
    cursor: AtomicI64,
}

impl Default for RepairStats {
    fn default() -> Self {
        RepairStats {
            started: now_secs(),
            shards: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            round_bytes: AtomicU64::new(0),
            round_ms: AtomicU64::new(0),
            cursor: AtomicI64::new(0),
        }
    }
}

impl Meta {
    /// How copies are classified now. Until this server has been up for
    /// two provider timeouts, silence loses nothing: after a long outage of
    /// the metadata server every provider looks silent until it beats.
    pub(super) fn horizons(&self) -> Horizons {
        let now = now_secs() as i64;
        let timeout = self.cfg.provider_timeout.as_secs() as i64;
        let up = now - self.repair_stats.started as i64;
        Horizons {
            alive_since: now - timeout,
            lost_before: if up < 2 * timeout {
                0
            } else {
                now - self.cfg.repair_after.as_secs() as i64
            },
        }
    }

    /// The last round that stored anything: (bytes, milliseconds).
    pub(super) fn last_round(&self) -> (u64, u64) {
        (
            self.repair_stats.round_bytes.load(Ordering::Relaxed),
            self.repair_stats.round_ms.load(Ordering::Relaxed),
        )
    }

    /// Shards and bytes repair stored since the server started.
    pub(super) fn repaired(&self) -> (u64, u64) {
        (
            self.repair_stats.shards.load(Ordering::Relaxed),
            self.repair_stats.bytes.load(Ordering::Relaxed),
        )
    }

    /// One repair round: returns the partitions repaired.
    pub async fn repair_round(&self, pacer: &Pacer) -> MetaResult<usize> {
        let todo =
            self.store(|db| db.repair_candidates(self.horizons(), self.cfg.replicas, BATCH))?;
        let (started, bytes_before) = (Instant::now(), self.repaired().1);
        let done = futures::stream::iter(todo)
            .map(|p| async move {
                let (object, partition) = (p.object, p.partition);
                match self.repair_partition(&p, pacer).await {
                    Ok(()) => true,
                    Err(e) => {
                        self.repair_stats.failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(object, partition, error = %e, "repair failed; retried later");
                        let _ = self.store(|db| db.repair_failed(
                            object,
                            partition,
                            &e.to_string(),
                            self.cfg.repair_interval.as_secs(),
                        ));
                        false
                    }
                }
            })
            .buffer_unordered(self.cfg.repair_parallel.max(1))
            .filter(|ok| std::future::ready(*ok))
            .count()
            .await;
        let bytes = self.repaired().1 - bytes_before;
        if bytes > 0 {
            let st = &self.repair_stats;
            st.round_bytes.store(bytes, Ordering::Relaxed);
            st.round_ms
                .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
        for id in self.store(|db| db.retire_drained())? {
            tracing::info!(provider = %id, "drained: every shard moved off; retired");
        }
        Ok(done)
    }

    /// Fetches one copy, checking its hash; a copy that is missing or
    /// corrupt is recorded as bad.
    async fn fetch_copy(&self, c: &CopyRow, pacer: &Pacer) -> Option<Bytes> {
        let grant = self.sign(&self.grant(Op::Get, &c.provider, vec![c.sha1.clone()]));
        let p = ProviderInfo {
            id: c.provider.clone(),
            url: c.url.clone(),
        };
        match self.shards.get(&p, &c.sha1, &grant, true).await {
            Ok(data) => {
                pacer.pace(data.len() as u64).await;
                Some(data)
            }
            Err(ShardError::Corrupt { .. }) => {
                let _ =
                    self.store(|db| db.shard_bad(&c.sha1, &c.provider, "corrupt (repair read)"));
                None
            }
            Err(ShardError::Status { status, .. }) if status == reqwest::StatusCode::NOT_FOUND => {
                let _ =
                    self.store(|db| db.shard_bad(&c.sha1, &c.provider, "missing (repair read)"));
                None
            }
            Err(e) => {
                tracing::debug!(error = %e, "repair source failed");
                None
            }
        }
    }

    async fn repair_partition(&self, ph: &PartitionHealth, pacer: &Pacer) -> MetaResult<()> {
        let (size, copies) =
            self.store(|db| db.partition_copies(self.horizons(), ph.object, ph.partition))?;
        if copies.is_empty() {
            return Ok(());
        }
        // Shard index -> (sha1, size), and which indexes keep a copy.
        let mut shards: HashMap<usize, (String, u64)> = HashMap::new();
        let mut kept: HashMap<usize, usize> = HashMap::new();
        for c in &copies {
            shards.insert(c.index, (c.sha1.clone(), c.size));
            *kept.entry(c.index).or_default() += !c.lost as usize;
        }
        // What to store: (index, copies wanted).
        let want: Vec<(usize, usize)> = if ph.replicated {
            let have = kept.get(&0).copied().unwrap_or(0);
            vec![(0, self.cfg.replicas.saturating_sub(have))]
        } else {
            // (An index with no row at all, after `provider remove --force`,
            // has no recorded hash to check a rebuild against: left alone.)
            (0..ph.k + ph.m)
                .filter(|i| shards.contains_key(i) && kept.get(i).copied().unwrap_or(0) == 0)
                .map(|i| (i, 1))
                .collect()
        };
        let want: Vec<(usize, usize)> = want.into_iter().filter(|(_, n)| *n > 0).collect();
        let data = if want.is_empty() {
            HashMap::new()
        } else {
            self.rebuild(ph, size, &copies, &shards, &want, pacer)
                .await?
        };
        let session = format!("repair-{}", new_session_id());
        let added = if want.is_empty() {
            Ok(Vec::new())
        } else {
            self.store_rebuilt(&session, &copies, &data, &want, pacer)
                .await
        };
        let committed = match added {
            Ok(added) => self.commit_repair(ph, &copies, &kept, &want, added),
            Err(e) => Err(e),
        };
        // Whatever was stored and not placed becomes garbage.
        self.store(|db| db.session_end(&session))?;
        committed
    }

    fn commit_repair(
        &self,
        ph: &PartitionHealth,
        copies: &[CopyRow],
        kept: &HashMap<usize, usize>,
        want: &[(usize, usize)],
        added: Vec<(usize, String, u64, String)>,
    ) -> MetaResult<()> {
        // Lost copies leave the layout once their index keeps enough copies.
        let mut now_kept = kept.clone();
        for (i, ..) in &added {
            *now_kept.entry(*i).or_default() += 1;
        }
        let enough = |i: usize| {
            let n = now_kept.get(&i).copied().unwrap_or(0);
            if ph.replicated {
                n >= self.cfg.replicas
            } else {
                n >= 1
            }
        };
        let dropped: Vec<(usize, String)> = copies
            .iter()
            .filter(|c| c.lost && enough(c.index))
            .map(|c| (c.index, c.provider.clone()))
            .collect();
        let stored: u64 = added.iter().map(|a| a.2).sum();
        if !self.store(|db| db.repair_commit(ph.object, ph.partition, &added, &dropped))? {
            return Ok(());
        }
        self.repair_stats
            .shards
            .fetch_add(added.len() as u64, Ordering::Relaxed);
        self.repair_stats.bytes.fetch_add(stored, Ordering::Relaxed);
        tracing::info!(
            object = ph.object,
            partition = ph.partition,
            stored = added.len(),
            dropped = dropped.len(),
            "partition repaired"
        );
        let missing = want.iter().map(|w| w.1).sum::<usize>() - added.len();
        if missing > 0 {
            return Err(MetaError::Unavailable(format!(
                "{missing} shard copies could not be placed"
            )));
        }
        Ok(())
    }

    /// The shards to store, by index: one readable replica, or the
    /// partition decoded from k readable shards and encoded again.
    async fn rebuild(
        &self,
        ph: &PartitionHealth,
        size: u64,
        copies: &[CopyRow],
        shards: &HashMap<usize, (String, u64)>,
        want: &[(usize, usize)],
        pacer: &Pacer,
    ) -> MetaResult<HashMap<usize, Bytes>> {
        let n = if ph.replicated { 1 } else { ph.k + ph.m };
        let mut sources: Vec<&CopyRow> = copies
            .iter()
            .filter(|c| c.readable && c.index < n)
            .collect();
        // Healthy providers first, then draining ones.
        sources.sort_by_key(|c| c.lost);
        if ph.replicated {
            for c in sources {
                if let Some(d) = self.fetch_copy(c, pacer).await {
                    return Ok(HashMap::from([(0, d)]));
                }
            }
            return Err(MetaError::Unavailable(
                "no readable replica of the object".into(),
            ));
        }
        // A wanted shard still readable where it is (a draining provider)
        // is copied: one read instead of k.
        let mut out = HashMap::new();
        for (i, _) in want {
            for c in sources.iter().filter(|c| c.index == *i) {
                if let Some(d) = self.fetch_copy(c, pacer).await {
                    out.insert(*i, d);
                    break;
                }
            }
        }
        if want.iter().all(|(i, _)| out.contains_key(i)) {
            return Ok(out);
        }
        let scheme = Scheme::new(ph.k, ph.m).map_err(|e| MetaError::Internal(e.to_string()))?;
        let mut got: Vec<Option<Vec<u8>>> = vec![None; ph.k + ph.m];
        let mut have = 0;
        let mut tried = HashSet::new();
        // Fetch k at a time from distinct indexes until k arrived.
        while have < ph.k {
            let batch: Vec<&CopyRow> = sources
                .iter()
                .filter(|c| got[c.index].is_none() && !tried.contains(&(c.index, &c.provider)))
                .fold(Vec::<&CopyRow>::new(), |mut v, c| {
                    if v.len() < ph.k - have && !v.iter().any(|x| x.index == c.index) {
                        v.push(c);
                    }
                    v
                });
            if batch.is_empty() {
                return Err(MetaError::Unavailable(format!(
                    "only {have} of the {} shards needed are readable",
                    ph.k
                )));
            }
            let fetched =
                futures::future::join_all(batch.iter().map(|c| self.fetch_copy(c, pacer))).await;
            for (c, d) in batch.iter().zip(fetched) {
                tried.insert((c.index, &c.provider));
                if let Some(d) = d {
                    if c.index < got.len() && got[c.index].is_none() {
                        got[c.index] = Some(d.to_vec());
                        have += 1;
                    }
                }
            }
        }
        let plain = tokio::task::spawn_blocking(move || {
            let part = scheme.decode(got, size as usize)?;
            Ok::<_, crate::codec::erasure::ErasureError>(scheme.encode(Bytes::from(part)))
        })
        .await
        .map_err(|e| MetaError::Internal(e.to_string()))?
        .map_err(|e| MetaError::Internal(format!("decode: {e}")))?;
        let rebuilt: Vec<usize> = want
            .iter()
            .map(|w| w.0)
            .filter(|i| !out.contains_key(i))
            .collect();
        for i in &rebuilt {
            let shard = &plain[*i];
            let (sha1, len) = &shards[i];
            if !crate::codec::shard_matches(sha1, shard) || shard.len() as u64 != *len {
                return Err(MetaError::Internal(format!(
                    "shard {i} re-encoded does not match its recorded hash"
                )));
            }
            out.insert(*i, shard.clone());
        }
        Ok(out)
    }

    /// Stores rebuilt shards on providers holding none of the partition,
    /// with spares; returns the copies receipts prove, (index, sha1, size,
    /// provider).
    async fn store_rebuilt(
        &self,
        session: &str,
        copies: &[CopyRow],
        data: &HashMap<usize, Bytes>,
        want: &[(usize, usize)],
        pacer: &Pacer,
    ) -> MetaResult<Vec<(usize, String, u64, String)>> {
        let avoid: HashSet<String> = copies.iter().map(|c| c.provider.clone()).collect();
        let writable = self.writable(&avoid)?;
        let jobs_wanted: Vec<usize> = want
            .iter()
            .flat_map(|(i, n)| std::iter::repeat_n(*i, *n))
            .collect();
        let mut chosen = choose(&writable, jobs_wanted.len() + self.cfg.spares);
        if chosen.is_empty() {
            return Err(MetaError::Unavailable(
                "no provider without a shard of this partition can take one".into(),
            ));
        }
        let spare_providers = if chosen.len() > jobs_wanted.len() {
            chosen.split_off(jobs_wanted.len())
        } else {
            Vec::new()
        };
        let sha1 = |i: usize| {
            copies
                .iter()
                .find(|c| c.index == i)
                .map(|c| c.sha1.clone())
                .unwrap_or_default()
        };
        let jobs_idx: Vec<usize> = jobs_wanted.iter().copied().take(chosen.len()).collect();
        let targets = self.put_targets(session, chosen, |j| vec![sha1(jobs_idx[j])])?;
        let all: Vec<String> = jobs_idx.iter().map(|i| sha1(*i)).collect();
        let spares = self.put_targets(session, spare_providers, |_| all.clone())?;
        // Replicas of one shard may share spares; erasure shards of one
        // partition too: every spare holds no shard of it.
        let jobs: Vec<ShardJob> = jobs_idx
            .iter()
            .zip(targets)
            .map(|(i, target)| ShardJob {
                partition: 0,
                sha1: sha1(*i),
                data: data[i].clone(),
                target,
            })
            .collect();
        let spares = HashMap::from([(0u64, spares)]);
        let keys = self.store(|db| db.provider_keys())?;
        let (outcomes, _) = put_shards(
            &self.shards,
            jobs,
            &spares,
            self.cfg.repair_parallel.max(1) * 2,
            &|_| {},
        )
        .await;
        let mut added = Vec::new();
        let mut used = avoid;
        for (i, o) in jobs_idx.iter().zip(outcomes) {
            let PutOutcome::Stored(receipt) = o else {
                continue;
            };
            let size = data[i].len() as u64;
            pacer.pace(size).await;
            let stored = StoredShard {
                sha1: sha1(*i),
                size,
                receipts: vec![receipt],
            };
            match proven_providers(&keys, session, &stored).as_deref() {
                Ok([p]) if used.insert(p.clone()) => added.push((*i, stored.sha1, size, p.clone())),
                other => tracing::warn!(?other, "repair receipt refused"),
            }
        }
        Ok(added)
    }
}

impl Meta {
    /// HEADs the next `n` placed copies: a copy missing, or of the wrong
    /// length, is recorded as bad.
    pub async fn verify_round(&self, n: usize) -> MetaResult<usize> {
        if n == 0 {
            return Ok(0);
        }
        let h = self.horizons();
        let after = self.repair_stats.cursor.load(Ordering::Relaxed);
        let mut batch = self.store(|db| db.verify_batch(h.alive_since, after, n))?;
        if batch.is_empty() && after > 0 {
            batch = self.store(|db| db.verify_batch(h.alive_since, 0, n))?;
        }
        if let Some(last) = batch.last() {
            self.repair_stats.cursor.store(last.0, Ordering::Relaxed);
        } else {
            self.repair_stats.cursor.store(0, Ordering::Relaxed);
        }
        let bad = futures::stream::iter(batch)
            .map(|(_, sha1, size, provider, url)| async move {
                let grant = self.sign(&self.grant(Op::Get, &provider, vec![sha1.clone()]));
                let p = ProviderInfo {
                    id: provider.clone(),
                    url,
                };
                let reason = match self.head_shard(&p, &sha1, &grant).await {
                    Ok(len) if len == size => return false,
                    Ok(len) => format!("truncated to {len} of {size} bytes (verifier)"),
                    Err(ShardError::Status { status, .. })
                        if status == reqwest::StatusCode::NOT_FOUND =>
                    {
                        "missing (verifier)".to_string()
                    }
                    Err(_) => return false,
                };
                tracing::warn!(shard = %sha1, provider = %provider, %reason, "shard copy is bad");
                self.store(|db| db.shard_bad(&sha1, &provider, &reason))
                    .unwrap_or(false)
            })
            .buffer_unordered(16)
            .filter(|bad| std::future::ready(*bad))
            .count()
            .await;
        Ok(bad)
    }

    /// A shard copy's length, by HEAD.
    async fn head_shard(
        &self,
        p: &ProviderInfo,
        sha1: &str,
        grant: &str,
    ) -> Result<u64, ShardError> {
        let r = self
            .http
            .head(format!("{}/shards/{sha1}", p.url))
            .header(crate::grant::GRANT_HEADER, grant)
            .send()
            .await
            .map_err(|source| ShardError::Transport {
                provider: p.id.clone(),
                source,
            })?;
        if !r.status().is_success() {
            return Err(ShardError::Status {
                provider: p.id.clone(),
                status: r.status(),
                body: String::new(),
            });
        }
        Ok(r.headers()
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(0))
    }

    /// Checks a reader's claim that `provider`'s copy of `sha1` is missing
    /// or corrupt by fetching it; records it as bad if so. Whether it was.
    /// Only copies of the reader's own namespace's objects are checked.
    pub async fn check_reported(
        &self,
        ns: super::Ns,
        sha1: &str,
        provider: &str,
    ) -> MetaResult<bool> {
        if !self.store(|db| db.shard_placed_in(ns, sha1, provider))? {
            return Ok(false);
        }
        let Some(p) = self
            .store(|db| db.providers())?
            .into_iter()
            .find(|p| p.id == provider)
        else {
            return Ok(false);
        };
        let grant = self.sign(&self.grant(Op::Get, provider, vec![sha1.to_string()]));
        let info = ProviderInfo {
            id: p.id,
            url: p.url,
        };
        let reason = match self.shards.get(&info, sha1, &grant, true).await {
            Ok(_) => return Ok(false),
            Err(ShardError::Corrupt { .. }) => "corrupt (reader, checked)",
            Err(ShardError::Status { status, .. }) if status == reqwest::StatusCode::NOT_FOUND => {
                "missing (reader, checked)"
            }
            // Unreachable: the heartbeats decide whether it is lost.
            Err(_) => return Ok(false),
        };
        Ok(self.store(|db| db.shard_bad(sha1, provider, reason))?)
    }
}

/// Sets the durability gauges from the health report, at each scrape of
/// `/metrics`: partitions by redundancy, the repair queue, what repair has
/// done, and each provider as the registry knows it.
pub(super) fn record_health(m: &Meta) {
    let r = match m.db.health_report(m.horizons(), m.cfg.replicas) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "no health figures for /metrics");
            return;
        }
    };
    for (health, n) in [
        ("full", r.full),
        ("degraded", r.degraded),
        ("one_from_loss", r.one_from_loss),
        ("lost", r.lost),
    ] {
        metrics::gauge!(crate::metrics::PARTITIONS, "health" => health).set(n as f64);
    }
    metrics::gauge!(crate::metrics::REPAIR_QUEUE).set(r.repair_queue as f64);
    metrics::gauge!(crate::metrics::REPAIR_BACKOFF).set(r.repair_backoff as f64);
    let st = &m.repair_stats;
    metrics::counter!(crate::metrics::REPAIR_SHARDS).absolute(st.shards.load(Ordering::Relaxed));
    metrics::counter!(crate::metrics::REPAIR_BYTES).absolute(st.bytes.load(Ordering::Relaxed));
    metrics::counter!(crate::metrics::REPAIR_FAILURES)
        .absolute(st.failures.load(Ordering::Relaxed));
    for p in r.providers {
        let id = p.id;
        metrics::gauge!(crate::metrics::META_PROVIDER_UP, "provider" => id.clone())
            .set(u8::from(p.alive));
        metrics::gauge!(crate::metrics::META_PROVIDER_ACTIVE, "provider" => id.clone())
            .set(u8::from(p.state == super::store::ACTIVE));
        metrics::gauge!(crate::metrics::META_PROVIDER_CAPACITY, "provider" => id.clone())
            .set(p.capacity as f64);
        metrics::gauge!(crate::metrics::META_PROVIDER_USED, "provider" => id.clone())
            .set(p.used as f64);
        metrics::gauge!(crate::metrics::META_PROVIDER_PLACED, "provider" => id)
            .set(p.shards as f64);
    }
}

/// Repairs every `interval`, and verifies `verify_rate` copies a second,
/// forever.
pub async fn run(meta: Arc<Meta>) {
    let pacer = Arc::new(Pacer::new(meta.cfg.repair_rate));
    let interval = meta.cfg.repair_interval;
    loop {
        tokio::time::sleep(interval).await;
        if !meta.runs_jobs() {
            continue;
        }
        // Each round in its own task: a bug that panics costs one round,
        // never the server.
        let (m, pacer) = (meta.clone(), pacer.clone());
        let round = tokio::spawn(async move {
            let n = (m.cfg.verify_rate as f64 * interval.as_secs_f64()).ceil() as usize;
            match m.verify_round(n).await {
                Ok(0) => {}
                Ok(bad) => tracing::info!(bad, "verifier found bad shard copies"),
                Err(e) => tracing::warn!(error = %e, "verifier failed"),
            }
            match m.repair_round(&pacer).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(partitions = n, "repair round done"),
                Err(e) => tracing::warn!(error = %e, "repair round failed"),
            }
        });
        if let Err(e) = round.await {
            tracing::error!(error = %e, "repair round panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pacer_holds_the_rate_and_gives_no_credit_for_idle_time() {
        let p = Pacer::new(8 << 20);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = Instant::now();
        for _ in 0..4 {
            p.pace(1 << 20).await;
        }
        let secs = t.elapsed().as_secs_f64();
        assert!(secs >= 0.45, "4 MiB at 8 MiB/s took {secs} s");
        let t = Instant::now();
        Pacer::new(0).pace(1 << 30).await;
        assert!(t.elapsed() < Duration::from_millis(50), "0 is unbounded");
    }
}
