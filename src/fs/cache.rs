//! An LRU cache of decoded partitions, bounded in bytes, that also merges
//! concurrent fetches of the same partition (a read and a prefetch of one
//! partition fetch its shards once). Hits, misses, evictions and bytes
//! held go to the process's metrics. A block whose every byte has been
//! read goes soon: the kernel's page cache holds those bytes now, and a
//! sequential read then cycles through a few buffers instead of filling the
//! cache with blocks no one reads again. The last few such blocks stay,
//! because the kernel now and then asks a page again just after it was
//! read (its read-ahead raced a reader, or it let the page go), and one
//! page should not cost a whole partition's shards.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Mutex;

use futures::future::{BoxFuture, FutureExt, Shared};
use lru::LruCache;

use super::FsError;

/// A partition of an object: (object SHA-1, partition index). Objects are
/// immutable, so a key's content never changes.
pub type BlockKey = (String, u64);
/// Shared, so a read within one partition is a slice of it, not a copy.
pub type Block = bytes::Bytes;

type Pending = Shared<BoxFuture<'static, Result<Block, FsError>>>;

/// How many blocks read whole stay for a page asked again.
const READ_WHOLE_KEPT: usize = 2;

/// A cached block and how many of its bytes have been read.
struct Entry {
    block: Block,
    read: usize,
}

struct Inner {
    lru: LruCache<BlockKey, Entry>,
    bytes: usize,
    pending: HashMap<BlockKey, Pending>,
    /// Blocks read whole, oldest first; past `READ_WHOLE_KEPT` they go.
    read_whole: VecDeque<BlockKey>,
}

pub struct BlockCache {
    inner: Mutex<Inner>,
    capacity: usize,
}

impl BlockCache {
    pub fn new(capacity: usize) -> Self {
        metrics::gauge!(crate::metrics::CACHE_CAPACITY).set(capacity as f64);
        BlockCache {
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                bytes: 0,
                pending: HashMap::new(),
                read_whole: VecDeque::new(),
            }),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Is the block cached or being fetched?
    pub fn has(&self, key: &BlockKey) -> bool {
        let inner = self.lock();
        inner.lru.contains(key) || inner.pending.contains_key(key)
    }

    /// The block from the cache, else from `fetch` (run once however many
    /// callers ask at the same time). A miss is a call that starts a fetch;
    /// joining one under way counts as a hit.
    pub async fn get_or_fetch<F>(&self, key: BlockKey, fetch: F) -> Result<Block, FsError>
    where
        F: Future<Output = Result<Block, FsError>> + Send + 'static,
    {
        let pending = {
            let mut inner = self.lock();
            if let Some(e) = inner.lru.get(&key) {
                metrics::counter!(crate::metrics::CACHE_HITS).increment(1);
                return Ok(e.block.clone());
            }
            match inner.pending.get(&key) {
                Some(p) => {
                    metrics::counter!(crate::metrics::CACHE_HITS).increment(1);
                    p.clone()
                }
                None => {
                    metrics::counter!(crate::metrics::CACHE_MISSES).increment(1);
                    let p = fetch.boxed().shared();
                    inner.pending.insert(key.clone(), p.clone());
                    p
                }
            }
        };
        let result = pending.await;
        let mut inner = self.lock();
        if inner.pending.remove(&key).is_some() {
            if let Ok(block) = &result {
                inner.bytes += block.len();
                let block = block.clone();
                inner.lru.put(key, Entry { block, read: 0 });
                while inner.bytes > self.capacity {
                    match inner.lru.pop_lru() {
                        Some((_, old)) => {
                            inner.bytes -= old.block.len();
                            metrics::counter!(crate::metrics::CACHE_EVICTIONS).increment(1);
                        }
                        None => break,
                    }
                }
                metrics::gauge!(crate::metrics::CACHE_BYTES).set(inner.bytes as f64);
            }
        }
        result
    }

