//! The filesystem: POSIX operations over a `Backend`, with local staging of
//! writes (uploaded on flush/fsync/release) and cached, prefetched reads.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use tokio::sync::Mutex as AsyncMutex;

use super::backend::Backend;
use super::cache::{Block, BlockCache};
use super::staging::{Parts, StagingArea};
use super::FsError;
use crate::codec::{partition_count, INLINE_MAX};
use crate::meta::store::now_ns;
use crate::proto::*;
use crate::transfer::{OnSealed, PartitionSpan, StoredHash};
use bytes::Bytes;

type FsResult<T> = Result<T, FsError>;

#[derive(Debug, Clone)]
pub struct FsConfig {
    pub cache_dir: PathBuf,
    /// Bytes of decoded partitions kept in memory.
    pub cache_size: usize,
    /// Partitions fetched ahead of a sequential reader.
    pub prefetch: u64,
}

/// Attributes as the kernel sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: NodeKind,
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime_ns: i64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub nlink: u32,
    /// A device node's device number.
    pub rdev: u32,
}

#[derive(Debug, Clone)]
pub struct DirEntry {
    pub ino: u64,
    pub name: String,
    pub attr: Attr,
    /// A directory with a default ACL (see `Record::default_acl`).
    pub default_acl: bool,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct OpenFlags {
    pub read: bool,
    pub write: bool,
    pub truncate: bool,
    pub append: bool,
    /// O_EXCL: a create fails on a name that is there.
    pub exclusive: bool,
    /// The thread that opened (FUSE's pid): a close in another process,
    /// a child that inherited the descriptor across fork, commits nothing.
    pub opener: u32,
}

/// Who creates a node: its owner, and the umask it is made with (not
/// applied in a directory with a default ACL, which sets the mode instead).
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    pub umask: u32,
}

/// What `setattr` changes; times are resolved to nanoseconds by the caller.
#[derive(Debug, Clone, Default)]
pub struct SetAttr {
    pub size: Option<u64>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub atime_ns: Option<i64>,
    pub mtime_ns: Option<i64>,
}

/// A file being written: its local copy. Partitions are fetched only when
/// a write covers part of them; the others stay in their stored objects.
struct Staged {
    file: Arc<std::fs::File>,
    size: u64,
    /// The partitions `file` holds, and the stored objects holding the
    /// others (or, for partitions `file` holds too, the same bytes).
    parts: Parts,
    /// The version the pieces not in `file` are read from.
    origin: Option<Arc<FileLayout>>,
    /// Pieces copied from other files (copy_file_range), read from there.
    borrowed: HashMap<u64, Source>,
    /// Changes of each partition so far: an upload made before the last
    /// change of its partition is stale.
    changes: HashMap<u64, u64>,
    /// Partitions uploaded in the background while the file is written.
    early: Arc<Mutex<HashMap<u64, Early>>>,
    inflight: Vec<tokio::task::JoinHandle<()>>,
    /// The file's hash as far as its partitions were sealed in order
    /// (None once one came out of order or was never local).
    digest: Option<Digest>,
    /// What its marker on disk says.
    mark: Mark,
    mtime_ns: i64,
    /// The version the local copy started from (or last uploaded): an
    /// upload commits only while the file is still at it.
    base: u64,
}

/// The process (thread group) thread `pid` belongs to; None once gone.
fn process_of(pid: u32) -> Option<u32> {
    use std::io::Read;
    // Tgid is the fourth line: the head is enough, read in one call
    // instead of the whole file in growing pieces.
    let mut head = Vec::with_capacity(512);
    std::fs::File::open(format!("/proc/{pid}/status"))
        .ok()?
        .take(512)
        .read_to_end(&mut head)
        .ok()?;
    // Cut anywhere, the head may end inside a character of a later line.
    String::from_utf8_lossy(&head)
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))?
        .trim()
        .parse()
        .ok()
}

/// Feeds a staged file's digest the early partitions (whole ones, of
/// `partition` bytes) next in line whose bytes are current; bytes it can no
/// longer take are let go.
fn drain_early(st: &mut Staged, partition: u64) {
    while let Some(d) = &st.digest {
        let next = d.stamps.len() as u64;
        let change = st.changes.get(&next).copied().unwrap_or_default();
        // Taken out under the lock, hashed outside it: early uploads
        // insert into the map meanwhile.
        let stored = lock(&st.early)
            .get_mut(&next)
            .filter(|e| e.change == change)
            .and_then(|e| e.stored.take());
        let Some(stored) = stored else {
            break;
        };
        feed(&mut st.digest, next, (change, partition), &stored);
    }
    let mut early = lock(&st.early);
    let waiting = early.values().filter(|e| e.stored.is_some()).count();
    if st.digest.is_none() || waiting > DIGEST_WAITING {
        st.digest = None;
        early.values_mut().for_each(|e| e.stored = None);
    }
}

/// Where a stored piece is read: a version, and the piece's offset there.
#[derive(Clone)]
struct Source {
    layout: Arc<FileLayout>,
    at: u64,
}

/// Most bytes one copy_file_range answers (the reply counts in 32 bits).
const MAX_COPY: u64 = u32::MAX as u64;

/// A partition uploaded while its file was being written.
struct Early {
    /// Its partition's change count when it was read.
    change: u64,
    /// Its stored bytes, until the file's digest takes them.
    stored: Option<Bytes>,
    /// Its object, once stored.
    fragment: Option<CommitFragment>,
}

/// The SHA-1 of a staged file's stored bytes, fed partition by partition
/// in order as they are sealed, with each one's change count and length
/// then: at a commit it is the file's hash if none of them changed since.
#[derive(Default)]
struct Digest {
    hash: StoredHash,
    stamps: Vec<(u64, u64)>,
}

/// Most early partitions whose bytes wait for the digest (one before them
/// is not sealed yet); past it the digest lapses rather than hold more.
/// Twice the window: a full window may be sealed ahead of a slow one.
const DIGEST_WAITING: usize = 2 * EARLY_WINDOW;

/// Feeds partition `i` (its change count and length, and stored bytes) to
/// `digest` if it is the next one; otherwise the digest lapses.
fn feed(digest: &mut Option<Digest>, i: u64, stamp: (u64, u64), stored: &[u8]) {
    match digest {
        Some(d) if d.stamps.len() as u64 == i => {
            d.hash.update(stored);
            d.stamps.push(stamp);
        }
        _ => *digest = None,
    }
}

impl Digest {
    /// The hash of a file of `count` partitions whose partition i now has
    /// change count and length `stamp(i)`, if every one was fed as it is.
    fn hash(&self, count: u64, stamp: impl Fn(u64) -> (u64, u64)) -> Option<String> {
        let whole = self.stamps.len() as u64 == count
            && (0..count).all(|i| self.stamps[i as usize] == stamp(i));
        whole.then(|| self.hash.clone().finish())
    }
}

/// The state of a staged file's marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    /// No marker: nothing to upload.
    Clean,
    /// Being written.
    Open,
    /// Whole (closed or fsynced), to be uploaded.
    Done,
}

/// When to try a failed upload again, and the delays after that.
struct Retry {
    at: tokio::time::Instant,
    backoff: backon::ExponentialBackoff,
}

/// Delays between tries of an upload that failed for a passing reason:
/// 1 s doubling up to a minute, each with up to as much again of jitter.
const RETRY: backon::ExponentialBuilder = backon::ExponentialBuilder::new()
    .with_min_delay(Duration::from_secs(1))
    .with_max_delay(Duration::from_secs(60))
    .with_factor(2.0)
    .with_jitter()
    .without_max_times();

/// Partitions of files being written uploaded at once, in the background:
/// enough that the round trips and fsyncs of some overlap the hashing of
/// others (8 left a core idle at times); each holds about 1.5 partitions.
const EARLY_WINDOW: usize = 16;

/// How long the kernel keeps entries and attributes, and a listing answers
/// misses without asking (`Listed`): another client's change shows here at
/// most this late.
pub const TTL: Duration = Duration::from_secs(1);

/// Directories whose listings are kept, at most.
const LISTED_DIRS: usize = 1024;

/// Listings of more names than this are not kept.
const LISTED_NAMES: usize = 16384;

/// All the names of a directory, as of its mtime (`attr.mtime_ns`), known
/// to be so at `checked`. A name not among them is not there: for `TTL`
/// after `checked` without asking, and after that while the directory's
/// mtime is unchanged (every change moves it forward). This mount's own
/// changes keep it whole: the server answers them with the mtime before
/// and after (`DirChange`). The attributes, as asked at `attr_at` with
/// those changes applied, answer getattr for `TTL` (the kernel drops its
/// copy at each change in the directory; a chmod elsewhere moves no mtime).
struct Listed {
    attr: NodeAttr,
    attr_at: Instant,
    names: HashSet<String>,
    checked: Instant,
}

/// A file whose entry is being removed (unlink, rename over it), locked
/// until the removal is done.
struct Victim {
    id: i64,
    g: tokio::sync::OwnedMutexGuard<Inode>,
    /// Open here: kept as an orphan.
    kept: bool,
}

/// A node's open handles and staged copy, locked across an upload.
#[derive(Default)]
struct Inode {
    open: usize,
    staged: Option<Staged>,
}

/// Everything this mount keeps about one node, in one record. A record is
/// dropped once the kernel has forgotten the node (`lookups` back to 0),
/// no handle is open and nothing is staged; an orphan is open by
/// definition. Its fields other than `file` are read and changed under the
/// map's lock, without waiting on an upload.
#[derive(Default)]
struct Record {
    /// Entries for the node handed to the kernel and not yet forgotten.
    lookups: u64,
    /// (parent, name) last seen, to label transfers with a path.
    name: Option<(i64, String)>,
    /// The version whose pages the kernel may keep.
    kernel_ver: Option<u64>,
    /// Size, mtime and ctime (of the last local change) of a staged copy.
    local: Option<(u64, i64, i64)>,
    /// Unlinked (or replaced by a rename) while open here, with its last
    /// attributes: its data lives on in staging, unuploaded, until the
    /// last close, as POSIX has it.
    orphan: Option<Box<NodeAttr>>,
    /// Made at the first open or write: most records are of nodes the
    /// kernel only looked up.
    file: Option<Arc<AsyncMutex<Inode>>>,
    /// A directory with a default ACL when last seen: a file made in it
    /// is made on the server at once, which gives it the ACL and the mode
    /// from it (a file made by its first commit would show the mode asked
    /// until then).
    default_acl: bool,
}

/// A small file's layout, as a lookup by thread `by` found it at `at`.
struct Looked {
    layout: Arc<FileLayout>,
    by: u32,
    at: Instant,
}

/// How soon after its lookup an open counts as the same path walk.
const LOOKED_FOR: Duration = Duration::from_millis(20);

/// Layouts kept from lookups before the stale ones are swept: the map
/// holds about what `LOOKED_FOR` of lookups brought.
const LOOKED_SWEEP: usize = 64;

impl Looked {
    /// Whether an open by thread `opener` may read this layout instead of
    /// asking: close-to-open has an open see every close done before it
    /// began; a lookup of the open's own path walk came after that
    /// beginning, so what it saw is as new as what the open would see.
    /// Its own walk is the thread's open right after the lookup: the same
    /// thread, within `LOOKED_FOR` (a separate stat and open that close in
    /// is the one case taken for it).
    fn serves(&self, opener: u32) -> bool {
        self.by == opener && self.at.elapsed() < LOOKED_FOR
    }
}

