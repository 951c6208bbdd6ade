//! Where shards go: the shards of one partition on distinct live providers,
//! partitions rotated over the providers so load spreads evenly, and a few
//! spares for shards whose provider fails.

use super::{Meta, MetaError, MetaResult};
use crate::codec::erasure::Scheme;
use crate::grant::now_secs;
use crate::proto::ProviderInfo;

impl Meta {
    /// Providers heard from recently, in a per-call random rotation so that
    /// concurrent uploads do not all start on the same provider.
    pub(super) fn alive(&self) -> MetaResult<Vec<ProviderInfo>> {
        let horizon = now_secs().saturating_sub(self.cfg.provider_timeout.as_secs());
        let mut alive: Vec<ProviderInfo> = self
            .db
            .providers()?
            .into_iter()
            .filter(|p| p.last_seen >= horizon)
            .map(|p| ProviderInfo {
                id: p.id,
                url: p.url,
            })
            .collect();
        if alive.is_empty() {
            return Err(MetaError::Unavailable(
                "no storage provider is alive".into(),
            ));
        }
        let shift = rand::random::<usize>() % alive.len();
        alive.rotate_left(shift);
        Ok(alive)
    }

    /// The erasure scheme for the providers alive: the configured k+m, or
    /// less redundancy when fewer providers are there.
    pub(super) fn scheme_for(&self, alive: usize) -> Scheme {
        let m = self.cfg.m.min(alive.saturating_sub(1));
        let k = self.cfg.k.min(alive.saturating_sub(m)).max(1);
        Scheme::new(k, m).expect("k >= 1 and k + m <= alive")
    }
}

/// `n` distinct providers for partition `index`.
pub(super) fn place(alive: &[ProviderInfo], index: u64, n: usize) -> Vec<ProviderInfo> {
    let start = (index as usize * n) % alive.len();
    (0..n.min(alive.len()))
        .map(|i| alive[(start + i) % alive.len()].clone())
        .collect()
}

/// Up to `count` spares, preferring providers no partition of `placed` uses.
pub(super) fn spares(
    alive: &[ProviderInfo],
    placed: &[Vec<ProviderInfo>],
    count: usize,
) -> Vec<ProviderInfo> {
    let used = |p: &ProviderInfo| placed.iter().flatten().filter(|q| q.id == p.id).count();
    let mut by_use: Vec<&ProviderInfo> = alive.iter().collect();
    by_use.sort_by_key(|p| used(p));
    by_use.into_iter().take(count).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn providers(n: usize) -> Vec<ProviderInfo> {
        (0..n)
            .map(|i| ProviderInfo {
                id: format!("p{i}"),
                url: String::new(),
            })
            .collect()
    }

    #[test]
    fn distinct_within_partition_and_spread() {
        let alive = providers(7);
        let a = place(&alive, 0, 6);
        let b = place(&alive, 1, 6);
        let ids = |v: &[ProviderInfo]| {
            v.iter()
                .map(|p| p.id.clone())
                .collect::<std::collections::HashSet<_>>()
        };
        assert_eq!(ids(&a).len(), 6);
        assert_eq!(ids(&b).len(), 6);
        assert_ne!(ids(&a), ids(&b));
        let s = spares(&alive, std::slice::from_ref(&a), 2);
        assert!(
            !a.iter().any(|p| p.id == s[0].id),
            "the unused provider is the first spare"
        );
    }
}
