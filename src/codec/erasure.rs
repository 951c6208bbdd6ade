//! Reed-Solomon k+m over one stored partition. The partition is cut into k
//! equal data shards (the last one zero-padded) and m parity shards; any k
//! of the k+m give the partition back.

use bytes::Bytes;
use reed_solomon_erasure::galois_8::ReedSolomon;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ErasureError {
    #[error("invalid erasure parameters k={k} m={m}")]
    BadParams { k: usize, m: usize },
    #[error("only {have} of the {need} shards needed are available")]
    TooFewShards { have: usize, need: usize },
    #[error("shard sizes disagree")]
    ShardSize,
}

/// The shape of one erasure-coded partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheme {
    pub k: usize,
    pub m: usize,
}

impl Scheme {
    pub fn new(k: usize, m: usize) -> Result<Self, ErasureError> {
        // galois_8 allows at most 256 shards; m = 0 is plain striping.
        if k == 0 || k + m > 256 {
            return Err(ErasureError::BadParams { k, m });
        }
        Ok(Scheme { k, m })
    }

    /// Size of every shard of a partition of `len` stored bytes.
    pub fn shard_len(&self, len: usize) -> usize {
        len.div_ceil(self.k).max(1)
    }

    fn codec(&self) -> Option<ReedSolomon> {
        (self.m > 0).then(|| ReedSolomon::new(self.k, self.m).expect("checked in Scheme::new"))
    }

    /// Cuts `partition` into k data shards and computes m parity shards.
    /// The data shards are slices of `partition`, but for a last one that
    /// needs padding.
    pub fn encode(&self, partition: Bytes) -> Vec<Bytes> {
        let shard_len = self.shard_len(partition.len());
        let mut shards: Vec<Bytes> = (0..self.k)
            .map(|i| {
                let start = (i * shard_len).min(partition.len());
                let end = ((i + 1) * shard_len).min(partition.len());
                if end - start == shard_len {
                    return partition.slice(start..end);
                }
                let mut s = Vec::with_capacity(shard_len);
                s.extend_from_slice(&partition[start..end]);
                s.resize(shard_len, 0);
                Bytes::from(s)
            })
            .collect();
        if let Some(rs) = self.codec() {
            let mut parity = vec![vec![0u8; shard_len]; self.m];
            rs.encode_sep(&shards, &mut parity)
                .expect("shards have equal sizes");
            shards.extend(parity.into_iter().map(Bytes::from));
        }
        shards
    }

    /// Rebuilds a partition of `len` bytes from shards, `None` where a shard
    /// is missing (or failed its hash check). Needs any k of them.
    pub fn decode(
        &self,
        mut shards: Vec<Option<Vec<u8>>>,
        len: usize,
    ) -> Result<Vec<u8>, ErasureError> {
        if shards.len() != self.k + self.m {
            return Err(ErasureError::BadParams {
                k: self.k,
                m: self.m,
            });
        }
        let shard_len = self.shard_len(len);
        if shards.iter().flatten().any(|s| s.len() != shard_len) {
            return Err(ErasureError::ShardSize);
        }
        let have = shards.iter().filter(|s| s.is_some()).count();
        if have < self.k {
            return Err(ErasureError::TooFewShards { have, need: self.k });
        }
        if shards[..self.k].iter().any(Option::is_none) {
            let rs = self
                .codec()
                .ok_or(ErasureError::TooFewShards { have, need: self.k })?;
            rs.reconstruct_data(&mut shards)
                .map_err(|_| ErasureError::TooFewShards { have, need: self.k })?;
        }
        let mut out = Vec::with_capacity(shard_len * self.k);
        for s in shards.into_iter().take(self.k) {
            out.extend_from_slice(&s.expect("data shards reconstructed"));
        }
        out.truncate(len);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_losses() {
        let s = Scheme::new(4, 2).unwrap();
        let data: Vec<u8> = (0..1001u32).map(|i| (i * 7) as u8).collect();
        let shards = s.encode(Bytes::from(data.clone()));
        assert_eq!(shards.len(), 6);
        let mut opt: Vec<_> = shards.into_iter().map(|s| Some(s.to_vec())).collect();
        opt[0] = None;
        opt[3] = None;
        assert_eq!(s.decode(opt.clone(), data.len()).unwrap(), data);
        opt[5] = None;
        assert_eq!(
            s.decode(opt, data.len()).unwrap_err(),
            ErasureError::TooFewShards { have: 3, need: 4 }
        );
    }

    #[test]
    fn empty_partition_and_bad_params() {
        let s = Scheme::new(3, 1).unwrap();
        let shards = s.encode(Bytes::new());
        assert!(shards.iter().all(|x| x.len() == 1));
        assert_eq!(
            s.decode(shards.into_iter().map(|s| Some(s.to_vec())).collect(), 0)
                .unwrap(),
            Vec::<u8>::new()
        );
        assert!(Scheme::new(0, 2).is_err());
        assert!(Scheme::new(200, 57).is_err());
    }
}
