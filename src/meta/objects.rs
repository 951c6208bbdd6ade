//! Objects: read layouts with grants, and storing the bytes of REST writes
//! through the same codec and providers as the drive's uploads: a body is
//! spooled to disk first, then encoded and stored a window at a time, and
//! recorded where the providers' receipts prove it is.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use futures::StreamExt;
use sha1::{Digest, Sha1};
use tokio::io::AsyncWriteExt;

use super::api::{new_session_id, proven_providers};
use super::placement::{choose, Candidate};
use super::store::{NewObject, Node, Ns, ObjectRow};
use super::{Meta, MetaError, MetaResult};
use crate::codec::erasure::Scheme;
use crate::codec::INLINE_MAX;
use crate::grant::{now_secs, Op};
use crate::proto::*;
use crate::transfer::{encode_partitions, put_shards, PutOutcome, ShardJob, Source};

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
        let (parts, shards) = self.store(|db| db.object_shards(o.id))?;
        let horizon = now_secs().saturating_sub(self.cfg.provider_timeout.as_secs());
        let alive: HashSet<String> = self
            .store(|db| db.providers())?
            .into_iter()
            .filter(|p| p.last_seen >= horizon)
            .map(|p| p.id)
            .collect();
        let mut on_provider: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let partitions = parts
            .into_iter()
            .map(|part| {
                let shards: Vec<ShardLocation> = shards
                    .iter()
                    .filter(|s| s.partition == part.index)
                    .map(|s| {
                        let mut providers: Vec<ProviderInfo> = s
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
                            .collect();
                        providers.sort_by_key(|p| !alive.contains(&p.id));
                        ShardLocation {
                            sha1: s.sha1.clone(),
                            size: s.size,
                            suspect: !providers.iter().any(|p| alive.contains(&p.id)),
                            providers,
                        }
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
            .store(|db| db.fragments(node.id))?
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

    /// Streams a request body to an unnamed file under `DATA/tmp` (0600,
    /// gone when dropped), keeping its first `take` bytes (all without
    /// `take`) and hashing them on the way; a body over `limit` bytes is
    /// refused as soon as it passes the limit.
    pub(super) async fn spool(
        &self,
        body: Body,
        take: Option<u64>,
        limit: u64,
    ) -> MetaResult<Spooled> {
        let dir = spool_dir(&self.cfg.data);
        let file = tokio::task::spawn_blocking(move || tempfile::tempfile_in(dir))
            .await
            .map_err(|e| MetaError::Internal(e.to_string()))?
            .map_err(spool_error)?;
        let mut out = tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::from_std(file));
        let (mut sha1, mut crc) = (Sha1::new(), crc32fast::Hasher::new());
        let (mut received, mut size) = (0u64, 0u64);
        let take = take.unwrap_or(u64::MAX);
        let mut chunks = body.into_data_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk
                .map_err(|e| MetaError::BadRequest(format!("reading the body failed: {e}")))?;
            received += chunk.len() as u64;
            if received > limit {
                return Err(MetaError::BadRequest(format!(
                    "a request body is at most {limit} bytes"
                )));
            }
            let keep = &chunk[..(take - size).min(chunk.len() as u64) as usize];
            sha1.update(keep);
            crc.update(keep);
            out.write_all(keep).await.map_err(spool_error)?;
            size += keep.len() as u64;
        }
        out.flush().await.map_err(spool_error)?;
        Ok(Spooled {
            file: Arc::new(out.into_inner().into_std().await),
            size,
            sha1: hex::encode(sha1.finalize()),
            crc: crc.finalize(),
        })
    }

    /// Stores a spooled body as an object of `ns` (inline, replicated or
    /// erasure-coded by size) and returns its id; known content is reused.
    /// Large bodies are read, encoded and stored a window of partitions at
    /// a time, so memory stays at a few partitions whatever the size.
    pub(super) async fn store_object(&self, ns: Ns, body: &Spooled) -> MetaResult<i64> {
        if let Some(o) = self.point_read(|db| db.find_object(ns, &body.sha1))? {
            return Ok(o.id);
        }
        let size = body.size;
        self.check_quota(ns, size)?;
        let mut new = NewObject {
            sha1: &body.sha1,
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
            let data = body.read_all().await?;
            new.data = Some(&data);
            return Ok(self.store(|db| db.insert_object(ns, &new))?);
        }
        let session = new_session_id();
        let writable = self.writable(&HashSet::new())?;
        let partitions = if size <= self.cfg.replica_max {
            new.scheme = StoreScheme::Replica;
            let data = Bytes::from(body.read_all().await?);
            let copies = self.copies_for(writable.len())?;
            let providers = choose(&writable, copies + self.cfg.spares);
            let mut targets = self.put_targets(&session, providers, |_| vec![body.sha1.clone()])?;
            let spares = HashMap::from([(0, targets.split_off(copies))]);
            let jobs = targets
                .into_iter()
                .map(|target| ShardJob {
                    partition: 0,
                    sha1: body.sha1.clone(),
                    data: data.clone(),
                    target,
                })
                .collect();
            let (outcomes, _) = put_shards(&self.shards, jobs, &spares, 8, &|_| {}).await;
            let shard = StoredShard {
                sha1: body.sha1.clone(),
                size,
                receipts: receipts(outcomes)?,
            };
            vec![PlacedPartition {
                index: 0,
                size,
                k: 1,
                m: 0,
                shards: vec![self.placed_shard(&session, shard)?],
            }]
        } else {
            let scheme = self.scheme_for(writable.len())?;
            new.scheme = StoreScheme::Erasure;
            (new.k, new.m) = (scheme.k, scheme.m);
            self.store_erasure(body, scheme, &writable, &session)
                .await?
        };
        new.partitions = &partitions;
        let id = self.store(|db| db.insert_object(ns, &new))?;
        self.store(|db| db.session_end(&session))?;
        Ok(id)
    }

    /// Where a shard's receipts prove it is.
    fn placed_shard(&self, session: &str, shard: StoredShard) -> MetaResult<PlacedShard> {
        let keys = self.store(|db| db.provider_keys())?;
        Ok(PlacedShard {
            providers: proven_providers(&keys, session, &shard)?,
            sha1: shard.sha1,
            size: shard.size,
        })
    }

    async fn store_erasure(
        &self,
        body: &Spooled,
        scheme: Scheme,
        writable: &[Candidate],
        session: &str,
    ) -> MetaResult<Vec<PlacedPartition>> {
        let src = Source {
            file: body.file.clone(),
            size: body.size,
            partition_size: self.cfg.partition_size,
            cipher: None,
        };
        let count = src.partitions();
        let mut placed = Vec::with_capacity(count as usize);
        for from in (0..count).step_by(WINDOW as usize) {
            let indices: Vec<u64> = (from..(from + WINDOW).min(count)).collect();
            let s = src.clone();
            let encoded =
                tokio::task::spawn_blocking(move || encode_partitions(&s, scheme, &indices))
                    .await
                    .map_err(|e| MetaError::Internal(e.to_string()))?
                    .map_err(spool_error)?;
            let mut jobs = Vec::new();
            let mut spares = HashMap::new();
            for (pm, shards) in &encoded {
                let all: Vec<String> = pm.shards.iter().map(|s| s.sha1.clone()).collect();
                let mut providers = choose(writable, shards.len() + self.cfg.spares);
                let spare = providers.split_off(shards.len().min(providers.len()));
                let targets = self.put_targets(session, providers, |i| vec![all[i].clone()])?;
                spares.insert(pm.index, self.put_targets(session, spare, |_| all.clone())?);
                for ((sm, data), target) in pm.shards.iter().zip(shards).zip(targets) {
                    jobs.push(ShardJob {
                        partition: pm.index,
                        sha1: sm.sha1.clone(),
                        data: data.clone(),
                        target,
                    });
                }
            }
            let (outcomes, _) = put_shards(&self.shards, jobs, &spares, 12, &|_| {}).await;
            let mut receipts = receipts(outcomes)?.into_iter();
            for (pm, _) in encoded {
                let shards = pm
                    .shards
                    .into_iter()
                    .map(|s| {
                        self.placed_shard(
                            session,
                            StoredShard {
                                sha1: s.sha1,
                                size: s.size,
                                receipts: receipts.next().into_iter().collect(),
                            },
                        )
                    })
                    .collect::<MetaResult<Vec<_>>>()?;
                placed.push(PlacedPartition {
                    index: pm.index,
                    size: pm.size,
                    k: pm.k,
                    m: pm.m,
                    shards,
                });
            }
        }
        Ok(placed)
    }
}

/// Every job's receipt, or the store fails: the REST client may try again.
fn receipts(outcomes: Vec<PutOutcome>) -> MetaResult<Vec<String>> {
    outcomes
        .into_iter()
        .map(|o| match o {
            PutOutcome::Stored(r) => Ok(r),
            PutOutcome::Failed(e) => {
                Err(MetaError::Unavailable(format!("storing data failed: {e}")))
            }
        })
        .collect()
}

/// Partitions encoded and stored at a time by `store_object`.
const WINDOW: u64 = 4;

/// A request body on disk, with the size, SHA-1 and CRC32 of its bytes.
pub(super) struct Spooled {
    file: Arc<std::fs::File>,
    pub size: u64,
    pub sha1: String,
    pub crc: u32,
}

impl Spooled {
    /// The whole body, for the small ones kept inline or replicated.
    async fn read_all(&self) -> MetaResult<Vec<u8>> {
        let (file, size) = (self.file.clone(), self.size as usize);
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; size];
            file.read_exact_at(&mut buf, 0).map(|()| buf)
        })
        .await
        .map_err(|e| MetaError::Internal(e.to_string()))?
        .map_err(spool_error)
    }
}

fn spool_dir(data: &Path) -> PathBuf {
    data.join("tmp")
}

/// Makes `DATA/tmp` (0700) and removes what a crash left there.
pub(super) fn clean_spool(data: &Path) -> std::io::Result<()> {
    let dir = spool_dir(data);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::DirBuilder::new().mode(0o700).create(&dir)
}

fn spool_error(e: std::io::Error) -> MetaError {
    MetaError::Internal(format!("spooling the body failed: {e}"))
}