struct Handle {
    id: i64,
    flags: OpenFlags,
    /// The version this handle reads, fixed at open (or first read).
    layout: AsyncMutex<Option<HeldLayout>>,
    last_end: AtomicU64,
    /// The file offset up to which partitions were fetched ahead.
    prefetched_to: AtomicU64,
    wrote: AtomicBool,
    /// The process that opened it for writing: only its closes commit.
    writer: Option<u32>,
}

/// A handle's layout, and when to renew its read grants.
struct HeldLayout {
    layout: Arc<FileLayout>,
    /// Three quarters into the life of the grant that ends first; None
    /// when no grant can be renewed (none, or all ended).
    renew_at: Option<std::time::Instant>,
}

impl HeldLayout {
    fn new(layout: Arc<FileLayout>) -> Self {
        let now = crate::grant::now_ms();
        let first_end = layout
            .fragments
            .iter()
            .flat_map(|f| f.object.grants.values())
            .filter_map(|g| crate::grant::peek::<crate::grant::Grant>(g).ok())
            .map(|g| g.exp.saturating_mul(1000))
            .min();
        let renew_at = first_end
            .filter(|&end| end > now)
            .map(|end| std::time::Instant::now() + Duration::from_millis((end - now) * 3 / 4));
        HeldLayout { layout, renew_at }
    }

    fn due(&self) -> bool {
        self.renew_at
            .is_some_and(|at| std::time::Instant::now() >= at)
    }

    /// The same version with the grants of `fresh` (the node's layout now)
    /// for the objects the two share; objects of a replaced version keep
    /// theirs.
    fn renewed(&self, fresh: FileLayout) -> Self {
        let mut grants: HashMap<String, _> = fresh
            .fragments
            .into_iter()
            .map(|f| (f.object.sha1, f.object.grants))
            .collect();
        let mut layout = (*self.layout).clone();
        for f in &mut layout.fragments {
            if let Some(g) = grants.remove(&f.object.sha1) {
                f.object.grants = g;
            }
        }
        HeldLayout::new(Arc::new(layout))
    }
}

pub struct Fs<B: Backend> {
    pub(super) backend: Arc<B>,
    cfg: FsConfig,
    /// The size files are cut into, each partition its own object.
    partition: u64,
    /// Partitions being uploaded while their files are written, at most
    /// this many at once (memory: this × partition × (k+m)/k).
    early_window: Arc<tokio::sync::Semaphore>,
    root_id: i64,
    staging: StagingArea,
    cache: Arc<BlockCache>,
    inodes: Arc<Mutex<HashMap<i64, Record>>>,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    dirs: Mutex<HashMap<u64, Arc<Vec<DirEntry>>>>,
    /// Directories this mount knows every name of, by node id.
    listed: Mutex<HashMap<i64, Listed>>,
    /// Small files' layouts from their lookups, by node id, for the opens
    /// of the same path walks.
    looked: Mutex<HashMap<i64, Looked>>,
    next_fh: AtomicU64,
    uploads: AtomicUsize,
    /// Whole staged files whose upload failed for a passing reason
    /// (storage unreachable), tried again by `retry_failed_uploads`.
    pending: Mutex<HashMap<i64, Retry>>,
    retry_wake: tokio::sync::Notify,
    /// Nodes found without `security.capability`, and when (`xattrs.rs`).
    pub(super) no_capability: Mutex<HashMap<i64, std::time::Instant>>,
    /// Files created here that the server has not made yet: their first
    /// commit makes them (one request for a new small file), or the first
    /// operation that needs them there (`materialize`).
    unborn: Mutex<HashMap<i64, Unborn>>,
    /// Node ids reserved for them, `next..=high`.
    ids: AsyncMutex<(i64, i64)>,
}

/// A file created here, not yet made on the server.
#[derive(Clone)]
struct Unborn {
    file: NewFile,
    made_ns: i64,
}

/// Node ids reserved at a time for files made at their first commit.
const ID_BATCH: u32 = 1024;

/// The version an unborn file has once made (by its commit or `make`),
/// and so the base of its staged copy.
const BORN_VER: u64 = 1;

pub(super) use crate::lock;

/// A file deleted elsewhere while open here closes fine, as an unlinked
/// file does (its bytes are kept aside at the last close).
fn gone_is_closed(r: FsResult<()>) -> FsResult<()> {
    match r {
        Err(FsError::NotFound) => Ok(()),
        r => r,
    }
}

/// The name a file's bytes take beside `name` when they cannot go there
/// (another client changed or made it first).
fn conflict_name(name: &str) -> String {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    format!("{name}.conflict-{stamp}")
}

impl Unborn {
    /// Its attributes as the server will have them (the staged copy's
    /// size and times are laid over them, as for any staged file).
    fn attr(&self) -> NodeAttr {
        let f = &self.file;
        NodeAttr {
            id: f.id,
            parent: f.parent,
            name: f.name.clone(),
            kind: NodeKind::File,
            size: 0,
            mode: f.mode,
            uid: f.uid,
            gid: f.gid,
            atime_ns: self.made_ns,
            mtime_ns: self.made_ns,
            ctime_ns: self.made_ns,
            ver_no: BORN_VER,
            target: None,
            nlink: 1,
            rdev: 0,
            default_acl: false,
            dir_change: None,
            layout: None,
        }
    }
}

/// One partition of fragment `fi` of `layout`, through the cache.
async fn partition<B: Backend>(
    backend: Arc<B>,
    cache: Arc<BlockCache>,
    layout: Arc<FileLayout>,
    fi: usize,
    index: u64,
) -> FsResult<Block> {
    let key = (layout.fragments[fi].object.sha1.clone(), index);
    cache
        .get_or_fetch(key, async move {
            backend.read_partition(&layout.fragments[fi], index).await
        })
        .await
}

/// The partitions of a version held by objects of one partition each,
/// alone in their partition: those can be referenced again as they are.
fn pieces_of(layout: &FileLayout, partition: u64) -> BTreeMap<u64, CommitFragment> {
    let alone = |f: &FragmentLayout| {
        let (from, to) = (f.offset, f.offset + partition);
        layout
            .fragments
            .iter()
            .filter(|g| g.offset < to && g.offset + g.length > from)
            .count()
            == 1
    };
    layout
        .fragments
        .iter()
        .filter(|f| {
            f.offset.is_multiple_of(partition)
                && f.object.partition_size == partition
                && f.object.plain_size <= partition
                && f.length <= f.object.plain_size
                && alone(f)
        })
        .map(|f| {
            let piece = CommitFragment {
                offset: f.offset,
                length: f.length,
                object: f.object.sha1.clone(),
                key: f.key.clone(),
            };
            (f.offset / partition, piece)
        })
        .collect()
}

impl<B: Backend> Fs<B> {
    /// Opens the filesystem; staged files a crashed mount left are uploaded
    /// (when whole) or set aside (when not), before anything is served.
    pub async fn new(backend: B, cfg: FsConfig) -> FsResult<Self> {
        let root = backend.root().await?;
        let staging = StagingArea::open(&cfg.cache_dir)?;
        let partition = backend.partition_size().await?;
        let fs = Fs {
            backend: Arc::new(backend),
            partition,
            early_window: Arc::new(tokio::sync::Semaphore::new(EARLY_WINDOW)),
            root_id: root.id,
            staging,
            cache: Arc::new(BlockCache::new(cfg.cache_size)),
            cfg,
            inodes: Arc::default(),
            handles: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            listed: Mutex::new(HashMap::new()),
            looked: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            uploads: AtomicUsize::new(0),
            pending: Mutex::new(HashMap::new()),
            retry_wake: tokio::sync::Notify::new(),
            no_capability: Mutex::new(HashMap::new()),
            unborn: Mutex::new(HashMap::new()),
            ids: AsyncMutex::new((1, 0)),
        };
        // The kernel knows the root from the start, without a lookup.
        fs.with_record(root.id, |r| r.default_acl = root.default_acl);
        crate::metrics::on_scrape(&fs.inodes, |inodes| {
            metrics::gauge!(crate::metrics::MOUNT_INODES).set(lock(inodes).len() as f64);
        });
        fs.recover().await?;
        Ok(fs)
    }

    /// Files a crashed mount staged: those its writer closed are committed
    /// to the version they started from (or become conflict copies, or
    /// stay staged for a retry, like any failed upload of this mount);
    /// unfinished ones are set aside.
    async fn recover(&self) -> FsResult<()> {
        for left in self.staging.leftovers()? {
            let id = left.node;
            match (left.complete, left.base) {
                (true, Some(base)) => {
                    let file = self.staging.reopen(id)?;
                    let md = file.metadata()?;
                    let mtime_ns = md.mtime() * 1_000_000_000 + md.mtime_nsec();
                    let name = match &left.new {
                        // Made by its commit, which may have landed before
                        // the crash (then it commits to the node again).
                        Some(new) => {
                            let u = Unborn {
                                file: new.clone(),
                                made_ns: mtime_ns,
                            };
                            lock(&self.unborn).insert(id, u);
                            Some((new.parent, new.name.clone()))
                        }
                        None => self
                            .backend
                            .getattr(id)
                            .await
                            .ok()
                            .map(|n| (n.parent, n.name)),
                    };
                    self.with_record(id, |r| {
                        r.local = Some((md.len(), mtime_ns, mtime_ns));
                        r.name = name;
                    });
                    let parts = match self.staging.load_parts(id)? {
                        Some(parts) => parts,
                        None => Parts {
                            present: (0..partition_count(md.len(), self.partition)).collect(),
                            ..Parts::default()
                        },
                    };
                    // The pieces not staged are read from the version the
                    // writer started from, while it is the file's.
                    let origin = match parts.pieces.is_empty() {
                        true => None,
                        false => self.backend.layout(id).await.ok().map(Arc::new),
                    };
                    self.inode(id).lock().await.staged = Some(Staged {
                        file: Arc::new(file),
                        size: md.len(),
                        parts,
                        origin,
                        borrowed: HashMap::new(),
                        changes: HashMap::new(),
                        early: Arc::default(),
                        inflight: Vec::new(),
                        digest: Some(Digest::default()),
                        mark: Mark::Done,
                        mtime_ns,
                        base,
                    });
                    tracing::warn!(
                        node = id,
                        base,
                        "uploading a file a crashed mount had staged"
                    );
                    self.retry(id).await;
                }
                _ => {
                    let kept = self.staging.set_aside(id, left.base)?;
                    tracing::warn!(node = id, path = %kept.display(), "staged data that was never closed is kept aside");
                }
            }
        }
        Ok(())
    }

