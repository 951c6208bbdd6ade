//! Objects: read layouts with grants, and storing the bytes of REST writes
//! through the same codec and providers as the drive's uploads.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;

use super::db::{NewObject, Node, Ns, ObjectRow};
use super::placement::{place, spares};
use super::{Meta, MetaError, MetaResult};
use crate::codec::{sha1_hex, INLINE_MAX};
use crate::grant::Op;
use crate::proto::*;
use crate::transfer::{put_shards, ShardJob};

impl Meta {
    pub(super) fn object_layout(&self, o: &ObjectRow) -> MetaResult<ObjectLayout> {
        let (parts, shards) = self.db.object_shards(o.id)?;
        if o.scheme == StoreScheme::Inline {
            // The bytes travel in the layout: one partition, no shards.
            let whole = PartitionLayout {
                index: 0,
                size: o.stored_size,
                shards: vec![],
                grant: String::new(),
            };
            return Ok(ObjectLayout {
                data: o.data.as_ref().map(|d| B64.encode(d)),
                partitions: vec![whole],
                ..self.bare_layout(o)
            });
        }
        let partitions = parts
            .into_iter()
            .map(|(index, size)| {
                let shards: Vec<ShardLocation> = shards
                    .iter()
                    .filter(|s| s.partition == index)
                    .map(|s| ShardLocation {
                        sha1: s.sha1.clone(),
                        size: s.size,
                        providers: s
                            .providers
                            .iter()
                            .filter(|(_, url)| !url.is_empty())
                            .map(|(id, url)| ProviderInfo {
                                id: id.clone(),
                                url: url.clone(),
                            })
                            .collect(),
                    })
                    .collect();
                let grant = self.grant(Op::Get, shards.iter().map(|s| s.sha1.clone()).collect());
                PartitionLayout {
                    index,
                    size,
                    shards,
                    grant,
                }
            })
            .collect();
        Ok(ObjectLayout {
            partitions,
            ..self.bare_layout(o)
        })
    }

    fn bare_layout(&self, o: &ObjectRow) -> ObjectLayout {
        ObjectLayout {
            sha1: o.sha1.clone(),
            scheme: o.scheme,
            plain_size: o.plain_size,
            stored_size: o.stored_size,
            partition_size: o.partition_size,
            k: o.k,
            m: o.m,
            data: None,
            partitions: vec![],
        }
    }

    pub(super) fn file_layout(&self, node: &Node) -> MetaResult<FileLayout> {
        let fragments = self
            .db
            .fragments(node.id)?
            .into_iter()
            .map(|f| {
                Ok(FragmentLayout {
                    offset: f.offset,
                    length: f.length,
                    key: f.key,
                    object: self.object_layout(&f.object)?,
                })
            })
            .collect::<MetaResult<Vec<_>>>()?;
        Ok(FileLayout {
            size: node.size,
            ver_no: node.ver_no,
            fragments,
        })
    }

    /// Stores plaintext bytes as an object of `ns` (inline, replicated or
    /// erasure-coded by size) and returns its id; known content is reused.
    pub(super) async fn store_object(&self, ns: Ns, data: Bytes) -> MetaResult<i64> {
        let sha1 = sha1_hex(&data);
        if let Some(o) = self.db.find_object(ns, &sha1)? {
            return Ok(o.id);
        }
        let size = data.len() as u64;
        self.check_quota(ns, size)?;
        let mut new = NewObject {
            sha1: &sha1,
            scheme: StoreScheme::Inline,
            plain_size: size,
            stored_size: size,
            partition_size: self.cfg.partition_size,
            k: 1,
            m: 0,
            data: None,
            partitions: &[],
        };
        if size <= INLINE_MAX {
            new.data = Some(&data);
            return Ok(self.db.insert_object(ns, &new)?);
        }
        let alive = self.alive()?;
        let partitions = if size <= self.cfg.replica_max {
            new.scheme = StoreScheme::Replica;
            let providers = place(&alive, 0, alive.len());
            let (chosen, spare) = providers.split_at(self.cfg.replicas.min(providers.len()));
            let grant = self.grant(Op::Put, vec![sha1.clone()]);
            let jobs = chosen
                .iter()
                .map(|p| ShardJob {
                    partition: 0,
                    sha1: sha1.clone(),
                    data: data.clone(),
                    primary: p.clone(),
                    grant: grant.clone(),
                })
                .collect();
            let ids = put_shards(&self.shards, jobs, spare, 8, &|_| {})
                .await
                .map_err(unavailable)?;
            vec![PlacedPartition {
                index: 0,
                size,
                shards: vec![PlacedShard {
                    sha1: sha1.clone(),
                    size,
                    providers: ids,
                }],
            }]
        } else {
            let scheme = self.scheme_for(alive.len());
            new.scheme = StoreScheme::Erasure;
            (new.k, new.m) = (scheme.k, scheme.m);
            let mut jobs = Vec::new();
            let mut placed = Vec::new();
            let mut metas = Vec::new();
            for (index, chunk) in data.chunks(self.cfg.partition_size as usize).enumerate() {
                let index = index as u64;
                let shards: Vec<Bytes> =
                    scheme.encode(chunk).into_iter().map(Bytes::from).collect();
                let hashes: Vec<String> = shards.iter().map(|s| sha1_hex(s)).collect();
                let providers = place(&alive, index, shards.len());
                let grant = self.grant(Op::Put, hashes.clone());
                for ((s, h), p) in shards.iter().zip(&hashes).zip(&providers) {
                    jobs.push(ShardJob {
                        partition: index,
                        sha1: h.clone(),
                        data: s.clone(),
                        primary: p.clone(),
                        grant: grant.clone(),
                    });
                }
                metas.push((index, chunk.len() as u64, shards[0].len() as u64, hashes));
                placed.push(providers);
            }
            let spare = spares(&alive, &placed, self.cfg.spares);
            let ids = put_shards(&self.shards, jobs, &spare, 12, &|_| {})
                .await
                .map_err(unavailable)?;
            let mut ids = ids.into_iter();
            metas
                .into_iter()
                .map(|(index, size, shard_len, hashes)| PlacedPartition {
                    index,
                    size,
                    shards: hashes
                        .into_iter()
                        .map(|sha1| PlacedShard {
                            sha1,
                            size: shard_len,
                            providers: vec![ids.next().expect("one id per job")],
                        })
                        .collect(),
                })
                .collect()
        };
        new.partitions = &partitions;
        Ok(self.db.insert_object(ns, &new)?)
    }
}

fn unavailable(e: crate::transfer::TransferError) -> MetaError {
    MetaError::Unavailable(format!("storing data failed: {e}"))
}
