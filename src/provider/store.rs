//! Shards on disk: `DIR/shards/ab/abcdef...`, written through `DIR/tmp`.

use std::io::{IoSlice, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use aligned_vec::{AVec, RuntimeAlign};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use rand::RngCore;

use crate::codec::ShardHasher;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("content hashes to {actual}, not {expected}")]
    HashMismatch { expected: String, actual: String },
    #[error("shard larger than {0} bytes")]
    TooLarge(u64),
    #[error("no such shard")]
    NotFound,
    #[error("request body failed: {0}")]
    Body(String),
    #[error("the disk is full")]
    Full,
    #[error("shard {0} was stored again after its deletion was decided")]
    StoredSince(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub struct ShardStore {
    root: PathBuf,
    max_shard: u64,
    used: AtomicU64,
    count: AtomicU64,
    /// Striped by shard name: a delete's check-then-remove and a PUT's
    /// rename into place never interleave on one shard.
    locks: Vec<tokio::sync::Mutex<()>>,
}

impl ShardStore {
    /// Opens (creating) the store and counts what it holds.
    pub fn open(root: &Path, max_shard: u64) -> std::io::Result<Self> {
        // The provider's key lives here: nobody else reads the directory.
        crate::private::dir(root)?;
        std::fs::create_dir_all(root.join("shards"))?;
        let tmp = root.join("tmp");
        // Leftovers of PUTs cut short by a crash are never real shards.
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        let (mut used, mut count) = (0, 0);
        for dir in std::fs::read_dir(root.join("shards"))? {
            for f in std::fs::read_dir(dir?.path())? {
                used += f?.metadata()?.len();
                count += 1;
            }
        }
        Ok(ShardStore {
            root: root.to_path_buf(),
            max_shard,
            used: AtomicU64::new(used),
            count: AtomicU64::new(count),
            locks: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
        })
    }

    /// This provider's id: made once, kept in the data directory.
    pub fn provider_id(&self) -> std::io::Result<String> {
        let path = self.root.join("provider_id");
        match std::fs::read_to_string(&path) {
            Ok(id) => Ok(id.trim().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut raw = [0u8; 8];
                rand::thread_rng().fill_bytes(&mut raw);
                let id = format!("p-{}", hex::encode(raw));
                std::fs::write(&path, &id)?;
                Ok(id)
            }
            Err(e) => Err(e),
        }
    }

    /// Size of the file system the store lives on.
    pub fn disk_capacity(&self) -> u64 {
        let Ok(path) = std::ffi::CString::new(self.root.as_os_str().as_encoded_bytes()) else {
            return 0;
        };
        // SAFETY: statvfs writes into the zeroed struct we own; the path is a valid C string.
        unsafe {
            let mut st: libc::statvfs = std::mem::zeroed();
            if libc::statvfs(path.as_ptr(), &mut st) == 0 {
                st.f_blocks as u64 * st.f_frsize as u64
            } else {
                0
            }
        }
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn lock(&self, sha1: &str) -> &tokio::sync::Mutex<()> {
        let stripe = u8::from_str_radix(&sha1[..2], 16).unwrap_or(0) as usize;
        &self.locks[stripe % self.locks.len()]
    }

    fn path(&self, sha1: &str) -> PathBuf {
        self.root.join("shards").join(&sha1[..2]).join(sha1)
    }

    /// Streams a shard to a temporary file, checks it against its id, fsyncs and
    /// renames it into place. Returns the bytes received.
    pub async fn put<S>(&self, sha1: &str, mut body: S) -> Result<u64, StoreError>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Unpin,
    {
        let mut raw = [0u8; 8];
        rand::thread_rng().fill_bytes(&mut raw);
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{sha1}.{}", hex::encode(raw)));
        let result = self.receive(&tmp, sha1, &mut body).await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result.map_err(|e| match e {
            StoreError::Io(io) if io.raw_os_error() == Some(libc::ENOSPC) => StoreError::Full,
            e => e,
        })
    }

    async fn receive<S>(&self, tmp: &Path, sha1: &str, body: &mut S) -> Result<u64, StoreError>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Unpin,
    {
        // Gathered in memory (a shard is at most `max_shard`), as the
        // chunks the body came in, and written by one blocking call: tokio's
        // file copies every chunk into a buffer of its own and hops to a
        // blocking thread per chunk.
        let mut chunks = Vec::new();
        let mut len = 0u64;
        let mut hasher = ShardHasher::for_id(sha1);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| StoreError::Body(e.to_string()))?;
            len += chunk.len() as u64;
            if len > self.max_shard {
                return Err(StoreError::TooLarge(self.max_shard));
            }
            hasher.update(&chunk);
            chunks.push(chunk);
        }
        let actual = hasher.finish();
        if actual != sha1 {
            return Err(StoreError::HashMismatch {
                expected: sha1.to_string(),
                actual,
            });
        }
        let path = tmp.to_path_buf();
        let dest = self.path(sha1);
        let dir = dest
            .parent()
            .expect("shard path has a parent")
            .to_path_buf();
        // Each blocking step is a hop to another thread and back: the shard
        // is written and its directory made in one, and moved in one.
        let make_dir = dir.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&make_dir)?;
            let mut file = std::fs::File::create(&path)?;
            // All the chunks per writev, not a write each.
            let mut slices: Vec<IoSlice> = chunks.iter().map(|c| IoSlice::new(c)).collect();
            let mut left = &mut slices[..];
            while !left.is_empty() {
                match file.write_vectored(left) {
                    Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                    Ok(n) => IoSlice::advance_slices(&mut left, n),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            file.sync_all()?;
            release_pages(&file);
            Ok::<_, std::io::Error>(())
        })
        .await
        .map_err(std::io::Error::other)??;
        let _guard = self.lock(sha1).lock().await;
        let tmp = tmp.to_path_buf();
        let existed = tokio::task::spawn_blocking(move || {
            let existed = dest.try_exists()?;
            std::fs::rename(&tmp, &dest)?;
            // The rename is durable only once the directory is.
            std::fs::File::open(&dir)?.sync_all()?;
            Ok::<_, std::io::Error>(existed)
        })
        .await
        .map_err(std::io::Error::other)??;
        if !existed {
            self.used.fetch_add(len, Ordering::Relaxed);
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        Ok(len)
    }

    /// A shard's bytes, read whole into one buffer, which the response
    /// then sends as it is.
    pub async fn read_shard(&self, sha1: &str) -> Result<Bytes, StoreError> {
        let path = self.path(sha1);
        tokio::task::spawn_blocking(move || read_whole(&path))
            .await
            .map_err(std::io::Error::other)?
            .map_err(not_found)
    }

    pub async fn len(&self, sha1: &str) -> Result<u64, StoreError> {
        Ok(tokio::fs::metadata(self.path(sha1))
            .await
            .map_err(not_found)?
            .len())
    }

    /// Deletes a shard; with `stored_before_ms`, only a copy last stored
    /// before then (a PUT writes a new file, so its mtime is when it was
    /// stored).
    pub async fn delete(
        &self,
        sha1: &str,
        stored_before_ms: Option<u64>,
    ) -> Result<(), StoreError> {
        let path = self.path(sha1);
        let _guard = self.lock(sha1).lock().await;
        let meta = tokio::fs::metadata(&path).await.map_err(not_found)?;
        if let Some(before) = stored_before_ms {
            let stored = meta
                .modified()?
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            if stored >= before {
                return Err(StoreError::StoredSince(sha1.to_string()));
            }
        }
        let len = meta.len();
        tokio::fs::remove_file(&path).await.map_err(not_found)?;
        self.used.fetch_sub(len, Ordering::Relaxed);
        self.count.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }
}

