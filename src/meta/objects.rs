//! Objects: read layouts with grants, and storing the bytes of REST writes
//! through the same codec and providers as the drive's uploads.

use std::collections::{BTreeMap, HashMap, HashSet};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;

use super::api::{new_session_id, proven_providers};
use super::db::{NewObject, Node, Ns, ObjectRow};
use super::placement::choose;
use super::{Meta, MetaError, MetaResult};
use crate::codec::erasure::Scheme;
use crate::codec::{sha1_hex, INLINE_MAX};
use crate::grant::Op;
use crate::proto::*;
use crate::transfer::{put_shards, PutOutcome, ShardJob};

impl Meta {
    pub(super) fn object_layout(&self, o: &ObjectRow) -> MetaResult<ObjectLayout> {
        if o.scheme == StoreScheme::Inline {
            // The bytes travel in the layout: one partition, no shards.
            let whole = PartitionLayout {
                index: 0,
                size: o.stored_size,
                k: 1,
                m: 0,
                shards: vec![],
            };
            return Ok(ObjectLayout {
                data: o.data.as_ref().map(|d| B64.encode(d)),
                partitions: vec![whole],
                ..self.bare_layout(o)
            });
        }
        let (parts, shards) = self.db.object_shards(o.id)?;
        let mut on_provider: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let partitions = parts
            .into_iter()
            .map(|part| {
                let shards: Vec<ShardLocation> = shards
                    .iter()
                    .filter(|s| s.partition == part.index)
                    .map(|s| ShardLocation {
                        sha1: s.sha1.clone(),
                        size: s.size,
                        providers: s
                            .providers
                            .iter()
                            .filter(|(_, url)| !url.is_empty())
                            .map(|(id, url)| {
                                on_provider
                                    .entry(id.clone())
                                    .or_default()
                                    .push(s.sha1.clone());
                                ProviderInfo {
                                    id: id.clone(),
                                    url: url.clone(),
                                }
                            })
                            .collect(),
                    })
                    .collect();
                PartitionLayout {
                    index: part.index,
                    size: part.size,
                    k: part.k,
                    m: part.m,
                    shards,
                }
            })
            .collect();
        let grants = on_provider
            .into_iter()
            .map(|(id, shards)| {
                let grant = self.sign(&self.grant(Op::Get, &id, shards));
                (id, grant)
            })
            .collect();
        Ok(ObjectLayout {
            partitions,
            grants,
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
            grants: BTreeMap::new(),
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
        let session = new_session_id();
        let writable = self.writable(&HashSet::new())?;
        // (partition index, stored size, scheme, shard bytes); replicas are
        // one partition whose one shard goes to several providers.
        let mut parts: Vec<(u64, u64, Scheme, Vec<Bytes>)> = Vec::new();
        let mut jobs = Vec::new();
        let mut spares = HashMap::new();
        if size <= self.cfg.replica_max {
            new.scheme = StoreScheme::Replica;
            let copies = self.copies_for(writable.len())?;
            let providers = choose(&writable, copies + self.cfg.spares);
            let mut targets = self.put_targets(&session, providers, |_| vec![sha1.clone()])?;
            spares.insert(0, targets.split_off(copies));
            for target in targets {
                jobs.push(ShardJob {
                    partition: 0,
                    sha1: sha1.clone(),
                    data: data.clone(),
                    target,
                });
            }
            parts.push((0, size, Scheme::new(1, 0).expect("1+0"), vec![data.clone()]));
        } else {
            let scheme = self.scheme_for(writable.len())?;
            new.scheme = StoreScheme::Erasure;
            (new.k, new.m) = (scheme.k, scheme.m);
            for (index, chunk) in data.chunks(self.cfg.partition_size as usize).enumerate() {
                let index = index as u64;
                let shards: Vec<Bytes> =
                    scheme.encode(chunk).into_iter().map(Bytes::from).collect();
                let hashes: Vec<String> = shards.iter().map(|s| sha1_hex(s)).collect();
                let mut providers = choose(&writable, shards.len() + self.cfg.spares);
                let spare = providers.split_off(shards.len().min(providers.len()));
                let targets = self.put_targets(&session, providers, |i| vec![hashes[i].clone()])?;
                spares.insert(
                    index,
                    self.put_targets(&session, spare, |_| hashes.clone())?,
                );
                for ((s, h), target) in shards.iter().zip(&hashes).zip(targets) {
                    jobs.push(ShardJob {
                        partition: index,
                        sha1: h.clone(),
                        data: s.clone(),
                        target,
                    });
                }
                parts.push((index, chunk.len() as u64, scheme, shards));
            }
        }
        let (outcomes, _) = put_shards(&self.shards, jobs, &spares, 12, &|_| {}).await;
        let keys = self.db.provider_keys()?;
        let mut outcomes = outcomes.into_iter();
        let mut partitions = Vec::with_capacity(parts.len());
        for (index, size, scheme, shards) in parts {
            let mut placed = Vec::with_capacity(shards.len());
            for shard in &shards {
                let sha1 = if new.scheme == StoreScheme::Replica {
                    sha1.clone()
                } else {
                    sha1_hex(shard)
                };
                // Replicas: every job of the one partition is a copy of the one shard.
                let copies = if new.scheme == StoreScheme::Replica {
                    outcomes.by_ref().collect::<Vec<_>>()
                } else {
                    outcomes.next().into_iter().collect()
                };
                let receipts = copies
                    .into_iter()
                    .map(|o| match o {
                        PutOutcome::Stored(r) => Ok(r),
                        PutOutcome::Failed(e) => {
                            Err(MetaError::Unavailable(format!("storing data failed: {e}")))
                        }
                    })
                    .collect::<MetaResult<Vec<_>>>()?;
                let stored = StoredShard {
                    sha1,
                    size: shard.len() as u64,
                    receipts,
                };
                placed.push(PlacedShard {
                    providers: proven_providers(&keys, &session, &stored)?,
                    sha1: stored.sha1,
                    size: stored.size,
                });
            }
            partitions.push(PlacedPartition {
                index,
                size,
                k: scheme.k,
                m: scheme.m,
                shards: placed,
            });
        }
        new.partitions = &partitions;
        let id = self.db.insert_object(ns, &new)?;
        self.db.session_end(&session)?;
        Ok(id)
    }
}
