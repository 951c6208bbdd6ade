//! Garbage collection: objects no file uses (replaced versions, deleted
//! files) are forgotten after a grace period and their shards deleted from
//! the providers, with delete grants. A provider that is down keeps its
//! copy; the grace period lets an upload that found the object by dedup
//! commit before it goes.

use std::sync::Arc;
use std::time::Duration;

use super::{Meta, MetaResult};
use crate::grant::Op;
use crate::proto::ProviderInfo;

impl Meta {
    /// One round: returns how many objects were collected.
    pub async fn collect_garbage(&self) -> MetaResult<usize> {
        let ids = self
            .db
            .unused_objects(self.cfg.gc_grace.as_secs() as i64, 256)?;
        for &id in &ids {
            for (sha1, provider, url) in self.db.forget_object(id)? {
                if url.is_empty() {
                    continue;
                }
                let grant = self.grant(Op::Delete, vec![sha1.clone()]);
                let p = ProviderInfo { id: provider, url };
                if let Err(e) = self.shards.delete(&p, &sha1, &grant).await {
                    tracing::info!(shard = %sha1, provider = %p.id, error = %e, "garbage shard not deleted");
                }
            }
        }
        Ok(ids.len())
    }
}

/// Collects garbage every `interval`, forever.
pub async fn run(meta: Arc<Meta>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        match meta.collect_garbage().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(objects = n, "garbage collected"),
            Err(e) => tracing::warn!(error = %e, "garbage collection failed"),
        }
    }
}