    /// Tries the uploads that failed for a passing reason again, each on
    /// its own backoff, for as long as the mount runs.
    pub async fn retry_failed_uploads(self: Arc<Self>) {
        loop {
            let wake = self.retry_wake.notified();
            let next = lock(&self.pending).values().map(|r| r.at).min();
            match next {
                Some(at) => tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = wake => continue,
                },
                None => {
                    wake.await;
                    continue;
                }
            }
            let now = tokio::time::Instant::now();
            let due: Vec<i64> = lock(&self.pending)
                .iter()
                .filter(|(_, r)| r.at <= now)
                .map(|(&id, _)| id)
                .collect();
            for id in due {
                self.retry(id).await;
            }
        }
    }

    /// One more try of a whole staged file's upload.
    async fn retry(&self, id: i64) {
        let inode = self.inode(id);
        let mut g = inode.lock().await;
        if g.staged.as_ref().is_some_and(|s| s.mark == Mark::Done) {
            let r = if g.open == 0 {
                self.settle(id, &mut g).await
            } else {
                self.upload(id, &mut g).await
            };
            if r.is_ok() {
                tracing::warn!(node = id, "a staged file is uploaded, on a retry");
            }
        } else {
            // Written again since (its close uploads it), or settled.
            lock(&self.pending).remove(&id);
        }
        self.drop_if_idle(id, &g);
    }

    fn retry_later(&self, id: i64) {
        let mut pending = lock(&self.pending);
        let r = pending.entry(id).or_insert_with(|| Retry {
            at: tokio::time::Instant::now(),
            backoff: RETRY.build(),
        });
        let delay = r.backoff.next().unwrap_or(Duration::from_secs(60));
        r.at = tokio::time::Instant::now() + delay;
        drop(pending);
        self.retry_wake.notify_one();
    }

    fn retry_now(&self, id: i64) {
        lock(&self.pending).insert(
            id,
            Retry {
                at: tokio::time::Instant::now(),
                backoff: RETRY.build(),
            },
        );
        self.retry_wake.notify_one();
    }

    // ---- inode numbers: the node id, with the root at FUSE's inode 1 ----

    fn ino(&self, id: i64) -> u64 {
        if id == self.root_id {
            1
        } else if id == 1 {
            self.root_id as u64
        } else {
            id as u64
        }
    }

    pub(super) fn id(&self, ino: u64) -> i64 {
        if ino == 1 {
            self.root_id
        } else if ino as i64 == self.root_id {
            1
        } else {
            ino as i64
        }
    }

    fn attr(&self, n: &NodeAttr) -> Attr {
        let (size, mtime_ns, ctime_ns) = self
            .with_known(n.id, |r| {
                if n.kind == NodeKind::Dir {
                    r.default_acl = n.default_acl;
                }
                r.local
            })
            .flatten()
            .map(|(size, mtime, ctime)| (size, mtime, ctime.max(n.ctime_ns)))
            .unwrap_or((n.size, n.mtime_ns, n.ctime_ns));
        Attr {
            ino: self.ino(n.id),
            kind: n.kind,
            size,
            mode: n.mode,
            uid: n.uid,
            gid: n.gid,
            atime_ns: n.atime_ns,
            mtime_ns,
            ctime_ns,
            nlink: match (n.kind, n.nlink) {
                (NodeKind::Dir, 0) => 2,
                (_, 0) => 1,
                (_, nlink) => nlink,
            },
            rdev: n.rdev,
        }
    }

    /// Runs `f` on the record of node `id`, made if there is none.
    fn with_record<T>(&self, id: i64, f: impl FnOnce(&mut Record) -> T) -> T {
        f(lock(&self.inodes).entry(id).or_default())
    }

    /// Runs `f` on the record of node `id`, if there is one.
    fn with_known<T>(&self, id: i64, f: impl FnOnce(&mut Record) -> T) -> Option<T> {
        lock(&self.inodes).get_mut(&id).map(f)
    }

    /// The kernel is handed an entry for `n`: one more lookup to forget.
    fn handed(&self, n: &NodeAttr) -> Attr {
        self.with_record(n.id, |r| {
            r.lookups += 1;
            r.name = Some((n.parent, n.name.clone()));
        });
        self.attr(n)
    }

    /// An entry of directory `parent`'s listing was handed to the kernel
    /// with its attributes (readdirplus): it counts as a lookup, but for
    /// "." and "..", which the kernel does not count.
    pub fn handed_entry(&self, parent: u64, e: &DirEntry) {
        if e.name != "." && e.name != ".." {
            let parent = self.id(parent);
            self.with_record(self.id(e.ino), |r| {
                r.lookups += 1;
                r.name = Some((parent, e.name.clone()));
                r.default_acl = e.default_acl;
            });
        }
    }

    /// FUSE forget: the kernel dropped `count` of its lookups of `ino`; a
    /// record it no longer knows, with nothing open or staged, goes.
    pub fn forget(&self, ino: u64, count: u64) {
        let id = self.id(ino);
        let mut inodes = lock(&self.inodes);
        let Some(r) = inodes.get_mut(&id) else {
            return;
        };
        r.lookups = r.lookups.saturating_sub(count);
        // No other task holds the node (the map alone does), so none is
        // about to open it or upload it.
        let idle = r.lookups == 0
            && r.file.as_ref().is_none_or(|f| {
                Arc::strong_count(f) == 1
                    && f.try_lock()
                        .is_ok_and(|g| g.open == 0 && g.staged.is_none())
            });
        if idle {
            inodes.remove(&id);
        }
    }

    /// How many nodes this mount keeps a record of, the root's aside (kept
    /// from the start: the kernel knows the root without a lookup).
    pub fn inode_count(&self) -> usize {
        lock(&self.inodes).len().saturating_sub(1)
    }

    /// The node's path as far as this mount knows it (a transfer's label).
    fn path_of(&self, mut id: i64) -> String {
        let inodes = lock(&self.inodes);
        let mut parts = Vec::new();
        while let Some((parent, name)) = inodes.get(&id).and_then(|r| r.name.as_ref()) {
            parts.push(name.clone());
            id = *parent;
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }

    fn inode(&self, id: i64) -> Arc<AsyncMutex<Inode>> {
        self.with_record(id, |r| r.file.get_or_insert_default().clone())
    }

    /// A node with no open handle and no staged data: no local size and
    /// no orphan any more, and no record once the kernel forgot it.
    fn drop_if_idle(&self, id: i64, inode: &Inode) {
        if inode.open == 0 && inode.staged.is_none() {
            let mut inodes = lock(&self.inodes);
            let Some(r) = inodes.get_mut(&id) else {
                return;
            };
            r.local = None;
            r.orphan = None;
            // Only when no other task holds it (the map and our caller do):
            // one waiting for its lock (an open) must find it in the map
            // afterwards, not a fresh, unopened copy.
            if r.lookups == 0 && r.file.as_ref().is_none_or(|f| Arc::strong_count(f) <= 2) {
                inodes.remove(&id);
            }
        }
    }

    fn handle(&self, fh: u64) -> FsResult<Arc<Handle>> {
        lock(&self.handles)
            .get(&fh)
            .cloned()
            .ok_or(FsError::BadHandle)
    }

    // ---- metadata ----

    /// Looks `name` up for thread `asker`.
    pub async fn lookup(&self, parent: u64, name: &str, asker: u32) -> FsResult<Attr> {
        let parent = self.id(parent);
        if let Some(n) = self.unborn_named(parent, name) {
            return Ok(self.handed(&n));
        }
        if self.surely_absent(parent, name).await {
            return Err(FsError::NotFound);
        }
        let mut n = self.backend.lookup(parent, name).await?;
        if let Some(l) = n.layout.take() {
            let mut looked = lock(&self.looked);
            if looked.len() >= LOOKED_SWEEP {
                looked.retain(|_, l| l.at.elapsed() < LOOKED_FOR);
            }
            let l = Looked {
                layout: Arc::new(*l),
                by: asker,
                at: Instant::now(),
            };
            looked.insert(n.id, l);
        }
        Ok(self.handed(&n))
    }

    /// Whether directory `dir`'s listing says `name` is not there: checked
    /// within the TTL, or its mtime unchanged since (asked now).
    async fn surely_absent(&self, dir: i64, name: &str) -> bool {
        match lock(&self.listed).get(&dir) {
            Some(l) if !l.names.contains(name) && l.checked.elapsed() < TTL => return true,
            Some(l) if !l.names.contains(name) => {}
            _ => return false,
        }
        // Checked now, or dropped when changed.
        let _ = self.dir_attr(dir).await;
        lock(&self.listed)
            .get(&dir)
            .is_some_and(|l| !l.names.contains(name))
    }

    /// Keeps the listing of directory `dir` (attributes and names, as
    /// asked at `at`). A full map gives up the listing checked longest ago.
    fn keep_listing(&self, dir: &NodeAttr, names: HashSet<String>, at: Instant) {
        let mut listed = lock(&self.listed);
        if names.len() > LISTED_NAMES {
            listed.remove(&dir.id);
            return;
        }
        if listed.len() >= LISTED_DIRS && !listed.contains_key(&dir.id) {
            let oldest = listed
                .iter()
                .min_by_key(|(_, l)| l.checked)
                .map(|(&d, _)| d);
            if let Some(d) = oldest {
                listed.remove(&d);
            }
        }
        let l = Listed {
            attr: dir.clone(),
            attr_at: at,
            names,
            checked: at,
        };
        listed.insert(dir.id, l);
    }

    /// This mount changed `dir` by a request sent at `at`, which the server
    /// answered with `change`: a listing whole just before the change stays
    /// whole with `edit` applied; any other listing of `dir` goes.
    fn changed(
        &self,
        dir: i64,
        change: Option<DirChange>,
        at: Instant,
        edit: impl FnOnce(&mut NodeAttr, &mut HashSet<String>),
    ) {
        let mut listed = lock(&self.listed);
        match (listed.get_mut(&dir), change) {
            (Some(l), Some(c)) if c.dir == dir && c.before == l.attr.mtime_ns => {
                edit(&mut l.attr, &mut l.names);
                l.attr.mtime_ns = c.after;
                l.attr.ctime_ns = c.after;
                l.checked = at;
                if l.names.len() > LISTED_NAMES {
                    listed.remove(&dir);
                }
            }
            _ => {
                listed.remove(&dir);
            }
        }
    }

    /// `backend.make`, keeping the parent's listing whole.
    async fn make_node(&self, req: MakeRequest) -> FsResult<NodeAttr> {
        let (parent, at) = (req.parent, Instant::now());
        let n = self.backend.make(req).await;
        match &n {
            Ok(n) => {
                self.no_capability_yet(n.id);
                self.changed(parent, n.dir_change, at, |dir, names| {
                    names.insert(n.name.clone());
                    // 2 + subdirectories (0: not counted, as in MemoryBackend).
                    if n.kind == NodeKind::Dir && dir.nlink > 0 {
                        dir.nlink += 1;
                    }
                })
            }
            // EEXIST included: the name is there after all.
            Err(_) => self.changed(parent, None, at, |_, _| {}),
        }
        n
    }

    /// A node id of those reserved for files made at their first commit.
    async fn fresh_id(&self) -> FsResult<i64> {
        let mut ids = self.ids.lock().await;
        if ids.0 > ids.1 {
            let r = self.backend.reserve_ids(ID_BATCH).await?;
            *ids = (r.low, r.high);
        }
        ids.0 += 1;
        Ok(ids.0 - 1)
    }

    /// The unborn file named `name` in `parent`.
    fn unborn_named(&self, parent: i64, name: &str) -> Option<NodeAttr> {
        lock(&self.unborn)
            .values()
            .find(|u| u.file.parent == parent && u.file.name == name)
            .map(Unborn::attr)
    }

    /// Makes an unborn file on the server now, for an operation that needs
    /// it there (a rename, a link, xattrs, chmod...); its bytes follow at
    /// its commit, as for any file.
    pub(super) async fn materialize(&self, id: i64) -> FsResult<()> {
        if !lock(&self.unborn).contains_key(&id) {
            return Ok(());
        }
        let inode = self.inode(id);
        let _g = inode.lock().await;
        self.make_unborn(id).await
    }

    /// `materialize` of the unborn file named `name` in `parent`, if any.
    async fn materialize_named(&self, parent: i64, name: &str) -> FsResult<()> {
        match self.unborn_named(parent, name) {
            Some(n) => self.materialize(n.id).await,
            None => Ok(()),
        }
    }

    /// `materialize`, the caller holding the file's lock.
    async fn make_unborn(&self, id: i64) -> FsResult<()> {
        for _ in 0..2 {
            let Some(u) = lock(&self.unborn).get(&id).cloned() else {
                return Ok(());
            };
            let f = u.file;
            let req = MakeRequest {
                id: Some(id),
                parent: f.parent,
                name: f.name,
                kind: NodeKind::File,
                mode: f.mode,
                uid: f.uid,
                gid: f.gid,
                umask: f.umask,
                target: None,
                rdev: 0,
            };
            match self.make_node(req).await {
                Ok(_) => {
                    lock(&self.unborn).remove(&id);
                    return Ok(());
                }
                Err(FsError::Exists) => {
                    self.unborn_to_conflict(id);
                }
                Err(e) => return Err(e),
            }
        }
        Err(FsError::Exists)
    }

    /// Another client made the name an unborn file was to have: the file
    /// takes a conflict name beside it instead, which is returned.
    fn unborn_to_conflict(&self, id: i64) -> Option<String> {
        let (parent, name, was) = {
            let mut unborn = lock(&self.unborn);
            let f = &mut unborn.get_mut(&id)?.file;
            let conflict = conflict_name(&f.name);
            let was = std::mem::replace(&mut f.name, conflict);
            (f.parent, f.name.clone(), was)
        };
        self.with_record(id, |r| r.name = Some((parent, name.clone())));
        tracing::warn!(node = id, %was, %name, "a name this mount was making was made elsewhere: the new file takes a conflict name");
        Some(name)
    }

    /// ENOTEMPTY when the directory `name` in `parent` holds unborn files
    /// (the server sees it empty).
    async fn refuse_unborn_within(&self, parent: i64, name: &str) -> FsResult<()> {
        let parents: HashSet<i64> = lock(&self.unborn).values().map(|u| u.file.parent).collect();
        if parents.is_empty() {
            return Ok(());
        }
        match self.backend.lookup(parent, name).await {
            Ok(dir) if parents.contains(&dir.id) => Err(FsError::NotEmpty),
            _ => Ok(()),
        }
    }

    pub async fn getattr(&self, ino: u64) -> FsResult<Attr> {
        let id = self.id(ino);
        if let Some(a) = self.orphan_attr(id) {
            return Ok(a);
        }
        let unborn = lock(&self.unborn).get(&id).map(Unborn::attr);
        if let Some(n) = unborn {
            return Ok(self.attr(&n));
        }
        let known = lock(&self.listed)
            .get(&id)
            .filter(|l| l.attr_at.elapsed() < TTL)
            .map(|l| l.attr.clone());
        if let Some(n) = known {
            return Ok(self.attr(&n));
        }
        // Gone since the kernel looked it up (e.g. renamed over): ESTALE
        // makes the kernel look the path up again.
        let n = self.dir_attr(id).await.map_err(FsError::stale_if_gone)?;
        Ok(self.attr(&n))
    }

    /// `backend.getattr`; a listed directory found unchanged has its listing
    /// checked now, one found changed loses it.
    async fn dir_attr(&self, id: i64) -> FsResult<NodeAttr> {
        let at = Instant::now();
        let n = self.backend.getattr(id).await;
        let mut listed = lock(&self.listed);
        match (listed.get_mut(&id), &n) {
            (Some(l), Ok(n)) if l.attr.mtime_ns == n.mtime_ns => {
                l.attr = n.clone();
                l.attr_at = at;
                l.checked = at;
            }
            (Some(_), _) => {
                listed.remove(&id);
            }
            (None, _) => {}
        }
        n
    }

    /// The attributes of a file unlinked while open: no links left.
    fn orphan_attr(&self, id: i64) -> Option<Attr> {
        let n = *self.with_known(id, |r| r.orphan.clone()).flatten()?;
        Some(Attr {
            nlink: 0,
            ..self.attr(&n)
        })
    }

    /// Before the entry `(parent, name)` goes away: if it is a file open
    /// here, keep it for its open descriptors, which may still read and
    /// write it (a writer gets a local copy). The file stays locked until
    /// `kept_outcome`, after the removal: an open racing with it either
    /// counts here, or finds the node gone (ESTALE: the kernel looks the
    /// name up again and opens what replaced it).
    async fn keep_if_open(&self, parent: i64, name: &str) -> FsResult<Option<Victim>> {
        // Always ask which node the entry is: an open may be on its way in.
        // A file with another name lives on under it.
        let n = match self.backend.lookup(parent, name).await {
            Ok(n) if n.kind == NodeKind::File && n.nlink <= 1 => n,
            _ => return Ok(None),
        };
        let id = n.id;
        let mut g = self.inode(id).lock_owned().await;
        let mut kept = false;
        if g.open > 0 {
            // Readers keep the version they opened; a writer needs a local copy.
            let writers = lock(&self.handles)
                .values()
                .any(|h| h.id == id && h.flags.write);
            if writers {
                // Its objects go with the entry: every byte is kept here.
                let staged = match self.stage(id, &mut g, None, None).await {
                    Ok(()) => self.fetch_pieces(g.staged.as_mut().expect("staged")).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = staged {
                    self.drop_if_idle(id, &g);
                    return Err(e);
                }
            }
            self.with_record(id, |r| r.orphan = Some(Box::new(n)));
            kept = true;
        }
        Ok(Some(Victim { id, g, kept }))
    }

    async fn make(
        &self,
        parent: u64,
        name: &str,
        kind: NodeKind,
        mode: u32,
        owner: Owner,
        target: Option<String>,
    ) -> FsResult<NodeAttr> {
        let req = MakeRequest {
            id: None,
            parent: self.id(parent),
            name: name.to_string(),
            kind,
            mode: self.masked(self.id(parent), mode, owner),
            uid: owner.uid,
            gid: owner.gid,
            umask: owner.umask,
            target,
            rdev: 0,
        };
        self.make_node(req).await
    }

    pub async fn mkdir(&self, parent: u64, name: &str, mode: u32, owner: Owner) -> FsResult<Attr> {
        let at = Instant::now();
        let n = self
            .make(parent, name, NodeKind::Dir, mode, owner, None)
            .await?;
        // A new directory: its listing is whole, and empty.
        self.keep_listing(&n, HashSet::new(), at);
        Ok(self.handed(&n))
    }

    /// mknod: a regular file, or a FIFO, socket or device node (kept as a
    /// node with its device number; the kernel gives it its meaning).
    pub async fn mknod(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        rdev: u32,
        owner: Owner,
    ) -> FsResult<Attr> {
        let kind = match mode & libc::S_IFMT {
            0 | libc::S_IFREG => NodeKind::File,
            libc::S_IFIFO => NodeKind::Fifo,
            libc::S_IFSOCK => NodeKind::Socket,
            libc::S_IFCHR => NodeKind::CharDevice,
            libc::S_IFBLK => NodeKind::BlockDevice,
            _ => return Err(FsError::Invalid("unknown file type".into())),
        };
        let req = MakeRequest {
            id: None,
            parent: self.id(parent),
            name: name.to_string(),
            kind,
            mode: self.masked(self.id(parent), mode & 0o7777, owner),
            uid: owner.uid,
            gid: owner.gid,
            umask: owner.umask,
            target: None,
            rdev: match kind {
                NodeKind::CharDevice | NodeKind::BlockDevice => rdev,
                _ => 0,
            },
        };
        let n = self.make_node(req).await?;
        Ok(self.handed(&n))
    }

    pub async fn symlink(
        &self,
        parent: u64,
        name: &str,
        target: &str,
        owner: Owner,
    ) -> FsResult<Attr> {
        let n = self
            .make(
                parent,
                name,
                NodeKind::Symlink,
                0o777,
                owner,
                Some(target.to_string()),
            )
            .await?;
        Ok(self.handed(&n))
    }

    pub async fn readlink(&self, ino: u64) -> FsResult<String> {
        let n = self.backend.getattr(self.id(ino)).await?;
        n.target
            .ok_or_else(|| FsError::Invalid("not a symlink".into()))
    }

    pub async fn unlink(&self, parent: u64, name: &str) -> FsResult<()> {
        self.materialize_named(self.id(parent), name).await?;
        let kept = self.keep_if_open(self.id(parent), name).await?;
        let r = self.remove(parent, name, false).await;
        self.kept_outcome(kept, &r);
        r
    }

    /// `backend.remove`, keeping the parent's listing whole.
    async fn remove(&self, parent: u64, name: &str, dir: bool) -> FsResult<()> {
        let (parent, at) = (self.id(parent), Instant::now());
        let req = RemoveRequest {
            parent,
            name: name.to_string(),
            dir,
        };
        let r = self.backend.remove(req).await;
        self.changed(parent, r.as_ref().ok().copied(), at, |attr, names| {
            names.remove(name);
            if dir && attr.nlink > 2 {
                attr.nlink -= 1;
            }
        });
        if dir {
            // The removed directory's own (its attributes are no more).
            lock(&self.listed)
                .retain(|_, l| (l.attr.parent, l.attr.name.as_str()) != (parent, name));
        }
        r.map(drop)
    }

    /// After the removal: a node kept for its open descriptors stays an
    /// ordinary file when its entry did not go away after all; a closed
    /// one that went away takes its staged copy (an upload still to be
    /// retried) with it; the lock taken by `keep_if_open` is let go.
    fn kept_outcome<T>(&self, victim: Option<Victim>, r: &FsResult<T>) {
        if let Some(mut v) = victim {
            if v.kept && r.is_err() {
                self.with_known(v.id, |r| r.orphan = None);
            }
            if !v.kept && r.is_ok() {
                if let Some(st) = v.g.staged.take() {
                    self.staging.remove(v.id, st.base);
                    lock(&self.pending).remove(&v.id);
                }
            }
            self.drop_if_idle(v.id, &v.g);
        }
    }

    pub async fn rmdir(&self, parent: u64, name: &str) -> FsResult<()> {
        self.refuse_unborn_within(self.id(parent), name).await?;
        self.remove(parent, name, true).await
    }

    /// link(2): the node gets the name `new_name` in `new_parent` too; the
    /// answer carries the new link count, which the kernel shows through
    /// every name (one inode).
    pub async fn link(&self, ino: u64, new_parent: u64, new_name: &str) -> FsResult<Attr> {
        self.materialize(self.id(ino)).await?;
        self.unlist(self.id(new_parent));
        let n = self
            .backend
            .link(LinkRequest {
                id: self.id(ino),
                new_parent: self.id(new_parent),
                new_name: new_name.to_string(),
            })
            .await?;
        // The reply hands the kernel an entry: a lookup it will forget.
        Ok(self.handed(&n))
    }

    pub async fn rename(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        noreplace: bool,
        exchange: bool,
    ) -> FsResult<()> {
        let req = RenameRequest {
            parent: self.id(parent),
            name: name.to_string(),
            new_parent: self.id(new_parent),
            new_name: new_name.to_string(),
            noreplace,
            exchange,
        };
        // Both names as the server is to see them; a directory replaced
        // must be empty here too.
        self.materialize_named(req.parent, name).await?;
        self.materialize_named(req.new_parent, new_name).await?;
        self.refuse_unborn_within(req.new_parent, new_name).await?;
        // A file replaced by the rename lives on for its open descriptors.
        let same = parent == new_parent && name == new_name;
        let kept = if noreplace || exchange || same {
            None
        } else {
            self.keep_if_open(req.new_parent, new_name).await?
        };
        let (from, to) = (req.parent, req.new_parent);
        let r = self.backend.rename(req).await;
        // Both directories, and the directories moved or replaced (their
        // ctime and "..").
        lock(&self.listed).retain(|&d, l| {
            let n = (l.attr.parent, l.attr.name.as_str());
            d != from && d != to && n != (from, name) && n != (to, new_name)
        });
        self.kept_outcome(kept, &r);
        r
    }

    /// The mode to ask for a node made in `dir`: less the umask, unless the
    /// directory has a default ACL, which sets the mode from the mode as
    /// asked. The server applies the umask the same way; applied here
    /// too, a server that predates `umask` still makes the mode right.
    fn masked(&self, dir: i64, mode: u32, owner: Owner) -> u32 {
        match self.with_known(dir, |r| r.default_acl) {
            Some(true) => mode,
            _ => mode & !owner.umask,
        }
    }

    /// Attribute `name` of node `id` was just set (or removed): a default
    /// ACL is recorded at once, for the next file made in the directory.
    pub(super) fn default_acl_now(&self, id: i64, name: &str, set: bool) {
        if name == crate::meta::acl::DEFAULT {
            self.with_known(id, |r| r.default_acl = set);
        }
    }

    /// Forgets a directory's listing (changed in a way this mount does
    /// not follow).
    pub(super) fn unlist(&self, dir: i64) {
        lock(&self.listed).remove(&dir);
    }

    pub async fn statfs(&self) -> FsResult<FsStats> {
        self.backend.statfs().await
    }

    pub async fn setattr(&self, ino: u64, s: SetAttr) -> FsResult<Attr> {
        let id = self.id(ino);
        let resize_only = s.mode.is_none()
            && s.uid.is_none()
            && s.gid.is_none()
            && s.atime_ns.is_none()
            && s.mtime_ns.is_none();
        if !resize_only {
            self.materialize(id).await?;
        }
        self.unlist(id);
        if let Some(size) = s.size {
            self.truncate(id, size).await?;
        }
        let changes = SetAttrs {
            mode: s.mode,
            uid: s.uid,
            gid: s.gid,
            atime_ns: s.atime_ns,
            mtime_ns: s.mtime_ns,
        };
        if !resize_only {
            if let Some(mtime) = s.mtime_ns {
                // A staged file keeps the time it was given when it is uploaded.
                let inode = self.with_known(id, |r| r.file.clone()).flatten();
                if let Some(inode) = inode {
                    if let Some(st) = inode.lock().await.staged.as_mut() {
                        st.mtime_ns = mtime;
                        self.with_record(id, |r| r.local = Some((st.size, mtime, now_ns())));
                    }
                }
            }
            let orphan = self
                .with_known(id, |r| {
                    r.orphan.as_mut().map(|n| {
                        // Unlinked while open: its attributes live here until the
                        // last close.
                        if let Some(mode) = s.mode {
                            n.mode = mode & 0o7777;
                        }
                        n.uid = s.uid.unwrap_or(n.uid);
                        n.gid = s.gid.unwrap_or(n.gid);
                        n.atime_ns = s.atime_ns.unwrap_or(n.atime_ns);
                        n.mtime_ns = s.mtime_ns.unwrap_or(n.mtime_ns);
                        n.ctime_ns = now_ns();
                    })
                })
                .flatten();
            if orphan.is_some() {
                return self.getattr(ino).await;
            }
            let n = self
                .backend
                .setattr(SetAttrRequest { id, attrs: changes })
                .await?;
            return Ok(self.attr(&n));
        }
        self.getattr(ino).await
    }

    async fn truncate(&self, id: i64, size: u64) -> FsResult<()> {
        let inode = self.inode(id);
        let mut g = inode.lock().await;
        let result = async {
            self.stage(id, &mut g, Some(size), None).await?;
            let st = g.staged.as_mut().expect("staged");
            self.resize(st, size).await?;
            self.dirtied(id, st)?;
            if g.open == 0 {
                // truncate(2) on a path: no close will follow, so commit now.
                self.settle(id, &mut g).await?;
            }
            Ok(())
        }
        .await;
        self.drop_if_idle(id, &g);
        result
    }

    // ---- staging ----

    /// Makes sure `g` has a local copy of the file. Partitions stored as
    /// objects of their own stay there until a write needs them; bytes in
    /// other objects (a file written before partitions: all of it), up to
    /// `keep` (all by default), are fetched now. `base` is the file's
    /// version when the caller knows it.
    async fn stage(
        &self,
        id: i64,
        g: &mut Inode,
        keep: Option<u64>,
        base: Option<u64>,
    ) -> FsResult<()> {
        if g.staged.is_some() {
            return Ok(());
        }
        let file = self.staging.create(id)?;
        // Keeping nothing (a new file, O_TRUNC, truncate to 0) needs no layout.
        let (size, base, origin) = if keep == Some(0) {
            let base = match base {
                Some(v) => v,
                None => self.backend.getattr(id).await?.ver_no,
            };
            (0, base, None)
        } else {
            let layout = Arc::new(self.backend.layout(id).await?);
            (layout.size, layout.ver_no, Some(layout))
        };
        // Not on the fresh, empty file: ext4 takes a truncate to 0 as a
        // rewrite and writes the file out at its next close.
        if size > 0 {
            file.set_len(size)?;
        }
        let mut st = Staged {
            file: Arc::new(file),
            size,
            parts: Parts {
                pieces: origin
                    .as_deref()
                    .map(|l| pieces_of(l, self.partition))
                    .unwrap_or_default(),
                ..Parts::default()
            },
            origin,
            borrowed: HashMap::new(),
            changes: HashMap::new(),
            early: Arc::default(),
            inflight: Vec::new(),
            digest: Some(Digest::default()),
            mark: Mark::Clean,
            mtime_ns: now_ns(),
            base,
        };
        if let Some(layout) = st.origin.clone() {
            let keep = keep.unwrap_or(size).min(size);
            let p = self.partition;
            let loose: Vec<u64> = (0..keep.div_ceil(p))
                .filter(|i| !st.parts.pieces.contains_key(i))
                .filter(|&i| {
                    layout
                        .fragments
                        .iter()
                        .any(|f| f.partitions_in(i * p, (i + 1) * p).next().is_some())
                })
                .collect();
            for run in loose.chunk_by(|a, b| b - a == 1) {
                // In steps of a few partitions, fetched in parallel.
                for step in run.chunks(4) {
                    let from = step[0] * p;
                    let to = ((step[step.len() - 1] + 1) * p).min(keep);
                    let data = self.read_layout(&layout, from, to - from, None).await?;
                    st.file.write_all_at(&data, from)?;
                }
                st.parts.present.extend(run);
            }
        }
        g.staged = Some(st);
        Ok(())
    }

    /// Bytes `[offset, offset + len)` of a staged file: its own partitions
    /// and holes from the data file, the others from their objects.
    async fn read_staged(&self, st: &Staged, offset: u64, len: u64) -> FsResult<Vec<u8>> {
        let end = offset.saturating_add(len).min(st.size);
        let mut buf = vec![0u8; end.saturating_sub(offset) as usize];
        if buf.is_empty() {
            return Ok(buf);
        }
        // Partitions not staged are holes in the data file: zeros.
        st.file.read_exact_at(&mut buf, offset)?;
        let p = self.partition;
        let unstaged = st
            .parts
            .pieces
            .range(offset / p..=(end - 1) / p)
            .filter(|(i, _)| !st.parts.present.contains(i));
        for (&i, piece) in unstaged {
            let lo = offset.max(piece.offset);
            let hi = end.min(piece.offset + piece.length);
            if lo < hi {
                let data = self.read_piece(st, i, lo, hi - lo).await?;
                buf[(lo - offset) as usize..(hi - offset) as usize].copy_from_slice(&data);
            }
        }
        Ok(buf)
    }

    /// Where stored piece `i` of a staged file is read: the file it was
    /// copied from, or the version the staged file started from (when that
    /// version holds it: a crashed mount's copies are not known).
    fn source_of(&self, st: &Staged, i: u64) -> Option<Source> {
        if let Some(b) = st.borrowed.get(&i) {
            return Some(b.clone());
        }
        let piece = st.parts.pieces.get(&i)?;
        let origin = st.origin.as_ref()?;
        origin
            .fragments
            .iter()
            .any(|f| f.offset == piece.offset && f.object.sha1 == piece.object)
            .then(|| Source {
                layout: origin.clone(),
                at: piece.offset,
            })
    }

    /// Bytes `[offset, offset + len)` of the file, inside stored piece `i`.
    async fn read_piece(&self, st: &Staged, i: u64, offset: u64, len: u64) -> FsResult<Block> {
        let Source { layout, at } = self.source_of(st, i).ok_or_else(|| {
            FsError::Io("the stored partition this staged file refers to is gone".into())
        })?;
        let from = at + (offset - i * self.partition);
        let data = self.read_layout(&layout, from, len, None).await?;
        if data.len() as u64 != len {
            return Err(FsError::Io(
                "a stored partition is shorter than its fragment".into(),
            ));
        }
        Ok(data)
    }

    /// Brings partition `i` into the data file, if it is not there.
    async fn fetch_piece(&self, st: &mut Staged, i: u64) -> FsResult<()> {
        if st.parts.present.contains(&i) {
            return Ok(());
        }
        if let Some(piece) = st.parts.pieces.get(&i) {
            let (offset, length) = (piece.offset, piece.length);
            let data = self.read_piece(st, i, offset, length).await?;
            st.file.write_all_at(&data, offset)?;
        }
        st.parts.present.insert(i);
        Ok(())
    }

    /// Brings every partition into the data file.
    async fn fetch_pieces(&self, st: &mut Staged) -> FsResult<()> {
        let pieces: Vec<u64> = st.parts.pieces.keys().copied().collect();
        for i in pieces {
            self.fetch_piece(st, i).await?;
        }
        Ok(())
    }

    /// Makes the partitions holding bytes `[from, to)` the data file's own,
    /// about to change: a partition the caller `overwrites` whole needs no
    /// fetch. Their stored objects no longer hold them.
    async fn own(&self, st: &mut Staged, from: u64, to: u64, overwrites: bool) -> FsResult<()> {
        if from >= to {
            return Ok(());
        }
        let p = self.partition;
        for i in from / p..=(to - 1) / p {
            let whole = st
                .parts
                .pieces
                .get(&i)
                .is_some_and(|piece| from <= piece.offset && piece.offset + piece.length <= to);
            if !(overwrites && whole) {
                self.fetch_piece(st, i).await?;
            }
            st.parts.present.insert(i);
            st.parts.pieces.remove(&i);
            st.borrowed.remove(&i);
            *st.changes.entry(i).or_default() += 1;
        }
        Ok(())
    }

    /// truncate(2) of a staged file: the partition cut in two is fetched
    /// and changes; those past the end go.
    async fn resize(&self, st: &mut Staged, size: u64) -> FsResult<()> {
        if size < st.size && !size.is_multiple_of(self.partition) {
            self.own(st, size, size + 1, false).await?;
        }
        st.file.set_len(size)?;
        st.size = size;
        self.drop_beyond(st);
        // Emptied, the file's hash starts again; cut inside what was
        // hashed, it can no longer be had.
        let hashed = st.digest.as_ref().map_or(0, |d| d.stamps.len() as u64);
        if size == 0 {
            st.digest = Some(Digest::default());
        } else if size < hashed * self.partition {
            st.digest = None;
        }
        Ok(())
    }

    /// Forgets partitions wholly past the end of a staged file.
    fn drop_beyond(&self, st: &mut Staged) {
        let count = st.size.div_ceil(self.partition);
        st.parts.present.retain(|&i| i < count);
        st.parts.pieces.retain(|&i, _| i < count);
    }

    /// Marks a staged file changed: a marker on disk (so a crash keeps it,
    /// and not as whole) and its size and time for getattr.
    fn dirtied(&self, id: i64, st: &mut Staged) -> FsResult<()> {
        if st.mark != Mark::Open {
            self.staging.mark(id, st.base, false)?;
            st.mark = Mark::Open;
        }
        st.mtime_ns = now_ns();
        let local = (st.size, st.mtime_ns, st.mtime_ns);
        self.with_record(id, |r| r.local = Some(local));
        Ok(())
    }

    /// Uploads a changed staged file as the node's new version, if the
    /// node is still at the version the copy started from. On a failure
    /// that passes (storage unreachable) the copy stays staged and whole,
    /// and is tried again later; when the file moved on, the copy becomes
    /// a conflict copy beside it.
    async fn upload(&self, id: i64, g: &mut Inode) -> FsResult<()> {
        let Some(st) = g.staged.as_mut().filter(|s| s.mark != Mark::Clean) else {
            return Ok(());
        };
        if self.with_known(id, |r| r.orphan.is_some()) == Some(true) {
            // Unlinked here: nothing to upload to.
            self.staging.drop_marker(id, st.base, st.mark == Mark::Done);
            st.mark = Mark::Clean;
            return Ok(());
        }
        if st.mark == Mark::Open {
            // What a crash must know to commit it: which partitions the data
            // file holds, and where the others are.
            let whole = st.parts.pieces.is_empty()
                && st.parts.present.len() as u64 >= st.size.div_ceil(self.partition);
            if whole {
                self.staging.clear_parts(id);
            } else {
                self.staging.save_parts(id, &st.parts)?;
            }
            self.staging.mark(id, st.base, true)?;
            st.mark = Mark::Done;
        }
        self.uploads.fetch_add(1, Ordering::SeqCst);
        let mut result = self.store(id, st).await;
        // The name of a file this commit was to make was made elsewhere.
        let mut renamed = None;
        if result == Err(FsError::Exists) {
            renamed = self.unborn_to_conflict(id);
            if renamed.is_some() {
                result = self.store(id, st).await;
            }
        }
        self.uploads.fetch_sub(1, Ordering::SeqCst);
        if result.is_err() {
            // The kernel's pages hold bytes that are not the file's
            // version: the next open must not keep them.
            self.with_known(id, |r| r.kernel_ver = None);
        }
        match result {
            Ok(ver) => {
                self.staging.drop_marker(id, st.base, true);
                st.mark = Mark::Clean;
                st.base = ver;
                self.with_record(id, |r| r.kernel_ver = Some(ver));
                // A lookup's layout is of the version this one replaced.
                lock(&self.looked).remove(&id);
                lock(&self.pending).remove(&id);
                match renamed {
                    Some(name) => Err(FsError::Io(format!(
                        "the name was made elsewhere meanwhile; the bytes written are in {name}"
                    ))),
                    None => Ok(()),
                }
            }
            Err(e) if e.passing() => {
                tracing::warn!(node = id, error = %e, "upload failed; the file stays staged and is tried again");
                self.retry_later(id);
                Err(e)
            }
            Err(FsError::Conflict) => self.divert(id, g).await,
            Err(e) => {
                // Refused for good (over quota, deleted elsewhere): not
                // retried; a writer may change it and try again, and the
                // last close keeps it aside.
                lock(&self.pending).remove(&id);
                self.staging.mark(id, st.base, false)?;
                st.mark = Mark::Open;
                Err(e)
            }
        }
    }

    /// Uploads partition `i` of a staged file in the background, once the
    /// window has room (the writer waits for it). Its object is used at
    /// the commit if the partition did not change since.
    async fn upload_early(&self, id: i64, st: &mut Staged, i: u64) {
        let p = self.partition;
        st.inflight.retain(|job| !job.is_finished());
        drain_early(st, p);
        let Ok(permit) = self.early_window.clone().acquire_owned().await else {
            return;
        };
        let span = PartitionSpan {
            offset: i * p,
            len: p,
        };
        let change = st.changes.get(&i).copied().unwrap_or_default();
        let (backend, file, early) = (self.backend.clone(), st.file.clone(), st.early.clone());
        let name = self.path_of(id);
        st.inflight.push(tokio::spawn(async move {
            let keep = |_: u64, stored: &Bytes| {
                let stored = Some(stored.clone());
                let e = Early {
                    change,
                    stored,
                    fragment: None,
                };
                lock(&early).insert(i, e);
            };
            match backend.upload_partitions(&name, file, &[span], &keep).await {
                Ok(mut f) if f.len() == 1 => {
                    if let Some(e) = lock(&early).get_mut(&i).filter(|e| e.change == change) {
                        e.fragment = Some(f.remove(0));
                    }
                }
                Ok(_) => {}
                // Uploaded again at close.
                Err(e) => {
                    tracing::debug!(node = id, partition = i, error = %e, "early upload failed")
                }
            }
            drop(permit);
        }));
    }

    /// Stores a staged file and commits it as the node's new version, if
    /// the node is still at the version the copy started from. A file of
    /// one partition, none of it stored yet, goes as one object (inline or
    /// replicated when small); any other as its partitions, those changed
    /// uploaded, the others referenced where they are.
    async fn store(&self, id: i64, st: &mut Staged) -> FsResult<u64> {
        let attrs = FileAttrs {
            mode: None,
            mtime_ns: Some(st.mtime_ns),
        };
        let name = self.path_of(id);
        let p = self.partition;
        let unborn = lock(&self.unborn).get(&id).cloned();
        if let Some(u) = unborn {
            if st.parts.pieces.is_empty() && st.size <= INLINE_MAX {
                let at = Instant::now();
                let staged = self.staging.data_path(id);
                let c = self
                    .backend
                    .upload_new(&u.file, &name, &staged, attrs)
                    .await?;
                lock(&self.unborn).remove(&id);
                self.changed(u.file.parent, c.dir_change, at, |_, names| {
                    names.insert(u.file.name.clone());
                });
                return Ok(c.ver_no);
            }
            // Too big for one request: made first, then stored as any file.
            self.make_unborn(id).await?;
        }
        if st.parts.pieces.is_empty() && st.size <= p {
            let staged = self.staging.data_path(id);
            return self
                .backend
                .upload(id, &name, &staged, attrs, st.base)
                .await;
        }
        let count = st.size.div_ceil(p);
        for job in st.inflight.drain(..) {
            let _ = job.await;
        }
        drain_early(st, p);
        let mut pieces = st.parts.pieces.clone();
        let early = std::mem::take(&mut *lock(&st.early));
        for (i, e) in early {
            let len = st.size.saturating_sub(i * p).min(p);
            let current = st.changes.get(&i) == Some(&e.change);
            match e.fragment {
                Some(f) if current && f.length == len && !pieces.contains_key(&i) => {
                    pieces.insert(i, f);
                }
                _ => {}
            }
        }
        let mut todo: Vec<u64> = (0..count)
            .filter(|i| st.parts.present.contains(i) && !pieces.contains_key(i))
            .collect();
        let size = st.size;
        let stamp = |i: u64| {
            let change = st.changes.get(&i).copied().unwrap_or_default();
            (change, (size - i * p).min(p))
        };
        let digest = Mutex::new(st.digest.take());
        let to_digest = |offset: u64, stored: &Bytes| {
            let i = offset / p;
            feed(&mut lock(&digest), i, stamp(i), stored);
        };
        let committed = async {
            let mut sha1 = None;
            let mut tries = 0;
            loop {
                let spans: Vec<PartitionSpan> = todo
                    .iter()
                    .map(|&i| PartitionSpan {
                        offset: i * p,
                        len: (size - i * p).min(p),
                    })
                    .collect();
                // The digest takes each partition once, in order: not the
                // ones uploaded again.
                let sealed: OnSealed = if tries == 0 { &to_digest } else { &|_, _| {} };
                let stored = self
                    .backend
                    .upload_partitions(&name, st.file.clone(), &spans, sealed)
                    .await?;
                if tries == 0 {
                    sha1 = lock(&digest).as_ref().and_then(|d| d.hash(count, stamp));
                }
                pieces.extend(stored.into_iter().map(|f| (f.offset / p, f)));
                let req = CommitRequest {
                    node: Some(id),
                    path: String::new(),
                    size,
                    fragments: pieces.values().cloned().collect(),
                    sha1: sha1.clone(),
                    attrs: attrs.clone(),
                    base_ver: Some(st.base),
                };
                match self.backend.commit(&name, req).await {
                    // Objects collected before the commit (uploaded early by
                    // a file held open past the server's grace period): the
                    // staged partitions go up again; bytes staged nowhere
                    // are lost for good.
                    Err(FsError::Missing(gone)) if tries < 2 => {
                        tries += 1;
                        todo = pieces
                            .iter()
                            .filter(|(_, f)| gone.contains(&f.object))
                            .map(|(&i, _)| i)
                            .collect();
                        if let Some(i) = todo.iter().find(|i| !st.parts.present.contains(i)) {
                            return Err(FsError::Io(format!(
                                "partition {i} is no longer stored and not staged here"
                            )));
                        }
                        tracing::warn!(node = id, partitions = ?todo, "partitions collected before the commit; uploading them again");
                        pieces.retain(|i, _| !todo.contains(i));
                    }
                    r => break r,
                }
            }
        }
        .await;
        st.digest = digest.into_inner().unwrap_or_else(|e| e.into_inner());
        let ver = committed?;
        st.parts.pieces = pieces;
        Ok(ver)
    }

    /// The file moved on (another client wrote it) since its staged copy
    /// began: the copy becomes a new file beside it,
    /// `NAME.conflict-YYYYMMDDTHHMMSSZ`, staged whole and uploaded like any
    /// other, and the newer version stays. The caller gets EIO: its bytes
    /// are not in the file it named.
    async fn divert(&self, id: i64, g: &mut Inode) -> FsResult<()> {
        lock(&self.pending).remove(&id);
        let made = async {
            let n = self.backend.getattr(id).await?;
            let req = MakeRequest {
                id: None,
                parent: n.parent,
                name: conflict_name(&n.name),
                kind: NodeKind::File,
                mode: n.mode,
                uid: n.uid,
                gid: n.gid,
                umask: 0,
                target: None,
                rdev: 0,
            };
            self.make_node(req).await
        }
        .await;
        let copy = match made {
            Ok(c) => c,
            // Storage unreachable, or a copy made this very second: later.
            Err(e) if e.passing() || e == FsError::Exists => {
                tracing::warn!(node = id, error = %e, "the file changed since this upload began; its conflict copy is made later");
                self.retry_later(id);
                return Err(FsError::Unavailable(format!(
                    "the file changed since this upload began; no conflict copy yet: {e}"
                )));
            }
            Err(FsError::NotFound) => return Err(FsError::NotFound),
            Err(e) => {
                return Err(FsError::Io(format!(
                    "the file changed since this upload began; no conflict copy: {e}"
                )))
            }
        };
        let Some(mut st) = g.staged.take() else {
            return Err(FsError::Conflict);
        };
        if let Err(e) = self.staging.adopt(id, st.base, copy.id, copy.ver_no) {
            g.staged = Some(st);
            return Err(e.into());
        }
        self.with_known(id, |r| r.local = None);
        tracing::warn!(
            node = id,
            copy = copy.id,
            name = %copy.name,
            "the file changed since this upload began: the staged bytes go to a conflict copy, the newer version stays"
        );
        st.base = copy.ver_no;
        st.mark = Mark::Done;
        let local = (st.size, st.mtime_ns, st.mtime_ns);
        self.with_record(copy.id, |r| {
            r.name = Some((copy.parent, copy.name.clone()));
            r.local = Some(local);
        });
        self.inode(copy.id).lock().await.staged = Some(st);
        self.retry_now(copy.id);
        Err(FsError::Io(format!(
            "the file changed since this upload began; the bytes written are in {}",
            copy.name
        )))
    }

    /// The last close of a staged file (or a truncate by path): the copy is
    /// uploaded and let go, or, when the upload failed for a passing
    /// reason, stays staged for the retries. Bytes refused for good are
    /// kept aside in `CACHE_DIR/recovered`.
    async fn settle(&self, id: i64, g: &mut Inode) -> FsResult<()> {
        let result = self.upload(id, g).await;
        if matches!(&result, Err(e) if e.passing()) {
            return result;
        }
        if let Some(st) = g.staged.take() {
            // Made or not, the file is the server's now (or nowhere).
            lock(&self.unborn).remove(&id);
            let stored = st.mark == Mark::Clean;
            if let (Err(e), false) = (&result, stored) {
                let kept = self.staging.set_aside(id, Some(st.base))?;
                tracing::warn!(node = id, error = %e, path = %kept.display(), "upload refused; the staged data is kept aside");
            } else {
                // Uploaded: its marker went then.
                self.staging.forget(id);
            }
        }
        result
    }

    // ---- files ----

    /// Opens a file; returns the handle and whether the kernel may keep its
    /// cached pages (the version is the one it cached before).
    pub async fn open(&self, ino: u64, flags: OpenFlags) -> FsResult<(u64, bool)> {
        let id = self.id(ino);
        let inode = self.inode(id);
        let mut g = inode.lock().await;
        let mut keep_cache = false;
        let mut layout = None;
        let looked = lock(&self.looked)
            .remove(&id)
            .filter(|l| l.serves(flags.opener));
        if flags.write && flags.truncate {
            if let Err(e) = self.stage(id, &mut g, Some(0), None).await {
                self.drop_if_idle(id, &g);
                return Err(e.stale_if_gone());
            }
            let st = g.staged.as_mut().expect("staged");
            if st.size > 0 {
                self.resize(st, 0).await?;
            }
            self.dirtied(id, st)?;
        } else if g.staged.is_none() && !flags.write {
            let found = match looked {
                Some(l) => Ok(l.layout),
                None => self.backend.layout(id).await.map(Arc::new),
            };
            match found {
                Ok(l) => {
                    keep_cache =
                        self.with_record(id, |r| r.kernel_ver.replace(l.ver_no) == Some(l.ver_no));
                    layout = Some(l);
                }
                Err(e) => {
                    self.drop_if_idle(id, &g);
                    // Renamed over or unlinked since the kernel looked it
                    // up: ESTALE has the kernel look the path up again.
                    return Err(e.stale_if_gone());
                }
            }
        }
        g.open += 1;
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let handle = Handle {
            id,
            flags,
            layout: AsyncMutex::new(layout.map(HeldLayout::new)),
            last_end: AtomicU64::new(0),
            prefetched_to: AtomicU64::new(0),
            wrote: AtomicBool::new(false),
            writer: flags.write.then(|| process_of(flags.opener)).flatten(),
        };
        lock(&self.handles).insert(fh, Arc::new(handle));
        Ok((fh, keep_cache))
    }

    /// create(2): makes the file and opens it for writing.
    #[allow(clippy::too_many_arguments)]
    pub async fn create(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        owner: Owner,
        flags: OpenFlags,
    ) -> FsResult<(Attr, u64)> {
        // O_EXCL asks the server now: another client may hold the name.
        // So does a create in a directory with a default ACL (or one not
        // seen yet): the ACL sets the new file's mode there.
        let plain_dir = self.with_known(self.id(parent), |r| !r.default_acl);
        if flags.write && !flags.exclusive && plain_dir == Some(true) {
            return self.create_unborn(parent, name, mode, owner, flags).await;
        }
        let n = match self
            .make(parent, name, NodeKind::File, mode, owner, None)
            .await
        {
            Ok(n) => n,
            // The name was made elsewhere since this mount saw the directory
            // (its listing, or the kernel's negative entry, is older): open(2)
            // without O_EXCL opens that file.
            Err(FsError::Exists) if !flags.exclusive => {
                let n = self.backend.lookup(self.id(parent), name).await?;
                if n.kind != NodeKind::File {
                    return Err(FsError::Exists);
                }
                let (fh, _) = self.open(self.ino(n.id), flags).await?;
                return Ok((self.handed(&n), fh));
            }
            Err(e) => return Err(e),
        };
        let (fh, _) = self
            .open(
                self.ino(n.id),
                OpenFlags {
                    truncate: false,
                    ..flags
                },
            )
            .await?;
        if flags.write {
            // The file is new and empty: stage it without asking storage.
            let inode = self.inode(n.id);
            let mut g = inode.lock().await;
            self.stage(n.id, &mut g, Some(0), Some(n.ver_no)).await?;
        }
        Ok((self.handed(&n), fh))
    }

    /// create(2) of a file to write, without O_EXCL, in a directory without
    /// a default ACL (so the umask applies): the file is made by its first
    /// commit (close, fsync), bytes and all in one request, unless an
    /// operation needs it on the server sooner. A name another client
    /// makes meanwhile has this file's bytes go to a conflict name.
    async fn create_unborn(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        owner: Owner,
        flags: OpenFlags,
    ) -> FsResult<(Attr, u64)> {
        let parent = self.id(parent);
        if name.len() > crate::meta::path::MAX_NAME {
            return Err(FsError::NameTooLong);
        }
        let u = Unborn {
            file: NewFile {
                id: self.fresh_id().await?,
                parent,
                name: name.to_string(),
                mode: mode & !owner.umask & 0o7777,
                uid: owner.uid,
                gid: owner.gid,
                umask: owner.umask,
                // What opening a file made elsewhere meanwhile would have
                // done to it.
                replace: flags.truncate,
            },
            made_ns: now_ns(),
        };
        let id = u.file.id;
        {
            let inode = self.inode(id);
            let mut g = inode.lock().await;
            self.stage(id, &mut g, Some(0), Some(BORN_VER)).await?;
            let st = g.staged.as_mut().expect("staged");
            // Uploaded at the last close even if never written.
            self.staging.mark_new(id, BORN_VER, &u.file)?;
            st.mark = Mark::Open;
            st.mtime_ns = u.made_ns;
            self.with_record(id, |r| r.local = Some((0, u.made_ns, u.made_ns)));
            lock(&self.unborn).insert(id, u.clone());
        }
        self.no_capability_yet(id);
        let n = u.attr();
        let attr = self.handed(&n);
        // Opening for writing a staged file asks nothing of the server.
        let (fh, _) = self
            .open(
                self.ino(id),
                OpenFlags {
                    truncate: false,
                    ..flags
                },
            )
            .await?;
        Ok((attr, fh))
    }

    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Block> {
        let h = self.handle(fh)?;
        let inode = self.with_known(h.id, |r| r.file.clone()).flatten();
        if let Some(inode) = inode {
            let g = inode.lock().await;
            if let Some(st) = &g.staged {
                return Ok(self.read_staged(st, offset, size as u64).await?.into());
            }
        }
        let layout = self.handle_layout(&h).await?;
        let data = self
            .read_layout(&layout, offset, size as u64, Some(&h))
            .await?;
        h.last_end
            .store(offset + data.len() as u64, Ordering::Relaxed);
        Ok(data)
    }

    /// The version a handle reads: fetched at its first read if not at
    /// open, with its read grants renewed when they near their end, so a
    /// file held open for longer than a grant lives still reads.
    async fn handle_layout(&self, h: &Handle) -> FsResult<Arc<FileLayout>> {
        let mut held = h.layout.lock().await;
        match held.as_mut() {
            Some(l) if !l.due() => return Ok(l.layout.clone()),
            Some(l) => match self.backend.layout(h.id).await {
                Ok(fresh) => *l = l.renewed(fresh),
                // Unlinked: nothing to renew from; read with the grants held.
                Err(FsError::NotFound) => l.renew_at = None,
                // Storage unreachable: the next read tries again.
                Err(e) => tracing::debug!(node = h.id, error = %e, "read grants not renewed"),
            },
            None => *held = Some(HeldLayout::new(Arc::new(self.backend.layout(h.id).await?))),
        }
        Ok(held.as_ref().expect("a layout is held").layout.clone())
    }

    /// Bytes `[offset, offset + len)` of a version; holes are zeros. A
    /// sequential reader (`h`) gets the next partitions fetched ahead.
    async fn read_layout(
        &self,
        layout: &Arc<FileLayout>,
        offset: u64,
        len: u64,
        h: Option<&Handle>,
    ) -> FsResult<Block> {
        let end = offset.saturating_add(len).min(layout.size);
        // (file offset, bytes) of each partition's part of the range.
        let mut pieces: Vec<(u64, Block)> = Vec::new();
        for (fi, frag) in layout.fragments.iter().enumerate() {
            let frag_end = frag.offset + frag.length;
            let wanted: Vec<(u64, u64)> = frag.partitions_in(offset, end).collect();
            let blocks = futures::future::try_join_all(wanted.iter().map(|&(i, _)| {
                partition(
                    self.backend.clone(),
                    self.cache.clone(),
                    layout.clone(),
                    fi,
                    i,
                )
            }))
            .await?;
            for ((i, at), data) in wanted.iter().zip(blocks) {
                let lo = offset.max(*at);
                let hi = end.min(at + data.len() as u64).min(frag_end);
                if lo < hi {
                    pieces.push((lo, data.slice((lo - at) as usize..(hi - at) as usize)));
                    // A file of many partitions is read through, not
                    // again: its blocks go soon after read whole. A small
                    // file's stays, for the next read after the kernel
                    // lets go.
                    if layout.size > self.partition {
                        let key = (frag.object.sha1.clone(), *i);
                        self.cache.read(&key, (hi - lo) as usize);
                    }
                }
            }
        }
        if let Some(h) = h.filter(|h| h.last_end.load(Ordering::Relaxed) == offset) {
            self.prefetch(layout, end, h);
        }
        let len = end.saturating_sub(offset) as usize;
        Ok(match pieces.as_slice() {
            // Within one partition (the kernel asks 1 MiB at most): the
            // cached block's bytes themselves.
            [(lo, data)] if *lo == offset && data.len() == len => data.clone(),
            _ => {
                let mut out = vec![0u8; len];
                for (lo, data) in pieces {
                    let at = (lo - offset) as usize;
                    out[at..at + data.len()].copy_from_slice(&data);
                }
                out.into()
            }
        })
    }

    /// Fetches the next `prefetch` partitions' worth of bytes after `end`
    /// for a sequential reader, across fragments (a file stored as
    /// partition objects is one fragment per partition).
    fn prefetch(&self, layout: &Arc<FileLayout>, end: u64, h: &Handle) {
        let from = h.prefetched_to.load(Ordering::Relaxed).max(end);
        let to = end
            .saturating_add(self.cfg.prefetch * self.partition)
            .min(layout.size);
        for (fi, frag) in layout.fragments.iter().enumerate() {
            for (i, _) in frag.partitions_in(from, to) {
                if self.cache.has(&(frag.object.sha1.clone(), i)) {
                    continue;
                }
                let fetch = partition(
                    self.backend.clone(),
                    self.cache.clone(),
                    layout.clone(),
                    fi,
                    i,
                );
                tokio::spawn(async move {
                    if let Err(e) = fetch.await {
                        tracing::debug!(error = %e, "prefetch failed");
                    }
                });
            }
        }
        h.prefetched_to.fetch_max(to, Ordering::Relaxed);
    }

    /// A handle open for writing and its inode, locked and staged.
    async fn writable(
        &self,
        fh: u64,
    ) -> FsResult<(Arc<Handle>, tokio::sync::OwnedMutexGuard<Inode>)> {
        let h = self.handle(fh)?;
        if !h.flags.write {
            return Err(FsError::BadHandle);
        }
        let mut g = self.inode(h.id).lock_owned().await;
        self.stage(h.id, &mut g, None, None).await?;
        Ok((h, g))
    }

    pub async fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let (h, mut g) = self.writable(fh).await?;
        let st = g.staged.as_mut().expect("staged");
        let at = if h.flags.append { st.size } else { offset };
        let end = at + data.len() as u64;
        self.own(st, at, end, true).await?;
        st.file.write_all_at(data, at)?;
        // A write that reaches the end of a partition completes it (for a
        // sequential writer): it is uploaded now, not at close.
        let p = self.partition;
        for i in at / p..end / p {
            self.upload_early(h.id, st, i).await;
        }
        st.size = st.size.max(at + data.len() as u64);
        self.dirtied(h.id, st)?;
        h.wrote.store(true, Ordering::Relaxed);
        Ok(data.len() as u32)
    }

    /// fallocate(2) on the staged copy: every mode the cache disk supports.
    pub async fn fallocate(&self, fh: u64, offset: u64, len: u64, mode: i32) -> FsResult<()> {
        let (h, mut g) = self.writable(fh).await?;
        let st = g.staged.as_mut().expect("staged");
        // Collapsing or inserting a range moves every byte after it.
        let shifts = mode & (libc::FALLOC_FL_COLLAPSE_RANGE | libc::FALLOC_FL_INSERT_RANGE) != 0;
        let end = if shifts {
            st.size.max(offset + len)
        } else {
            offset + len
        };
        self.own(st, offset, end, false).await?;
        // SAFETY: fallocate on a file descriptor we own; no memory is passed.
        let rc = unsafe { libc::fallocate(st.file.as_raw_fd(), mode, offset as i64, len as i64) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        st.size = st.file.metadata()?.len();
        self.drop_beyond(st);
        self.dirtied(h.id, st)?;
        h.wrote.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// copy_file_range(2) within the drive. Whole partitions the source
    /// holds as stored objects of their own, copied to a partition
    /// boundary, are not moved: the copy refers to the same objects (its
    /// commit names them). Anything else is copied through the staged
    /// bytes, up to the next partition of the copy per call. Returns the
    /// bytes copied, 0 past the source's end.
    pub async fn copy_range(
        &self,
        fh_in: u64,
        off_in: u64,
        fh_out: u64,
        off_out: u64,
        len: u64,
    ) -> FsResult<u32> {
        let p = self.partition;
        let src = self.handle(fh_in)?;
        let (size, pieces) = self.stored_pieces(&src).await?;
        let len = len.min(size.saturating_sub(off_in)).min(MAX_COPY);
        if len == 0 {
            return Ok(0);
        }
        if off_in.is_multiple_of(p) && off_out.is_multiple_of(p) {
            let (h, mut g) = self.writable(fh_out).await?;
            let st = g.staged.as_mut().expect("staged");
            // Consecutive whole partitions; a short one only as the last
            // of the source and then the end of the copy.
            let mut copied = 0;
            for (j, (piece, source)) in pieces.range(off_in / p..) {
                let whole = piece.length == p || off_in + copied + piece.length == size;
                let fits = copied + piece.length <= len
                    && (piece.length == p || off_out + copied + piece.length >= st.size);
                if *j != (off_in + copied) / p || !whole || !fits {
                    break;
                }
                let i = (off_out + copied) / p;
                st.parts.present.remove(&i);
                st.parts.pieces.insert(
                    i,
                    CommitFragment {
                        offset: i * p,
                        ..piece.clone()
                    },
                );
                st.borrowed.insert(i, source.clone());
                *st.changes.entry(i).or_default() += 1;
                copied += piece.length;
            }
            if copied > 0 {
                if off_out + copied > st.size {
                    st.size = off_out + copied;
                    st.file.set_len(st.size)?;
                }
                self.dirtied(h.id, st)?;
                h.wrote.store(true, Ordering::Relaxed);
                return Ok(copied as u32);
            }
        }
        let step = len.min(p - off_out % p);
        let data = self.read(fh_in, off_in, step as u32).await?;
        self.write(fh_out, off_out, &data).await
    }

    /// The size of the file `h` reads and its partitions stored as objects
    /// of their own, unchanged here, with where to read each.
    async fn stored_pieces(
        &self,
        h: &Handle,
    ) -> FsResult<(u64, BTreeMap<u64, (CommitFragment, Source)>)> {
        let inode = self.with_known(h.id, |r| r.file.clone()).flatten();
        if let Some(inode) = inode {
            let g = inode.lock().await;
            if let Some(st) = &g.staged {
                let pieces = st
                    .parts
                    .pieces
                    .iter()
                    .filter(|(i, _)| !st.parts.present.contains(i))
                    .filter_map(|(&i, piece)| Some((i, (piece.clone(), self.source_of(st, i)?))))
                    .collect();
                return Ok((st.size, pieces));
            }
        }
        let layout = self.handle_layout(h).await?;
        let pieces = pieces_of(&layout, self.partition)
            .into_iter()
            .map(|(i, piece)| {
                let at = piece.offset;
                let source = Source {
                    layout: layout.clone(),
                    at,
                };
                (i, (piece, source))
            })
            .collect();
        Ok((layout.size, pieces))
    }

    /// close(2) of one descriptor by thread `pid`: a dirty file is
    /// uploaded now, so that the caller's close() returns the outcome.
    pub async fn flush(&self, fh: u64, pid: u32) -> FsResult<()> {
        let h = self.handle(fh)?;
        // Only a descriptor that wrote commits at close(). Every close of
        // a duplicate flushes too: dd and a shell's `> f` open with O_TRUNC,
        // dup the descriptor and close the original before writing, and
        // that must not publish the emptied file (readers keep the old
        // version until the new one is whole). So does every fork and exec
        // elsewhere in the writer's process, whose child closes its copy of
        // the descriptor: that must not publish the file half written.
        // The last close commits in any case (release).
        let by_writer =
            pid == h.flags.opener || (h.writer.is_some() && process_of(pid) == h.writer);
        if !by_writer {
            return Ok(());
        }
        if !h.wrote.load(Ordering::Relaxed) {
            // A new file closed before any write: made now, empty (the
            // shell's `> f` closes a duplicate before writing; the bytes
            // follow at the last close), so that close(2) returns with
            // the file and its directory's times there for every client.
            return self.materialize(h.id).await;
        }
        let inode = self.inode(h.id);
        let mut g = inode.lock().await;
        gone_is_closed(self.upload(h.id, &mut g).await)
    }

    /// fsync(2): durable on the providers when it returns.
    pub async fn fsync(&self, fh: u64) -> FsResult<()> {
        let h = self.handle(fh)?;
        let inode = self.inode(h.id);
        let mut g = inode.lock().await;
        gone_is_closed(self.upload(h.id, &mut g).await)
    }

    pub async fn release(&self, fh: u64) -> FsResult<()> {
        let Some(h) = lock(&self.handles).remove(&fh) else {
            return Err(FsError::BadHandle);
        };
        let inode = self.inode(h.id);
        let mut g = inode.lock().await;
        g.open = g.open.saturating_sub(1);
        let mut result = Ok(());
        if g.open == 0 && g.staged.is_some() {
            result = gone_is_closed(self.settle(h.id, &mut g).await);
        }
        self.drop_if_idle(h.id, &g);
        result
    }

    // ---- directories ----

    pub async fn opendir(&self, ino: u64) -> FsResult<u64> {
        let id = self.id(ino);
        // The directory's mtime before its names: a change between the two
        // makes the listing look older, never newer, than it is.
        let at = Instant::now();
        let me = self.backend.getattr(id).await?;
        if me.kind != NodeKind::Dir {
            return Err(FsError::NotDir);
        }
        let parent = if id == self.root_id {
            me.clone()
        } else {
            self.backend.getattr(me.parent).await?
        };
        let mut entries = vec![
            DirEntry {
                ino,
                name: ".".into(),
                attr: self.attr(&me),
                default_acl: me.default_acl,
            },
            DirEntry {
                ino: self.ino(parent.id),
                name: "..".into(),
                attr: self.attr(&parent),
                default_acl: parent.default_acl,
            },
        ];
        let mut children = self.backend.children(id).await?;
        let names = children.iter().map(|c| c.name.clone()).collect();
        self.keep_listing(&me, names, at);
        // Files made here whose first commit is still to come.
        children.extend(
            lock(&self.unborn)
                .values()
                .filter(|u| u.file.parent == id)
                .map(Unborn::attr),
        );
        for child in children {
            entries.push(DirEntry {
                ino: self.ino(child.id),
                name: child.name.clone(),
                attr: self.attr(&child),
                default_acl: child.default_acl,
            });
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.dirs).insert(fh, Arc::new(entries));
        Ok(fh)
    }

    /// The listing taken at opendir.
    pub fn readdir(&self, fh: u64) -> FsResult<Arc<Vec<DirEntry>>> {
        lock(&self.dirs).get(&fh).cloned().ok_or(FsError::BadHandle)
    }

    pub fn releasedir(&self, fh: u64) {
        lock(&self.dirs).remove(&fh);
    }

    /// Waits (up to `limit`) for uploads in flight, before unmounting.
    pub async fn quiesce(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.uploads.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
