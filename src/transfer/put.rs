//! Shards to providers, in parallel and bounded. A provider that fails is
//! replaced by one of its partition's spares — each holds no other shard of
//! that partition, so a spare never puts two shards of a partition on one
//! provider. Each stored shard comes back with the provider's receipt.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use bytes::Bytes;
use futures::{stream, StreamExt};

use crate::client::provider::ShardClient;
use crate::lock;
use crate::proto::Target;

/// One shard to store.
pub struct ShardJob {
    pub partition: u64,
    pub sha1: String,
    pub data: Bytes,
    pub target: Target,
}

/// What became of one job.
#[derive(Debug)]
pub enum PutOutcome {
    /// The receipt of the provider that took the shard.
    Stored(String),
    /// Every provider tried failed; the last error.
    Failed(String),
}

/// Providers that failed, and spares already taken, per partition.
struct Spares<'a> {
    available: &'a HashMap<u64, Vec<Target>>,
    taken: HashMap<u64, HashSet<String>>,
    failed: HashSet<String>,
}

impl Spares<'_> {
    fn next(&mut self, partition: u64) -> Option<Target> {
        let taken = self.taken.entry(partition).or_default();
        let spare = self
            .available
            .get(&partition)?
            .iter()
            .find(|s| !taken.contains(&s.provider.id) && !self.failed.contains(&s.provider.id))?
            .clone();
        taken.insert(spare.provider.id.clone());
        Some(spare)
    }
}

/// Stores every job, trying its partition's spares when its provider
/// fails; returns the outcomes in job order and the providers that failed.
/// `on_stored` is called with the byte count of each stored shard.
pub async fn put_shards(
    client: &ShardClient,
    jobs: Vec<ShardJob>,
    spares: &HashMap<u64, Vec<Target>>,
    parallel: usize,
    on_stored: &(dyn Fn(u64) + Sync),
) -> (Vec<PutOutcome>, HashSet<String>) {
    let state = Mutex::new(Spares {
        available: spares,
        taken: HashMap::new(),
        failed: HashSet::new(),
    });
    let state = &state;
    let outcomes = stream::iter(jobs)
        .map(|job| async move {
            let mut target = job.target.clone();
            loop {
                match client
                    .put(&target.provider, &job.sha1, &target.grant, job.data.clone())
                    .await
                {
                    Ok(receipt) => {
                        on_stored(job.data.len() as u64);
                        return PutOutcome::Stored(receipt);
                    }
                    Err(e) => {
                        tracing::warn!(provider = %target.provider.id, shard = %job.sha1, error = %e,
                            "shard PUT failed; trying a spare");
                        let mut st = lock(state);
                        st.failed.insert(target.provider.id.clone());
                        match st.next(job.partition) {
                            Some(next) => target = next,
                            None => return PutOutcome::Failed(e.to_string()),
                        }
                    }
                }
            }
        })
        .buffered(parallel.max(1))
        .collect()
        .await;
    let failed = std::mem::take(&mut lock(state).failed);
    (outcomes, failed)
}