    /// Notes that `n` bytes of a block were read; once they add up to the
    /// block, it joins the few kept read whole, and the oldest of those goes.
    pub fn read(&self, key: &BlockKey, n: usize) {
        let mut inner = self.lock();
        let Some(e) = inner.lru.peek_mut(key) else {
            return;
        };
        let was_whole = e.read >= e.block.len();
        e.read += n;
        if was_whole || e.read < e.block.len() {
            return;
        }
        // Read whole before, evicted and fetched again: listed once.
        inner.read_whole.retain(|k| k != key);
        inner.read_whole.push_back(key.clone());
        while inner.read_whole.len() > READ_WHOLE_KEPT {
            let Some(old) = inner.read_whole.pop_front() else {
                break;
            };
            // Gone already if the cache's bound evicted it.
            if let Some(e) = inner.lru.pop(&old) {
                inner.bytes -= e.block.len();
            }
        }
        metrics::gauge!(crate::metrics::CACHE_BYTES).set(inner.bytes as f64);
    }

    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn bounded_in_bytes_and_fetches_once() {
        let cache = BlockCache::new(250);
        let calls = Arc::new(AtomicUsize::new(0));
        let fetch = |n: u8| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(vec![n; 100].into())
            }
        };
        let (a, b) = tokio::join!(
            cache.get_or_fetch(key(0), fetch(0)),
            cache.get_or_fetch(key(0), fetch(0))
        );
        assert_eq!(a.unwrap()[0], 0);
        assert_eq!(b.unwrap()[0], 0);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "concurrent fetches merge");
        cache.get_or_fetch(key(1), fetch(1)).await.unwrap();
        cache.get_or_fetch(key(2), fetch(2)).await.unwrap();
        assert!(cache.bytes() <= 250);
        assert!(
            !cache.has(&key(0)),
            "the least recently used block went first"
        );
        let err = cache
            .get_or_fetch(key(3), async { Err(FsError::Io("x".into())) })
            .await;
        assert!(err.is_err());
        assert!(!cache.has(&key(3)), "failures are not cached");
    }

    fn key(i: u64) -> BlockKey {
        ("obj".to_string(), i)
    }

    /// Block `i` (100 bytes) from the cache or fetched, then `n` of its
    /// bytes read.
    async fn fetch_and_read(cache: &BlockCache, i: u64, n: usize) {
        cache
            .get_or_fetch(key(i), async { Ok(vec![1; 100].into()) })
            .await
            .unwrap();
        cache.read(&key(i), n);
    }

    #[tokio::test]
    async fn a_block_read_whole_goes_after_the_next_few() {
        let cache = BlockCache::new(1000);
        fetch_and_read(&cache, 0, 60).await;
        assert!(cache.has(&key(0)), "40 bytes are still to be read");
        cache.read(&key(0), 40);
        // A page asked again just after is still there ...
        assert!(cache.has(&key(0)), "read whole, it stays a little");
        fetch_and_read(&cache, 0, 4).await;
        fetch_and_read(&cache, 1, 100).await;
        assert!(cache.has(&key(0)) && cache.has(&key(1)));
        assert_eq!(cache.bytes(), 200);
        // ... until READ_WHOLE_KEPT later blocks were read whole.
        fetch_and_read(&cache, 2, 100).await;
        assert!(!cache.has(&key(0)), "the oldest block read whole went");
        assert!(cache.has(&key(1)) && cache.has(&key(2)));
        assert_eq!(cache.bytes(), 200);
    }

    #[tokio::test]
    async fn a_block_evicted_and_read_whole_again_counts_once() {
        let cache = BlockCache::new(300);
        fetch_and_read(&cache, 0, 100).await;
        for i in 1..=3 {
            fetch_and_read(&cache, i, 0).await;
        }
        assert!(!cache.has(&key(0)), "the bound evicted the oldest");
        fetch_and_read(&cache, 0, 100).await;
        fetch_and_read(&cache, 2, 100).await;
        assert!(
            cache.has(&key(0)) && cache.has(&key(2)),
            "two blocks read whole, both kept"
        );
    }
}
