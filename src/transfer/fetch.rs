//! Shards from providers back to plaintext: any k of a partition's k+m
//! shards, data shards first; a missing, failing or corrupt shard is replaced
//! by a parity shard, and a stalled one (no byte for a while) is hedged with
//! an extra fetch; one that is merely slow is waited for.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{stream, StreamExt, TryStreamExt};

use super::{Progress, TransferError};
use crate::client::meta::MetaClient;
use crate::client::provider::{Moved, ShardClient, ShardError};
use crate::codec::crypt::{AccountKey, PartitionCipher};
use crate::codec::erasure::{ErasureError, Scheme};
use crate::proto::{
    FileLayout, FragmentLayout, ObjectLayout, PartitionLayout, ProviderInfo, ShardLocation,
    StoreScheme,
};

/// Partitions fetched at once by a whole-file read.
const PARALLEL_PARTITIONS: usize = 4;

/// Whether a shard is best asked for last: the metadata server has not
/// heard from its providers lately, or each failed or stalled here.
fn is_suspect(client: &ShardClient, shard: &ShardLocation) -> bool {
    shard.suspect || shard.providers.iter().all(|p| client.is_suspect(&p.id))
}

/// When a hedging check is next due: when the request that moved bytes
/// longest ago (`idle`, under the `bound`) would reach it.
fn next_check(idle: Option<Duration>, bound: Duration) -> tokio::time::Instant {
    tokio::time::Instant::now() + idle.map_or(bound, |idle| bound - idle)
}

/// Partition buffers the cache let go of, kept for the next fetches: a
/// sequential read cycles through a few of them instead of faulting fresh
/// pages in (jemalloc hands freed pages back to the kernel within seconds;
/// those faults were a sixth of the mount's CPU on a cold read).
static POOL: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
/// Idle bytes the pool keeps at most.
const POOL_BYTES: usize = 64 << 20;
/// Smaller buffers are the allocator's to reuse.
const POOLED_MIN: usize = 1 << 20;

fn pool() -> std::sync::MutexGuard<'static, Vec<Vec<u8>>> {
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A partition's bytes: the first `len` of `buf`, which goes back to the
/// pool when the last `Bytes` of it is dropped.
struct Pooled {
    buf: Vec<u8>,
    len: usize,
}

impl Pooled {
    /// `len` bytes to fill, in a pooled buffer if one fits: one barely
    /// larger, as the cache counts a block's length, not its buffer's.
    fn new(len: usize) -> Self {
        let reused = (len >= POOLED_MIN)
            .then(|| {
                let mut pool = pool();
                let fits = pool
                    .iter()
                    .position(|b| b.capacity() >= len && b.capacity() - len <= len / 8)?;
                Some(pool.swap_remove(fits))
            })
            .flatten();
        let mut buf = reused.unwrap_or_default();
        if buf.len() < len {
            buf.resize(len, 0);
        }
        Pooled { buf, len }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf[..self.len]
    }
}

impl From<Vec<u8>> for Pooled {
    fn from(buf: Vec<u8>) -> Self {
        Pooled {
            len: buf.len(),
            buf,
        }
    }
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        if buf.capacity() < POOLED_MIN {
            return;
        }
        let mut pool = pool();
        if pool.iter().map(Vec::capacity).sum::<usize>() + buf.capacity() <= POOL_BYTES {
            pool.push(buf);
        }
    }
}

