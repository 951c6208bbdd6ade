//! The client side of the three-step upload: encrypt → SHA-1 →
//! CheckFileExist (inline or dedup ends here) → erasure code or replicas →
//! UploadFilePrepare → shards to providers → UploadFileDone.

use std::collections::{HashMap, HashSet};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use sha1::{Digest, Sha1};

use super::put::{put_shards, PutOutcome, ShardJob};
use super::{Progress, TransferError};
use crate::client::meta::{ClientError, MetaClient};
use crate::client::provider::ShardClient;
use crate::codec::crypt::{AccountKey, Derivation, PartitionCipher};
use crate::codec::erasure::Scheme;
use crate::codec::{partition_count, sha1_hex, shard_id, stored_len};
use crate::lock;
use crate::proto::*;

#[derive(Debug, Clone)]
pub struct UploadOptions {
    pub attrs: FileAttrs,
    /// Commit to this node id rather than to the remote path.
    pub node: Option<i64>,
    /// Commit only if the file is still at this version.
    pub base_ver: Option<u64>,
    /// Make the file at the commit (a small one: inline).
    pub create: Option<NewFile>,
    /// Shard PUTs in flight at once.
    pub parallel: usize,
    /// Partitions encoded per UploadFilePrepare round.
    pub window: u64,
    /// Partition objects being stored by this client's uploads.
    pub in_flight: InFlight,
}

impl Default for UploadOptions {
    fn default() -> Self {
        UploadOptions {
            attrs: FileAttrs::default(),
            node: None,
            base_ver: None,
            create: None,
            parallel: 12,
            window: 4,
            in_flight: InFlight::default(),
        }
    }
}

/// A local file read partition by partition, encrypted when a cipher is set.
#[derive(Clone)]
pub(crate) struct Source {
    pub(crate) file: Arc<std::fs::File>,
    pub(crate) size: u64,
    pub(crate) partition_size: u64,
    pub(crate) cipher: Option<PartitionCipher>,
}

impl Source {
    pub(crate) fn partitions(&self) -> u64 {
        partition_count(self.size, self.partition_size)
    }

    /// Stored bytes of partition `index`.
    fn stored(&self, index: u64) -> std::io::Result<Vec<u8>> {
        let start = index * self.partition_size;
        let len = self.size.saturating_sub(start).min(self.partition_size);
        let mut buf = read_at(&self.file, start, len)?;
        if let Some(c) = &self.cipher {
            c.encrypt_in_place(index, &mut buf);
        }
        Ok(buf)
    }
}

/// `len` bytes of `file` at `offset`, in a buffer with room for the
/// encryption's tag (growing it would copy the whole partition), read into
/// its spare capacity: zeroing it first was a pass of its own.
fn read_at(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let len = len as usize;
    let mut buf = Vec::with_capacity(len + crate::codec::crypt::TAG_LEN);
    while buf.len() < len {
        let want = len - buf.len();
        let spare = &mut buf.spare_capacity_mut()[..want];
        // SAFETY: pread writes at most `spare.len()` bytes into memory this
        // Vec owns; `set_len` then covers only the bytes it reported.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                spare.len(),
                (offset + buf.len() as u64) as libc::off_t,
            )
        };
        match n {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n if n < 0 => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            // SAFETY: pread initialised these `n` bytes past the length.
            n => unsafe { buf.set_len(buf.len() + n as usize) },
        }
    }
    Ok(buf)
}

fn file_key(
    file: &std::fs::File,
    size: u64,
    partition_size: u64,
    acct: &AccountKey,
    d: Derivation,
) -> std::io::Result<crate::codec::crypt::FileKey> {
    let mut h = acct.key_hasher(partition_size, d);
    // Zeroed at its full size: a small file's key takes a small buffer.
    let mut buf = vec![0u8; size.min(1 << 20) as usize];
    let mut at = 0;
    while at < size {
        let n = (size - at).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], at)?;
        h.update(&buf[..n]);
        at += n as u64;
    }
    Ok(h.finish())
}

