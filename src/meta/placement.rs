//! Where shards go. Invariants: the shards of one partition, spares
//! included, are on distinct providers; only enrolled providers heard from
//! recently, below their capacity and neither draining nor retired are
//! given anything; among those,
//! providers with more free space are chosen more often (weighted random,
//! so concurrent uploads spread). Fault tolerance is never traded for
//! placement: with fewer providers the data shards per partition shrink,
//! the parity count never does.

use std::collections::HashSet;

use rand::seq::SliceRandom;

use super::{Meta, MetaError, MetaResult};
use crate::codec::erasure::Scheme;
use crate::grant::now_secs;
use crate::proto::ProviderInfo;

/// A provider that may take new shards.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub info: ProviderInfo,
    /// Bytes it can still take.
    pub free: u64,
}

impl Meta {
    /// Enrolled providers heard from recently, below their capacity, less
    /// those in `avoid`.
    pub(super) fn writable(&self, avoid: &HashSet<String>) -> MetaResult<Vec<Candidate>> {
        let horizon = now_secs().saturating_sub(self.cfg.provider_timeout.as_secs());
        let keys = self.store(|db| db.provider_keys())?;
        Ok(self
            .store(|db| db.providers())?
            .into_iter()
            .filter(|p| {
                p.last_seen >= horizon
                    && p.used < p.capacity
                    && p.state == super::store::ACTIVE
                    && keys.contains_key(&p.id)
                    && !avoid.contains(&p.id)
            })
            .map(|p| Candidate {
                free: p.capacity - p.used,
                info: ProviderInfo {
                    id: p.id,
                    url: p.url,
                },
            })
            .collect())
    }

    /// The erasure scheme `n` distinct providers can hold: the configured
    /// k+m, or fewer data shards, never fewer parity shards.
    pub(super) fn scheme_for(&self, n: usize) -> MetaResult<Scheme> {
        let m = self.cfg.m;
        if n < m + 1 {
            return Err(too_few(n, m + 1));
        }
        let k = self.cfg.k.min(n - m).max(1);
        Scheme::new(k, m).map_err(|e| MetaError::Internal(e.to_string()))
    }

    /// Copies a replicated object needs, if `n` providers can hold them.
    pub(super) fn copies_for(&self, n: usize) -> MetaResult<usize> {
        let copies = self.cfg.replicas;
        if n < copies {
            return Err(too_few(n, copies));
        }
        Ok(copies)
    }
}

fn too_few(have: usize, need: usize) -> MetaError {
    MetaError::Unavailable(format!(
        "{have} storage providers can take data; {need} distinct ones are needed"
    ))
}

/// Up to `n` distinct providers, drawn at random weighted by free space.
pub(super) fn choose(candidates: &[Candidate], n: usize) -> Vec<ProviderInfo> {
    let mut rng = rand::thread_rng();
    // Weights in MiB (at least 1) keep the sampling's arithmetic in range.
    candidates
        .choose_multiple_weighted(&mut rng, n.min(candidates.len()), |c| {
            (c.free >> 20).max(1) as f64
        })
        .map(|chosen| chosen.map(|c| c.info.clone()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidates(free: &[u64]) -> Vec<Candidate> {
        free.iter()
            .enumerate()
            .map(|(i, &free)| Candidate {
                info: ProviderInfo {
                    id: format!("p{i}"),
                    url: String::new(),
                },
                free,
            })
            .collect()
    }

    #[test]
    fn distinct_and_weighted_by_free_space() {
        let c = candidates(&[
            1 << 30,
            1 << 30,
            1 << 30,
            1 << 30,
            1 << 30,
            1 << 30,
            1 << 40,
        ]);
        let mut big = 0;
        for _ in 0..200 {
            let chosen = choose(&c, 3);
            let ids: HashSet<_> = chosen.iter().map(|p| p.id.clone()).collect();
            assert_eq!(ids.len(), 3, "distinct");
            big += ids.contains("p6") as usize;
        }
        assert!(
            big > 190,
            "the emptiest provider is nearly always chosen: {big}"
        );
        assert_eq!(choose(&c, 10).len(), 7, "never more than there are");
    }
}