/// One shard from the first of its providers that serves it intact, each
/// asked with the object's grant for it, into `slot` (its size). Providers
/// that failed here lately are asked last; when the request under way moves
/// no byte for `ShardClient::hedge_after`, the next provider is asked
/// alongside. `moved` follows the shard's requests.
async fn fetch_shard(
    client: &ShardClient,
    shard: &ShardLocation,
    grants: &BTreeMap<String, String>,
    verify: bool,
    moved: &Moved,
    slot: &mut [u8],
) -> Result<(), String> {
    let mut order: Vec<&ProviderInfo> = shard.providers.iter().collect();
    order.sort_by_key(|p| client.is_suspect(&p.id));
    // The first request fills the slot; a hedge, a buffer of its own,
    // copied over if it wins.
    let mut first = Some(&mut *slot);
    let mut fetch = |p: &'_ ProviderInfo| {
        let p = p.clone();
        let dst = first.take();
        async move {
            let Some(grant) = grants.get(&p.id) else {
                return Err(format!("no grant for provider {}", p.id));
            };
            let (mut own, hedged) = (Vec::new(), dst.is_none());
            let dst = match dst {
                Some(dst) => dst,
                None => {
                    own.resize(shard.size as usize, 0);
                    &mut own[..]
                }
            };
            match client
                .get_into(&p, &shard.sha1, grant, verify, moved, dst)
                .await
            {
                Ok(n) if n as u64 == shard.size => Ok(hedged.then_some(own)),
                Ok(_) => {
                    client.routed_around(&shard.sha1, &p.id);
                    Err(format!(
                        "shard {} from {} has the wrong size",
                        shard.sha1, p.id
                    ))
                }
                Err(e) => {
                    // A provider that answers but lacks the shard or serves it
                    // corrupt has lost this copy; one that does not answer is
                    // the metadata server's to notice.
                    let lost = match &e {
                        ShardError::Corrupt { .. } => true,
                        ShardError::Status { status, .. } => {
                            *status == reqwest::StatusCode::NOT_FOUND
                        }
                        ShardError::Transport { .. } => false,
                    };
                    if lost {
                        client.routed_around(&shard.sha1, &p.id);
                    }
                    Err(e.to_string())
                }
            }
        }
    };
    let mut next = order.into_iter();
    let mut pending = FuturesUnordered::new();
    let mut last = String::from("no provider holds it");
    match next.next() {
        Some(p) => pending.push(fetch(p)),
        None => return Err(last),
    }
    let hedge = tokio::time::sleep(client.hedge_after());
    tokio::pin!(hedge);
    let won = loop {
        tokio::select! {
            done = pending.next() => match done {
                Some(Ok(won)) => break won,
                Some(Err(e)) => {
                    last = e;
                    match next.next() {
                        Some(p) => pending.push(fetch(p)),
                        None if pending.is_empty() => return Err(last),
                        None => {}
                    }
                }
                None => return Err(last),
            },
            _ = &mut hedge => {
                let (bound, idle) = (client.hedge_after(), moved.idle());
                if idle >= bound {
                    if let Some(p) = next.next() {
                        pending.push(fetch(p));
                    }
                }
                hedge.as_mut().reset(next_check(Some(idle).filter(|&i| i < bound), bound));
            }
        }
    };
    drop(pending);
    if let Some(own) = won {
        slot.copy_from_slice(&own);
    }
    Ok(())
}

/// The stored bytes of one partition.
async fn fetch_stored(
    client: &ShardClient,
    obj: &ObjectLayout,
    part: &PartitionLayout,
    verify: bool,
) -> Result<Pooled, TransferError> {
    match obj.scheme {
        StoreScheme::Inline => {
            let data = obj
                .data
                .as_deref()
                .ok_or_else(|| TransferError::Layout("inline object without data".into()))?;
            B64.decode(data)
                .map(Pooled::from)
                .map_err(|_| TransferError::Layout("inline data is not base64".into()))
        }
        StoreScheme::Replica => {
            let shard = part
                .shards
                .first()
                .ok_or_else(|| TransferError::Layout("replica without shard".into()))?;
            let moved = Moved::default();
            let mut data = Pooled::new(shard.size as usize);
            fetch_shard(client, shard, &obj.grants, verify, &moved, data.bytes_mut())
                .await
                .map_err(|last| TransferError::Unreadable {
                    partition: part.index,
                    source: ErasureError::TooFewShards { have: 0, need: 1 },
                    last,
                })?;
            Ok(data)
        }
        StoreScheme::Erasure => fetch_erasure(client, obj, part, verify).await,
    }
}