/// SHA-1 and size of the stored object, plus its bytes when small enough to
/// travel inline.
fn hash_object(src: &Source, inline_max: u64) -> std::io::Result<(String, u64, Option<Vec<u8>>)> {
    if src.partitions() == 1 {
        let data = src.stored(0)?;
        let inline = (src.size <= inline_max).then(|| data.clone());
        return Ok((sha1_hex(&data), data.len() as u64, inline));
    }
    // One thread reads and encrypts ahead while this one hashes: SHA-1 of
    // the whole object is sequential, the encryption need not wait for it.
    let (tx, rx) = std::sync::mpsc::sync_channel::<std::io::Result<Vec<u8>>>(2);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for i in 0..src.partitions() {
                if tx.send(src.stored(i)).is_err() {
                    return;
                }
            }
        });
        let mut h = Sha1::new();
        let mut size = 0;
        let mut inline = None;
        for data in rx {
            let data = data?;
            h.update(&data);
            size += data.len() as u64;
            if src.size <= inline_max {
                inline = Some(data);
            }
        }
        Ok((hex::encode(h.finalize()), size, inline))
    })
}

/// `f` over `[from, to)` on every core, results in index order.
fn parallel_map<T: Send>(
    from: u64,
    to: u64,
    f: impl Fn(u64) -> std::io::Result<T> + Sync,
) -> std::io::Result<Vec<T>> {
    let threads =
        (std::thread::available_parallelism().map_or(1, |n| n.get()) as u64).min(to - from);
    if threads <= 1 {
        return (from..to).map(f).collect();
    }
    let f = &f;
    let mut parts: Vec<(u64, T)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (from + t..to)
                        .step_by(threads as usize)
                        .map(|i| Ok((i, f(i)?)))
                        .collect::<std::io::Result<Vec<_>>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("encoder thread panicked")))
            })
            .collect::<std::io::Result<Vec<_>>>()
    })?
    .into_iter()
    .flatten()
    .collect();
    parts.sort_by_key(|(i, _)| *i);
    Ok(parts.into_iter().map(|(_, t)| t).collect())
}

/// A partition ready to store: its metadata and shard bytes.
pub(crate) type Encoded = (PartitionMeta, Vec<Bytes>);

/// Encodes the partitions `indices` of `src` with `scheme`.
pub(crate) fn encode_partitions(
    src: &Source,
    scheme: Scheme,
    indices: &[u64],
) -> std::io::Result<Vec<Encoded>> {
    encode_with(|i| Ok(Bytes::from(src.stored(i)?)), scheme, indices)
}

/// Encodes the partitions `indices`, whose stored bytes `stored` gives,
/// with `scheme`, on every core.
fn encode_with(
    stored: impl Fn(u64) -> std::io::Result<Bytes> + Sync,
    scheme: Scheme,
    indices: &[u64],
) -> std::io::Result<Vec<Encoded>> {
    parallel_map(0, indices.len() as u64, |at| {
        let i = indices[at as usize];
        let data = stored(i)?;
        let size = data.len() as u64;
        let shards = scheme.encode(data);
        let meta = PartitionMeta {
            index: i,
            size,
            k: scheme.k,
            m: scheme.m,
            shards: shards
                .iter()
                .map(|s| ShardMeta {
                    sha1: shard_id(s),
                    size: s.len() as u64,
                })
                .collect(),
        };
        Ok((meta, shards))
    })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, TransferError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .map_err(TransferError::Io)
}

/// `f`, reading and hashing `size` bytes: here when they are few (the hop
/// to the blocking pool and back costs more than the work), else there.
async fn blocking_unless_small<T: Send + 'static>(
    size: u64,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, TransferError> {
    if size <= crate::codec::INLINE_MAX {
        return f().map_err(TransferError::Io);
    }
    blocking(f).await
}

