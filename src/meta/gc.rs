//! Garbage collection. Objects no file uses (replaced versions, deleted
//! files) are forgotten after a grace period; a shard copy becomes garbage
//! only when no object and no open upload session references that
//! (shard, provider) any more — decided in the transaction that forgets
//! the object — and is then deleted on its provider with a delete grant
//! that spares a copy stored again after the decision. A provider that is
//! down keeps its doomed copies until it answers.

use std::sync::Arc;
use std::time::Duration;

use super::{Meta, MetaResult};
use crate::client::provider::ShardError;
use futures::StreamExt;

use super::store::DoomedShard;
use crate::grant::{now_ms, now_secs, Grant, Op};
use crate::proto::ProviderInfo;

/// Doomed copies handled per round.
const BATCH: usize = 1024;

impl Meta {
    /// One round: forgets unused objects and deletes doomed shard copies;
    /// returns (objects forgotten, copies deleted).
    pub async fn collect_garbage(&self) -> MetaResult<(usize, usize)> {
        self.store(|db| db.pending_expire())?;
        let mut forgotten = 0;
        for id in self.store(|db| db.unused_objects(self.cfg.gc_grace.as_secs() as i64, 256))? {
            forgotten += self.store(|db| db.forget_object(id))? as usize;
        }
        let horizon = now_secs().saturating_sub(self.cfg.provider_timeout.as_secs());
        let doomed = self.store(|db| db.doomed(horizon, BATCH))?;
        let deleted = futures::stream::iter(doomed)
            .map(|d| self.delete_doomed(d))
            .buffer_unordered(16)
            .filter(|deleted| std::future::ready(matches!(deleted, Ok(true))))
            .count()
            .await;
        Ok((forgotten, deleted))
    }
}

impl Meta {
    /// Deletes one doomed copy unless it is referenced again; whether it is gone.
    async fn delete_doomed(&self, d: DoomedShard) -> MetaResult<bool> {
        if !self.store(|db| db.still_doomed(&d.sha1, &d.provider))? {
            return Ok(false);
        }
        // Decided now: a copy stored after this (less the clock skew a
        // provider may have) belongs to a newer upload and stays.
        let before = now_ms().saturating_sub(self.cfg.clock_skew.as_millis() as u64);
        let grant = self.sign(&Grant {
            stored_before_ms: Some(before),
            ..self.grant(Op::Delete, &d.provider, vec![d.sha1.clone()])
        });
        let p = ProviderInfo {
            id: d.provider.clone(),
            url: d.url,
        };
        match self.shards.delete(&p, &d.sha1, &grant).await {
            Ok(()) => {}
            Err(ShardError::Status { status, .. }) if status == reqwest::StatusCode::NOT_FOUND => {}
            Err(e) => {
                tracing::debug!(shard = %d.sha1, provider = %p.id, error = %e, "garbage shard kept for now");
                return Ok(false);
            }
        }
        self.store(|db| db.doomed_deleted(&d.sha1, &d.provider))?;
        Ok(true)
    }
}

/// Collects garbage every `interval`, forever.
pub async fn run(meta: Arc<Meta>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        if !meta.runs_jobs() {
            continue;
        }
        match meta.collect_garbage().await {
            Ok((0, 0)) => {}
            Ok((objects, shards)) => tracing::debug!(objects, shards, "garbage collected"),
            Err(e) => tracing::warn!(error = %e, "garbage collection failed"),
        }
    }
}