/// What O_DIRECT asks buffers, offsets and lengths to be multiples of: the
/// disk's logical block, at most 4 KiB on the disks in use.
const DIRECT_ALIGN: usize = 4096;

/// A file's bytes, read around the page cache (O_DIRECT): the disk fills
/// the buffer, so there are no pages to allocate, copy out of and free
/// (a third of the CPU of reading through the cache). A filesystem that
/// refuses O_DIRECT is read through the cache.
fn read_whole(path: &Path) -> std::io::Result<Bytes> {
    let refused = |e: &std::io::Error| e.raw_os_error() == Some(libc::EINVAL);
    let through_the_cache = || std::fs::read(path).map(Bytes::from);
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Err(e) if refused(&e) => return through_the_cache(),
        f => f?,
    };
    let len = file.metadata()?.len() as usize;
    let room = len.next_multiple_of(DIRECT_ALIGN).max(DIRECT_ALIGN);
    let mut buf = AVec::<u8, RuntimeAlign>::with_capacity(DIRECT_ALIGN, room);
    let mut got = 0;
    // Only the read that reaches the end returns less than a whole block.
    while got < room && got % DIRECT_ALIGN == 0 {
        // Into the spare capacity, through a pointer (no reference to bytes
        // not written yet), rather than zeroing what the disk overwrites.
        // SAFETY: the buffer holds `room` bytes from its start; pread writes
        // at most `room - got` bytes from `got`.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                buf.as_mut_ptr().add(got).cast(),
                room - got,
                got as libc::off_t,
            )
        };
        match n {
            0 => break,
            n if n > 0 => got += n as usize,
            _ => match std::io::Error::last_os_error() {
                e if e.kind() == std::io::ErrorKind::Interrupted => {}
                e if refused(&e) => return through_the_cache(),
                e => return Err(e),
            },
        }
    }
    if got != len {
        // Cut short other than at the end.
        return through_the_cache();
    }
    // SAFETY: pread wrote the first `got` bytes.
    unsafe { buf.set_len(got) };
    Ok(Bytes::from_owner(buf))
}