/// Uploads the local file `local` as the new version of `remote`; returns
/// the new VER_NO. The version becomes visible only when every shard is
/// stored. A file of one partition is one object (inline, replicated or
/// erasure-coded by size); a larger one, one object per partition.
#[allow(clippy::too_many_arguments)]
pub async fn upload_file(
    meta: &MetaClient,
    shards: &ShardClient,
    acct: Option<&AccountKey>,
    local: &Path,
    remote: &str,
    opts: &UploadOptions,
    progress: &Progress,
) -> Result<Committed, TransferError> {
    let started = std::time::Instant::now();
    let policy = meta.policy().await?;
    if policy.partition_size == 0 {
        return Err(TransferError::Layout(
            "server announced a zero partition size".into(),
        ));
    }
    let file = Arc::new(std::fs::File::open(local)?);
    let size = file.metadata()?.len();
    if size > policy.partition_size {
        // Counted in the upload metrics by `upload_partitions`.
        let spans = spans_of(size, policy.partition_size);
        let ver_no =
            upload_as_partitions(meta, shards, acct, file, &spans, remote, opts, progress).await?;
        tracing::info!(remote, size, total = ?started.elapsed(), "uploaded");
        return Ok(Committed {
            ver_no,
            dir_change: None,
        });
    }
    let recorded = crate::metrics::Transfer::start(&crate::metrics::UPLOAD);
    let (cipher, key) = match acct {
        Some(a) => {
            let (f, a2) = (file.clone(), a.clone());
            let ps = policy.partition_size;
            let k = blocking_unless_small(size, move || {
                file_key(&f, size, ps, &a2, Derivation::Blake3)
            })
            .await?;
            (Some(PartitionCipher::new(&k)), Some(a.wrap(&k)))
        }
        None => (None, None),
    };
    let src = Source {
        file,
        size,
        partition_size: policy.partition_size,
        cipher,
    };
    let s = src.clone();
    let inline_max = policy.inline_max;
    let keyed = started.elapsed();
    let (object_sha1, object_size, inline) =
        blocking_unless_small(size, move || hash_object(&s, inline_max)).await?;
    let hashed = started.elapsed();
    progress.start(remote, object_size);
    let check = CheckRequest {
        node: opts.node,
        path: remote.to_string(),
        file_size: size,
        object_sha1: object_sha1.clone(),
        object_size,
        partition_size: policy.partition_size,
        key,
        data: inline.map(|d| B64.encode(d)),
        attrs: opts.attrs.clone(),
        base_ver: opts.base_ver,
        create: opts.create.clone(),
    };
    let mut dir_change = None;
    let ver_no = match meta.check(&check).await? {
        CheckResponse::Done {
            ver_no,
            dir_change: made,
        } => {
            dir_change = made;
            ver_no
        }
        CheckResponse::Replica {
            session,
            copies,
            targets,
        } => {
            let data = Bytes::from(
                blocking({
                    let s = src.clone();
                    move || s.stored(0)
                })
                .await?,
            );
            if data.len() as u64 != object_size {
                return Err(TransferError::Layout(
                    "a replicated object must be one partition".into(),
                ));
            }
            progress.start(remote, object_size * copies as u64);
            let (chosen, spares) = targets.split_at(copies.min(targets.len()));
            let jobs = chosen
                .iter()
                .map(|t| ShardJob {
                    partition: 0,
                    sha1: object_sha1.clone(),
                    data: data.clone(),
                    target: t.clone(),
                })
                .collect();
            let spares = HashMap::from([(0, spares.to_vec())]);
            let (outcomes, _) = put_shards(shards, jobs, &spares, opts.parallel, &|n| {
                progress.advance(remote, n)
            })
            .await;
            let receipts = outcomes
                .into_iter()
                .map(|o| match o {
                    PutOutcome::Stored(r) => Ok(r),
                    PutOutcome::Failed(last) => Err(TransferError::NoProvider {
                        sha1: object_sha1.clone(),
                        last,
                    }),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let partitions = vec![StoredPartition {
                index: 0,
                size: object_size,
                k: 1,
                m: 0,
                shards: vec![StoredShard {
                    sha1: object_sha1,
                    size: object_size,
                    receipts,
                }],
            }];
            meta.done(&DoneRequest {
                session,
                partitions,
            })
            .await?
            .ver_no
        }
        CheckResponse::Erasure {
            session,
            k,
            m,
            partition_size,
        } => {
            if partition_size != policy.partition_size {
                return Err(TransferError::Layout(
                    "server changed the partition size mid-upload".into(),
                ));
            }
            let scheme = Scheme::new(k, m).map_err(|e| TransferError::Layout(e.to_string()))?;
            let total: u64 = (0..src.partitions())
                .map(|i| {
                    let plain = size.saturating_sub(i * partition_size).min(partition_size);
                    scheme.shard_len(stored_len(plain, src.cipher.is_some()) as usize) as u64
                        * (k + m) as u64
                })
                .sum();
            progress.start(remote, total);
            let partitions =
                upload_erasure(meta, shards, &src, scheme, &session, opts, progress, remote)
                    .await?;
            meta.done(&DoneRequest {
                session,
                partitions,
            })
            .await?
            .ver_no
        }
    };
    progress.finish(remote);
    recorded.done(size);
    tracing::info!(remote, size, ?keyed, ?hashed, total = ?started.elapsed(), "uploaded");
    Ok(Committed { ver_no, dir_change })
}

/// A version an upload committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    pub ver_no: u64,
    /// The change to the file's directory, when the upload made the file.
    pub dir_change: Option<DirChange>,
}

/// Stores `file`, cut into `spans`, as partition objects and commits them
/// as the new version of `remote` (or of `opts.node`), with the SHA-1 of
/// their stored bytes as the file's hash.
#[allow(clippy::too_many_arguments)]
async fn upload_as_partitions(
    meta: &MetaClient,
    shards: &ShardClient,
    acct: Option<&AccountKey>,
    file: Arc<std::fs::File>,
    spans: &[PartitionSpan],
    remote: &str,
    opts: &UploadOptions,
    progress: &Progress,
) -> Result<u64, TransferError> {
    let size = spans.last().map_or(0, |s| s.offset + s.len);
    let hash = Mutex::new(StoredHash::default());
    let fragments = upload_partitions(
        meta,
        shards,
        acct,
        file.clone(),
        spans,
        opts,
        progress,
        remote,
        &|_, stored| lock(&hash).update(stored),
    )
    .await?;
    let mut commit = CommitRequest {
        node: opts.node,
        path: if opts.node.is_some() {
            String::new()
        } else {
            remote.to_string()
        },
        size,
        fragments,
        sha1: Some(lock(&hash).clone().finish()),
        attrs: opts.attrs.clone(),
        base_ver: opts.base_ver,
    };
    let mut tries = 0;
    let ver_no = loop {
        match meta.commit(&commit).await {
            // Partitions collected before the commit (a grace shorter
            // than the upload): stored again, from the same file.
            Err(ClientError::Missing(gone)) if tries < 2 => {
                tries += 1;
                let again: Vec<PartitionSpan> = spans
                    .iter()
                    .zip(&commit.fragments)
                    .filter(|(_, f)| gone.contains(&f.object))
                    .map(|(s, _)| *s)
                    .collect();
                let stored = upload_partitions(
                    meta,
                    shards,
                    acct,
                    file.clone(),
                    &again,
                    opts,
                    progress,
                    remote,
                    &|_, _| {},
                )
                .await?;
                for f in stored {
                    if let Some(old) = commit.fragments.iter_mut().find(|o| o.offset == f.offset) {
                        *old = f;
                    }
                }
            }
            r => break r?.ver_no,
        }
    };
    progress.finish(remote);
    Ok(ver_no)
}

/// The partitions of a file of `size` bytes.
fn spans_of(size: u64, partition_size: u64) -> Vec<PartitionSpan> {
    (0..size.div_ceil(partition_size))
        .map(|i| PartitionSpan {
            offset: i * partition_size,
            len: (size - i * partition_size).min(partition_size),
        })
        .collect()
}

/// The SHA-1 of a file's stored bytes, its partitions' in order: the
/// file's hash (`filehash`) once every partition is in.
#[derive(Clone, Default)]
pub struct StoredHash {
    sha1: Sha1,
}

impl StoredHash {
    /// Adds the next partition's stored bytes.
    pub fn update(&mut self, stored: &[u8]) {
        self.sha1.update(stored);
    }

    pub fn finish(self) -> String {
        hex::encode(self.sha1.finalize())
    }
}

/// Called with each partition's offset and stored bytes when it is sealed,
/// in the order of its spans.
pub type OnSealed<'a> = &'a (dyn Fn(u64, &Bytes) + Send + Sync);

/// How many times one partition is prepared again after its providers
/// failed before the upload gives up.
const PLACEMENT_ROUNDS: usize = 4;

/// A job encoding partitions (by index) with a scheme, in the background.
type EncodeJob = tokio::task::JoinHandle<std::io::Result<Vec<Encoded>>>;

async fn joined(job: EncodeJob) -> Result<Vec<Encoded>, TransferError> {
    Ok(job
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??)
}

/// Encodes, prepares and stores the partitions window by window; the next
/// window is encoded while the current one is being stored.
#[allow(clippy::too_many_arguments)]
async fn upload_erasure(
    meta: &MetaClient,
    shards: &ShardClient,
    src: &Source,
    first: Scheme,
    session: &str,
    opts: &UploadOptions,
    progress: &Progress,
    remote: &str,
) -> Result<Vec<StoredPartition>, TransferError> {
    let count = src.partitions();
    let window = opts.window.max(1);
    let encode = |scheme: Scheme, indices: Vec<u64>| {
        let s = src.clone();
        tokio::task::spawn_blocking(move || encode_partitions(&s, scheme, &indices))
    };
    let mut placing = Placing {
        meta,
        shards,
        session,
        scheme: first,
        avoid: HashSet::new(),
        opts,
        progress,
        remote,
    };
    let mut stored = Vec::with_capacity(count as usize);
    let mut next = Some(encode(placing.scheme, (0..window.min(count)).collect()));
    let mut from = 0;
    while let Some(job) = next.take() {
        let todo = joined(job).await?;
        from += window;
        if from < count {
            next = Some(encode(
                placing.scheme,
                (from..(from + window).min(count)).collect(),
            ));
        }
        stored.extend(placing.store(todo, &encode).await?);
    }
    stored.sort_by_key(|p| p.index);
    Ok(stored)
}

/// The placement of one session's partitions on providers, with what it
/// learnt so far: the scheme the server asks for and providers to avoid.
struct Placing<'a> {
    meta: &'a MetaClient,
    shards: &'a ShardClient,
    session: &'a str,
    scheme: Scheme,
    avoid: HashSet<String>,
    opts: &'a UploadOptions,
    progress: &'a Progress,
    remote: &'a str,
}

