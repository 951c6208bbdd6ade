//! Shards to providers, in parallel and bounded; a provider that fails or
//! stalls is replaced by a spare, and the real placement is reported.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use bytes::Bytes;
use futures::{stream, StreamExt};

use super::TransferError;
use crate::client::provider::ShardClient;
use crate::proto::ProviderInfo;

/// One shard to store.
pub struct ShardJob {
    pub partition: u64,
    pub sha1: String,
    pub data: Bytes,
    pub primary: ProviderInfo,
    pub grant: String,
}

struct SpareState {
    failed: HashSet<String>,
    /// Providers holding (or about to hold) a shard of each partition.
    busy: HashMap<u64, HashSet<String>>,
}

impl SpareState {
    /// A spare that has not failed, preferring one that holds no shard of
    /// the same partition (so losing it costs one shard, not two).
    fn pick(&mut self, partition: u64, spares: &[ProviderInfo]) -> Option<ProviderInfo> {
        let busy = self.busy.entry(partition).or_default();
        let usable = spares.iter().filter(|s| !self.failed.contains(&s.id));
        let choice = usable
            .clone()
            .find(|s| !busy.contains(&s.id))
            .or_else(|| usable.clone().next())?
            .clone();
        busy.insert(choice.id.clone());
        Some(choice)
    }
}

/// Stores every job; returns, in job order, the id of the provider that took
/// each shard. `on_stored` is called with the byte count of each stored shard.
pub async fn put_shards(
    client: &ShardClient,
    jobs: Vec<ShardJob>,
    spares: &[ProviderInfo],
    parallel: usize,
    on_stored: &(dyn Fn(u64) + Sync),
) -> Result<Vec<String>, TransferError> {
    let mut busy: HashMap<u64, HashSet<String>> = HashMap::new();
    for j in &jobs {
        busy.entry(j.partition)
            .or_default()
            .insert(j.primary.id.clone());
    }
    let state = Mutex::new(SpareState {
        failed: HashSet::new(),
        busy,
    });
    let state = &state;
    let results: Vec<Result<String, TransferError>> = stream::iter(jobs)
        .map(|job| async move {
            let mut target = job.primary.clone();
            loop {
                match client.put(&target, &job.sha1, &job.grant, job.data.clone()).await {
                    Ok(()) => {
                        on_stored(job.data.len() as u64);
                        return Ok(target.id);
                    }
                    Err(e) => {
                        tracing::warn!(provider = %target.id, shard = %job.sha1, error = %e, "shard PUT failed; trying a spare");
                        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                        st.failed.insert(target.id.clone());
                        match st.pick(job.partition, spares) {
                            Some(next) => target = next,
                            None => return Err(TransferError::NoProvider { sha1: job.sha1, last: e.to_string() }),
                        }
                    }
                }
            }
        })
        .buffered(parallel.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}