/// Lets the kernel drop a shard's clean pages at once. A shard is written
/// once and read seldom (by a client that caches what it decoded, or by
/// the scrub): its pages would only crowd out others. Pages freed soon are
/// reused while warm; pages left to age are handed back to a VM's host
/// (free page reporting) and cost a host fault each when touched again,
/// which made copying shards into fresh page cache half a provider's CPU
/// time.
fn release_pages(file: &std::fs::File) {
    // Advice only: a failure changes nothing but the page cache.
    // SAFETY: posix_fadvise reads no memory; the fd is open for the call.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

fn not_found(e: std::io::Error) -> StoreError {
    if e.kind() == std::io::ErrorKind::NotFound {
        StoreError::NotFound
    } else {
        StoreError::Io(e)
    }
}

impl ShardStore {
    /// Names of every shard held, in no particular order.
    pub fn shard_names(&self) -> std::io::Result<Vec<String>> {
        let mut names = Vec::new();
        for dir in std::fs::read_dir(self.root.join("shards"))? {
            for f in std::fs::read_dir(dir?.path())? {
                if let Some(name) = f?.file_name().to_str() {
                    if crate::codec::is_shard_id(name) {
                        names.push(name.to_string());
                    }
                }
            }
        }
        Ok(names)
    }

    /// The id a shard's file hashes to, read in chunks; `on_chunk` is awaited
    /// with each chunk's length (to bound the read rate). `None` if gone.
    pub async fn hash_file<F, Fut>(
        &self,
        sha1: &str,
        on_chunk: F,
    ) -> std::io::Result<Option<String>>
    where
        F: Fn(u64) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        use tokio::io::AsyncReadExt;
        let mut file = match tokio::fs::File::open(self.path(sha1)).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut hasher = ShardHasher::for_id(sha1);
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = file.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            on_chunk(n as u64).await;
        }
        release_pages(&file.into_std().await);
        Ok(Some(hasher.finish()))
    }

    /// Moves a shard whose file fails its hash to `DIR/quarantine/`, after
    /// hashing it again under its lock (a PUT may have just replaced it).
    /// Whether it was moved.
    pub async fn quarantine(&self, sha1: &str) -> std::io::Result<bool> {
        let _guard = self.lock(sha1).lock().await;
        let path = self.path(sha1);
        let data = match tokio::fs::read(&path).await {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        if crate::codec::shard_matches(sha1, &data) {
            return Ok(false);
        }
        let dir = self.root.join("quarantine");
        tokio::fs::create_dir_all(&dir).await?;
        tokio::fs::rename(&path, dir.join(sha1)).await?;
        self.used.fetch_sub(data.len() as u64, Ordering::Relaxed);
        self.count.fetch_sub(1, Ordering::Relaxed);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_read_around_the_page_cache_is_its_bytes_whatever_its_length() {
        let dir = tempfile::tempdir().unwrap();
        // Else only the read through the cache would be tested here.
        let probe = dir.path().join("probe");
        std::fs::write(&probe, b"x").unwrap();
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(&probe)
            .expect("the temporary directory's filesystem takes O_DIRECT");
        for len in [0, 1, 511, 4095, 4096, 4097, (1 << 20) + 16, 3 << 20] {
            let path = dir.path().join(format!("f{len}"));
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            std::fs::write(&path, &bytes).unwrap();
            let read = read_whole(&path).unwrap();
            assert_eq!(read.len(), len, "length {len}");
            assert!(read[..] == bytes[..], "bytes of a file of {len}");
        }
        let gone = read_whole(&dir.path().join("gone")).unwrap_err();
        assert_eq!(gone.kind(), std::io::ErrorKind::NotFound);
    }
}