impl Placing<'_> {
    /// Prepares and stores encoded partitions. A partition whose providers
    /// fail is prepared again on others, encoded again (`encode`) when the
    /// server asks for another scheme (fewer providers left); it never
    /// commits with fewer shards than its scheme.
    async fn store(
        &mut self,
        mut todo: Vec<Encoded>,
        encode: &impl Fn(Scheme, Vec<u64>) -> EncodeJob,
    ) -> Result<Vec<StoredPartition>, TransferError> {
        let mut stored = Vec::with_capacity(todo.len());
        for round in 0.. {
            if todo.is_empty() {
                break;
            }
            if round == PLACEMENT_ROUNDS {
                return Err(TransferError::Layout(format!(
                    "partition {} could not be placed on distinct providers",
                    todo[0].0.index
                )));
            }
            // Providers that failed or stalled for this client lately too.
            self.avoid.extend(self.shards.suspects());
            let req = PrepareRequest {
                session: self.session.to_string(),
                partitions: todo.iter().map(|(m, _)| m.clone()).collect(),
                avoid: self.avoid.iter().cloned().collect(),
            };
            let prepared = self.meta.prepare(&req).await?;
            if prepared.partitions.len() != todo.len() {
                return Err(TransferError::Layout(
                    "prepare answered for other partitions".into(),
                ));
            }
            let mut again = Vec::new();
            let mut jobs = Vec::new();
            let mut spares = HashMap::new();
            let mut placed = Vec::new();
            for ((pm, data), pp) in todo.into_iter().zip(prepared.partitions) {
                if pp.index != pm.index {
                    return Err(TransferError::Layout(
                        "prepare answered out of order".into(),
                    ));
                }
                if (pp.k, pp.m) != (pm.k, pm.m) {
                    self.scheme = Scheme::new(pp.k, pp.m)
                        .map_err(|e| TransferError::Layout(e.to_string()))?;
                    again.push(pm.index);
                    continue;
                }
                if pp.targets.len() != data.len() {
                    return Err(TransferError::Layout(format!(
                        "prepare placed partition {} on {} providers, not {}",
                        pm.index,
                        pp.targets.len(),
                        data.len()
                    )));
                }
                for ((sm, bytes), target) in pm.shards.iter().zip(&data).zip(pp.targets) {
                    jobs.push(ShardJob {
                        partition: pm.index,
                        sha1: sm.sha1.clone(),
                        data: bytes.clone(),
                        target,
                    });
                }
                spares.insert(pm.index, pp.spares);
                placed.push((pm, data));
            }
            let (outcomes, failed) =
                put_shards(self.shards, jobs, &spares, self.opts.parallel, &|n| {
                    self.progress.advance(self.remote, n)
                })
                .await;
            self.avoid.extend(failed);
            let mut outcomes = outcomes.into_iter();
            let mut retry = Vec::new();
            for (pm, data) in placed {
                // Taken whole first: collecting into Option stops at the first None.
                let results: Vec<PutOutcome> = outcomes.by_ref().take(pm.shards.len()).collect();
                let receipts: Option<Vec<String>> = results
                    .into_iter()
                    .map(|o| match o {
                        PutOutcome::Stored(r) => Some(r),
                        PutOutcome::Failed(_) => None,
                    })
                    .collect();
                let Some(receipts) = receipts else {
                    retry.push((pm, data));
                    continue;
                };
                let shards = pm
                    .shards
                    .into_iter()
                    .zip(receipts)
                    .map(|(s, r)| StoredShard {
                        sha1: s.sha1,
                        size: s.size,
                        receipts: vec![r],
                    })
                    .collect();
                stored.push(StoredPartition {
                    index: pm.index,
                    size: pm.size,
                    k: pm.k,
                    m: pm.m,
                    shards,
                });
            }
            if !retry.is_empty() {
                tracing::warn!(partitions = retry.len(), avoid = ?self.avoid, "placing partitions again");
            }
            todo = retry;
            if !again.is_empty() {
                todo.extend(joined(encode(self.scheme, again)).await?);
            }
        }
        Ok(stored)
    }
}