async fn fetch_erasure(
    client: &ShardClient,
    obj: &ObjectLayout,
    part: &PartitionLayout,
    verify: bool,
) -> Result<Pooled, TransferError> {
    let scheme = Scheme::new(part.k, part.m).map_err(|e| TransferError::Layout(e.to_string()))?;
    let n = part.k + part.m;
    if part.shards.len() != n {
        return Err(TransferError::Layout(format!(
            "partition {} has {} shards, not {n}",
            part.index,
            part.shards.len()
        )));
    }
    let moved: Vec<Moved> = (0..n).map(|_| Moved::default()).collect();
    // The data shards land side by side in one buffer, which is then the
    // stored partition as it is: no copy to join them. Parity shards, asked
    // for only when data shards fail, land in buffers of their own.
    let shard_len = part.shards[0].size as usize;
    if part.shards.iter().any(|s| s.size as usize != shard_len) {
        return Err(TransferError::Layout(format!(
            "partition {} has shards of different sizes",
            part.index
        )));
    }
    let mut whole = Pooled::new(shard_len * part.k);
    let mut slots: Vec<Option<&mut [u8]>> = whole
        .bytes_mut()
        .chunks_mut(shard_len.max(1))
        .map(Some)
        .collect();
    slots.resize_with(n, || None);
    let mut fetch = |i: usize| {
        let (moved, slot) = (&moved[i], slots[i].take());
        async move {
            let mut own = Vec::new();
            let slot = match slot {
                Some(slot) => slot,
                None => {
                    own.resize(shard_len, 0);
                    &mut own[..]
                }
            };
            let got = fetch_shard(client, &part.shards[i], &obj.grants, verify, moved, slot).await;
            (i, got.map(|()| own))
        }
    };
    // Data shards first (no decoding when they all come), shards on
    // suspect providers last.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| is_suspect(client, &part.shards[i]));
    let mut in_flight: std::collections::HashSet<usize> = order[..part.k].iter().copied().collect();
    let mut pending: FuturesUnordered<_> = order[..part.k].iter().map(|&i| fetch(i)).collect();
    let mut next = part.k;
    // Shards fetched; a parity shard's bytes with it.
    let mut got: Vec<Option<Vec<u8>>> = vec![None; n];
    let mut have = 0;
    let mut last = String::new();
    let hedge = tokio::time::sleep(client.hedge_after());
    tokio::pin!(hedge);
    while have < part.k {
        tokio::select! {
            done = pending.next() => match done {
                Some((i, Ok(data))) => {
                    in_flight.remove(&i);
                    got[i] = Some(data);
                    have += 1;
                }
                Some((i, Err(e))) => {
                    in_flight.remove(&i);
                    last = e;
                    if next < n {
                        in_flight.insert(order[next]);
                        pending.push(fetch(order[next]));
                        next += 1;
                    }
                }
                None => break,
            },
            _ = &mut hedge, if next < n => {
                // One more shard while those still moving bytes are fewer
                // than the shards missing; a slow shard is waited for. The
                // providers of stalled ones are probed, and asked last
                // meanwhile.
                let bound = client.hedge_after();
                let mut moving = Vec::new();
                for &i in &in_flight {
                    match moved[i].idle() {
                        idle if idle < bound => moving.push(idle),
                        _ => part.shards[i].providers.iter().for_each(|p| client.probe(p)),
                    }
                }
                if moving.len() < part.k - have {
                    in_flight.insert(order[next]);
                    pending.push(fetch(order[next]));
                    next += 1;
                }
                hedge.as_mut().reset(next_check(moving.into_iter().max(), bound));
            }
        }
    }
    drop(pending);
    if got[..part.k].iter().all(Option::is_some) {
        whole.len = part.size as usize;
        return Ok(whole);
    }
    // Data shards fetched are in `whole`; the decoder takes them apart.
    for (i, shard) in whole.as_ref().chunks(shard_len.max(1)).enumerate() {
        if let Some(own) = got[i].as_mut() {
            own.extend_from_slice(shard);
        }
    }
    scheme
        .decode(got, part.size as usize)
        .map(Pooled::from)
        .map_err(|source| TransferError::Unreadable {
            partition: part.index,
            source,
            last,
        })
}

fn cipher_of(
    frag: &FragmentLayout,
    acct: Option<&AccountKey>,
) -> Result<Option<PartitionCipher>, TransferError> {
    match (&frag.key, acct) {
        (None, _) => Ok(None),
        (Some(_), None) => Err(TransferError::NeedKey),
        (Some(w), Some(a)) => Ok(Some(PartitionCipher::new(&a.unwrap(w)?))),
    }
}

/// Plaintext length of partition `index` of an object.
fn plain_len(obj: &ObjectLayout, index: u64) -> u64 {
    obj.plain_size
        .saturating_sub(index * obj.partition_size)
        .min(obj.partition_size)
}

/// Tells the metadata server about the copies reads routed around (it
/// checks each itself and repairs it); failures only cost the report.
pub async fn report_routed_around(meta: &MetaClient, shards: &ShardClient) {
    for r in shards.take_routed_around() {
        if let Err(e) = meta.report(&r).await {
            tracing::info!(shard = %r.sha1, provider = %r.provider, error = %e, "report not sent");
        }
    }
}