/// A partition of a local file, `[offset, offset + len)`, to store as its
/// own object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionSpan {
    pub offset: u64,
    pub len: u64,
}

/// A partition read and sealed: its fragment (object id, wrapped key) and
/// stored bytes.
struct Sealed {
    fragment: CommitFragment,
    stored: Bytes,
}

/// Reads one partition and encrypts it under its own convergent key (the
/// account key over partition size and plaintext, derived by `d`), nonce 0:
/// its stored bytes, and the key wrapped for the account.
fn encrypt_partition(
    file: &std::fs::File,
    span: PartitionSpan,
    partition_size: u64,
    acct: Option<&AccountKey>,
    d: Derivation,
) -> std::io::Result<(Vec<u8>, Option<String>)> {
    let mut buf = read_at(file, span.offset, span.len)?;
    let key = acct.map(|a| {
        let mut h = a.key_hasher(partition_size, d);
        h.update(&buf);
        let k = h.finish();
        PartitionCipher::new(&k).encrypt_in_place(0, &mut buf);
        a.wrap(&k)
    });
    Ok((buf, key))
}

/// Reads and seals one partition: encrypted (`encrypt_partition`) and
/// named by the SHA-1 of its stored bytes.
fn seal(
    file: &std::fs::File,
    span: PartitionSpan,
    partition_size: u64,
    acct: Option<&AccountKey>,
) -> std::io::Result<Sealed> {
    let (buf, key) = encrypt_partition(file, span, partition_size, acct, Derivation::Blake3)?;
    Ok(Sealed {
        fragment: CommitFragment {
            offset: span.offset,
            length: span.len,
            object: sha1_hex(&buf),
            key,
        },
        stored: Bytes::from(buf),
    })
}

/// Stores partitions of the local file `file` as objects of their own,
/// window by window (check which are stored, prepare and PUT the others,
/// done), sealing the next window while the current one is stored.
/// Returns their fragments, in the order of `spans`, for a `commit`;
/// `on_sealed` sees each one's stored bytes first, in that order.
/// The stored bytes count under `remote` in `progress`, a transfer that
/// grows with each call until the caller's commit finishes it.
#[allow(clippy::too_many_arguments)]
pub async fn upload_partitions(
    meta: &MetaClient,
    shards: &ShardClient,
    acct: Option<&AccountKey>,
    file: Arc<std::fs::File>,
    spans: &[PartitionSpan],
    opts: &UploadOptions,
    progress: &Progress,
    remote: &str,
    on_sealed: OnSealed<'_>,
) -> Result<Vec<CommitFragment>, TransferError> {
    let policy = meta.policy().await?;
    let partition_size = policy.partition_size;
    if spans.iter().any(|s| s.len == 0 || s.len > partition_size) {
        return Err(TransferError::Layout(format!(
            "a partition holds 1 to {partition_size} bytes"
        )));
    }
    let recorded = crate::metrics::Transfer::start(&crate::metrics::UPLOAD);
    let total = spans.iter().map(|s| stored_len(s.len, acct.is_some()));
    progress.grow(remote, total.sum());
    let window = (opts.window.max(1) as usize).min(MAX_WINDOW);
    let seal_window = |from: usize| {
        let (file, acct) = (file.clone(), acct.cloned());
        let spans = spans[from..(from + window).min(spans.len())].to_vec();
        tokio::task::spawn_blocking(move || {
            let at = |i: u64| seal(&file, spans[i as usize], partition_size, acct.as_ref());
            parallel_map(0, spans.len() as u64, at)
        })
    };
    let mut fragments = Vec::with_capacity(spans.len());
    let mut next = (!spans.is_empty()).then(|| seal_window(0));
    let mut from = 0;
    while let Some(job) = next.take() {
        let sealed = job
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
        from += window;
        if from < spans.len() {
            next = Some(seal_window(from));
        }
        for s in &sealed {
            on_sealed(s.fragment.offset, &s.stored);
        }
        // A partition this client is storing already (again in this
        // window, or in another upload) is stored once; here it is only
        // named, and a commit that names it before it is stored is refused
        // (MISSING_OBJECTS) rather than made.
        let claim = opts
            .in_flight
            .claim(sealed.iter().map(|s| s.fragment.object.clone()).collect());
        let mine: Vec<&Sealed> = sealed
            .iter()
            .zip(&claim.mine)
            .filter_map(|(s, &mine)| mine.then_some(s))
            .collect();
        if !mine.is_empty() {
            let encrypted = acct.is_some();
            store_window(meta, shards, &policy, encrypted, &mine, opts, progress).await?;
        }
        drop(claim);
        progress.advance(remote, sealed.iter().map(|s| s.stored.len() as u64).sum());
        fragments.extend(sealed.into_iter().map(|s| s.fragment));
    }
    recorded.done(spans.iter().map(|s| s.len).sum());
    Ok(fragments)
}