/// The plaintext of partition `index` of a fragment's object.
pub async fn read_partition(
    client: &ShardClient,
    frag: &FragmentLayout,
    cipher: Option<&PartitionCipher>,
    index: u64,
) -> Result<Bytes, TransferError> {
    let recorded = crate::metrics::Transfer::start(&crate::metrics::PARTITION_READ);
    let obj = &frag.object;
    let part = obj
        .partitions
        .iter()
        .find(|p| p.index == index)
        .ok_or_else(|| TransferError::Layout(format!("no partition {index}")))?;
    let data = match cipher {
        // The GCM tag authenticates the whole partition, so shards are
        // hashed only when it fails, to find the bad ones and go around them.
        Some(c) => {
            let mut fast = fetch_stored(client, obj, part, false).await?;
            match c.decrypt(index, fast.bytes_mut()) {
                Ok(len) => {
                    fast.len = len;
                    fast
                }
                Err(_) => {
                    let mut checked = fetch_stored(client, obj, part, true).await?;
                    checked.len = c.decrypt(index, checked.bytes_mut())?;
                    checked
                }
            }
        }
        None => fetch_stored(client, obj, part, true).await?,
    };
    if data.len as u64 != plain_len(obj, index) {
        return Err(TransferError::Layout(format!(
            "partition {index} decodes to {} bytes",
            data.len
        )));
    }
    recorded.done(data.len as u64);
    Ok(Bytes::from_owner(data))
}

/// The plaintext partitions of `frag` holding bytes of `[start, end)`, in
/// order, fetched a few at a time: (data, file offset of the partition).
fn fragment_partitions<'a>(
    client: &'a ShardClient,
    frag: &'a FragmentLayout,
    cipher: Option<&'a PartitionCipher>,
    start: u64,
    end: u64,
) -> impl futures::Stream<Item = Result<(Bytes, u64), TransferError>> + 'a {
    stream::iter(frag.partitions_in(start, end))
        .map(move |(i, at)| async move { Ok((read_partition(client, frag, cipher, i).await?, at)) })
        .buffered(PARALLEL_PARTITIONS)
}

/// Bytes `[offset, offset + len)` of a file (clipped at its end); holes read
/// as zeros.
pub async fn read_range(
    client: &ShardClient,
    layout: &FileLayout,
    acct: Option<&AccountKey>,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, TransferError> {
    let end = offset.saturating_add(len).min(layout.size);
    let mut out = vec![0u8; end.saturating_sub(offset) as usize];
    for frag in &layout.fragments {
        let cipher = cipher_of(frag, acct)?;
        let frag_end = frag.offset + frag.length;
        let parts: Vec<(Bytes, u64)> =
            fragment_partitions(client, frag, cipher.as_ref(), offset, end)
                .try_collect()
                .await?;
        for (data, at) in parts {
            let lo = offset.max(at);
            let hi = end.min(at + data.len() as u64).min(frag_end);
            if lo < hi {
                out[(lo - offset) as usize..(hi - offset) as usize]
                    .copy_from_slice(&data[(lo - at) as usize..(hi - at) as usize]);
            }
        }
    }
    Ok(out)
}

/// Writes a whole file into `file` (empty), partitions in parallel; holes
/// stay sparse.
pub async fn download_to_file(
    client: &ShardClient,
    layout: &FileLayout,
    acct: Option<&AccountKey>,
    file: &std::fs::File,
    progress: &Progress,
    name: &str,
) -> Result<(), TransferError> {
    use std::os::unix::fs::FileExt;
    file.set_len(layout.size)?;
    progress.start(name, layout.size);
    for frag in &layout.fragments {
        let cipher = cipher_of(frag, acct)?;
        let frag_end = frag.offset + frag.length;
        let mut parts = std::pin::pin!(fragment_partitions(
            client,
            frag,
            cipher.as_ref(),
            0,
            layout.size
        ));
        while let Some((data, at)) = parts.try_next().await? {
            let take = (frag_end - at).min(data.len() as u64) as usize;
            file.write_all_at(&data[..take], at)?;
            progress.advance(name, take as u64);
        }
    }
    file.sync_all()?;
    progress.finish(name);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_buffer_is_used_again_only_by_one_it_fits() {
        // A size no other test asks for: the pool is the process's.
        let len = (3 << 20) + 12_345;
        let mut first = Pooled::new(len);
        first.bytes_mut().fill(7);
        let at = first.buf.as_ptr();
        drop(Bytes::from_owner(first));
        // Far smaller: a cached block would pin a buffer thrice its size.
        let small = Pooled::new(1 << 20);
        assert_ne!(small.buf.as_ptr(), at);
        let again = Pooled::new(len - 1000);
        assert_eq!(again.buf.as_ptr(), at, "the freed buffer came back");
        assert_eq!(again.as_ref().len(), len - 1000);
    }
}