/// Stores sealed partitions not stored yet: asks which the account has
/// (`partitions/check`), places and PUTs the others, records them
/// (`partitions/done`).
async fn store_window(
    meta: &MetaClient,
    shards: &ShardClient,
    policy: &Policy,
    encrypted: bool,
    sealed: &[&Sealed],
    opts: &UploadOptions,
    progress: &Progress,
) -> Result<(), TransferError> {
    let check = PartitionsCheckRequest {
        partition_size: policy.partition_size,
        encrypted,
        partitions: sealed
            .iter()
            .map(|s| PartitionCheck {
                sha1: s.fragment.object.clone(),
                plain_size: s.fragment.length,
                stored_size: s.stored.len() as u64,
                data: (s.fragment.length <= policy.inline_max).then(|| B64.encode(&s.stored)),
            })
            .collect(),
    };
    let answer = meta.partitions_check(&check).await?;
    if answer.stored.len() != sealed.len() {
        return Err(TransferError::Layout(
            "check answered for other partitions".into(),
        ));
    }
    let Some(session) = &answer.session else {
        return Ok(());
    };
    let scheme =
        Scheme::new(answer.k, answer.m).map_err(|e| TransferError::Layout(e.to_string()))?;
    let missing: Vec<u64> = (0..sealed.len() as u64)
        .filter(|&i| !answer.stored[i as usize])
        .collect();
    let data: Vec<Bytes> = sealed.iter().map(|s| s.stored.clone()).collect();
    let encode = |scheme: Scheme, indices: Vec<u64>| {
        let data = data.clone();
        tokio::task::spawn_blocking(move || {
            encode_with(|i| Ok(data[i as usize].clone()), scheme, &indices)
        })
    };
    let mut placing = Placing {
        meta,
        shards,
        session,
        scheme,
        avoid: HashSet::new(),
        opts,
        progress,
        // Counted per partition by the caller, not per shard.
        remote: "",
    };
    let todo = joined(encode(scheme, missing)).await?;
    let partitions = placing.store(todo, &encode).await?;
    meta.partitions_done(&DoneRequest {
        session: session.clone(),
        partitions,
    })
    .await?;
    Ok(())
}

/// Objects (by SHA-1) some upload of this client is storing now, shared by
/// the clones of one `UploadOptions`.
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<Mutex<HashSet<String>>>);

/// Objects claimed from an `InFlight` set, given back when dropped.
struct Claim<'a> {
    set: &'a InFlight,
    /// For each object asked for, whether this claim holds it (false: it
    /// was in flight already, or asked for earlier in the same list).
    mine: Vec<bool>,
    held: Vec<String>,
}

impl InFlight {
    fn claim(&self, sha1s: Vec<String>) -> Claim<'_> {
        let mut set = lock(&self.0);
        let mut held = Vec::new();
        let mine = sha1s
            .into_iter()
            .map(|s| {
                let new = set.insert(s.clone());
                if new {
                    held.push(s);
                }
                new
            })
            .collect();
        Claim {
            set: self,
            mine,
            held,
        }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut set = lock(&self.set.0);
        for s in &self.held {
            set.remove(s);
        }
    }
}

/// Most partitions sealed and checked at once.
const MAX_WINDOW: usize = 64;

/// Whether `hash` is the content hash the store lists for `local` once
/// uploaded (with `acct` when encrypted): the SHA-1 of the stored bytes of
/// what `upload_file` would store, or of nothing for an empty file; or of
/// what it stored before: encrypted under keys derived by HMAC-SHA256, or,
/// for a file of several partitions stored as one object before files
/// were partition objects, that object's SHA-1. Reads the file once when
/// it matches what this client stores, up to three times otherwise; sends
/// nothing but a policy request.
pub async fn content_matches(
    meta: &MetaClient,
    acct: Option<&AccountKey>,
    local: &Path,
    hash: &str,
) -> Result<bool, TransferError> {
    let policy = meta.policy().await?;
    let file = Arc::new(std::fs::File::open(local)?);
    let size = file.metadata()?.len();
    if size == 0 || policy.partition_size == 0 {
        return Ok(hash == sha1_hex(b""));
    }
    let ps = policy.partition_size;
    let derivations = match acct {
        Some(_) => &[Derivation::Blake3, Derivation::HmacSha256][..],
        None => &[Derivation::Blake3],
    };
    for &d in derivations {
        let (f, a) = (file.clone(), acct.cloned());
        if blocking(move || stored_hash(&f, size, ps, a.as_ref(), d)).await? == hash {
            return Ok(true);
        }
    }
    if size <= ps {
        return Ok(false);
    }
    // Objects of several partitions are older than BLAKE3 file keys.
    let cipher = match acct {
        Some(a) => {
            let (f, a2) = (file.clone(), a.clone());
            let k = blocking(move || file_key(&f, size, ps, &a2, Derivation::HmacSha256)).await?;
            Some(PartitionCipher::new(&k))
        }
        None => None,
    };
    let src = Source {
        file,
        size,
        partition_size: ps,
        cipher,
    };
    Ok(blocking(move || hash_object(&src, 0)).await?.0 == hash)
}

/// The SHA-1 of the stored bytes of `file`'s partitions, sealed as
/// `upload_partitions` seals them (with keys derived by `d`), a window at a
/// time on every core.
fn stored_hash(
    file: &std::fs::File,
    size: u64,
    partition_size: u64,
    acct: Option<&AccountKey>,
    d: Derivation,
) -> std::io::Result<String> {
    let spans = spans_of(size, partition_size);
    let mut hash = StoredHash::default();
    for window in spans.chunks(MAX_WINDOW) {
        let stored = parallel_map(0, window.len() as u64, |i| {
            encrypt_partition(file, window[i as usize], partition_size, acct, d)
        })?;
        for (bytes, _) in stored {
            hash.update(&bytes);
        }
    }
    Ok(hash.finish())
}
