//! The fuser adapter: translates kernel requests to `fs::Fs` calls and
//! replies. Every handler runs in a tracing span; errors become errno here
//! and only here.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, OpenAccMode, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::fs::{Attr, Backend, Fs, FsError, OpenFlags, Owner, SetAttr, XattrReply, TTL};
use crate::proto::NodeKind;

const BLOCK: u32 = 4096;

pub struct FuseFs<B: Backend> {
    fs: Arc<Fs<B>>,
    rt: tokio::runtime::Handle,
}

impl<B: Backend> FuseFs<B> {
    pub fn new(fs: Arc<Fs<B>>, rt: tokio::runtime::Handle) -> Self {
        FuseFs { fs, rt }
    }
}

fn errno(e: &FsError) -> Errno {
    if matches!(e, FsError::Io(_)) {
        tracing::warn!(error = %e, "I/O error");
    } else {
        tracing::debug!(error = %e, errno = e.errno(), "failed");
    }
    Errno::from_i32(e.errno())
}

fn time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

fn time_ns(t: TimeOrNow) -> i64 {
    let t = match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    };
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(e) => -(e.duration().as_nanos() as i64),
    }
}

fn file_type(k: NodeKind) -> FileType {
    match k {
        NodeKind::Dir => FileType::Directory,
        NodeKind::File => FileType::RegularFile,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::Socket => FileType::Socket,
        NodeKind::CharDevice => FileType::CharDevice,
        NodeKind::BlockDevice => FileType::BlockDevice,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: time(a.atime_ns),
        mtime: time(a.mtime_ns),
        ctime: time(a.ctime_ns),
        crtime: time(a.ctime_ns),
        kind: file_type(a.kind),
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: BLOCK,
        flags: 0,
    }
}

/// The entry of a name that is not there: inode 0.
fn absent() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: BLOCK,
        flags: 0,
    }
}

fn open_flags(req: &Request, flags: i32) -> OpenFlags {
    let acc = fuser::OpenFlags(flags).acc_mode();
    OpenFlags {
        read: acc != OpenAccMode::O_WRONLY,
        write: acc != OpenAccMode::O_RDONLY,
        truncate: flags & libc::O_TRUNC != 0,
        append: flags & libc::O_APPEND != 0,
        exclusive: flags & libc::O_EXCL != 0,
        opener: req.pid(),
    }
}

/// The caller as the owner of what it makes; its umask, where the kernel
/// passes one, is applied by the server (a default ACL replaces it).
fn made_by(req: &Request, umask: u32) -> Owner {
    Owner {
        uid: req.uid(),
        gid: req.gid(),
        umask,
    }
}

fn name_of(name: &OsStr) -> Result<&str, Errno> {
    name.to_str().ok_or(Errno::EINVAL)
}

/// A fuser reply that can carry an error.
trait Answer {
    fn fail(self, e: Errno);
}

macro_rules! answer {
    ($($reply:ty),*) => {$(
        impl Answer for $reply {
            fn fail(self, e: Errno) {
                self.error(e)
            }
        }
    )*};
}
answer!(
    ReplyAttr,
    ReplyCreate,
    ReplyData,
    ReplyEmpty,
    ReplyEntry,
    ReplyOpen,
    ReplyStatfs,
    ReplyWrite,
    ReplyXattr
);

/// How long a request runs before the mount starts checking whether its
/// caller is being killed, and how often it checks then.
const KILL_GRACE: Duration = Duration::from_millis(300);
const KILL_POLL: Duration = Duration::from_millis(200);

/// Whether thread `tid` has a fatal signal pending: the kernel marks every
/// thread of a dying process with SIGKILL, whatever signal killed it.
fn being_killed(tid: u32) -> bool {
    match procfs::process::Process::new(tid as i32).and_then(|p| p.status()) {
        Ok(s) => (s.sigpnd | s.shdpnd) & (1 << (libc::SIGKILL - 1)) != 0,
        Err(procfs::ProcError::NotFound(_)) => true,
        Err(_) => false,
    }
}

/// Resolves once the caller `tid` is being killed (never for the kernel's
/// own requests, which carry no caller).
async fn caller_killed(tid: u32) {
    if tid == 0 {
        return std::future::pending().await;
    }
    tokio::time::sleep(KILL_GRACE).await;
    while !being_killed(tid) {
        tokio::time::sleep(KILL_POLL).await;
    }
}

impl<B: Backend> FuseFs<B> {
    /// Runs a handler and answers the kernel: with `ok`'s reply or the
    /// error's errno, or with EINTR as soon as the caller is being killed.
    /// A killed process then exits at once instead of waiting out a stalled
    /// server (the kernel waits for a request it has sent without bound,
    /// and fuser answers FUSE_INTERRUPT with ENOSYS). Other signals do not
    /// interrupt, as on NFS: a caught signal must not fail a write. The
    /// handler still runs to its end, so the drive's state stays whole; what
    /// it made for the killed caller is returned for the caller to undo.
    fn serve<T, R: Answer>(
        &self,
        req: &Request,
        reply: R,
        fut: impl std::future::Future<Output = Result<T, FsError>>,
        ok: impl FnOnce(R, T),
    ) -> Option<T> {
        self.rt.block_on(async {
            tokio::pin!(fut);
            tokio::select! {
                r = &mut fut => {
                    match r {
                        Ok(t) => ok(reply, t),
                        Err(e) => reply.fail(errno(&e)),
                    }
                    None
                }
                () = caller_killed(req.pid()) => {
                    tracing::info!(pid = req.pid(), "caller killed: answered EINTR, finishing the request");
                    reply.fail(Errno::EINTR);
                    fut.await.ok()
                }
            }
        })
    }

    fn entry(
        &self,
        req: &Request,
        reply: ReplyEntry,
        fut: impl std::future::Future<Output = Result<Attr, FsError>>,
    ) {
        let late = self.serve(req, reply, fut, |reply, a| {
            reply.entry(&TTL, &file_attr(&a), Generation(0))
        });
        // Answered EINTR: the kernel never got the entry to forget.
        if let Some(a) = late {
            self.fs.forget(a.ino, 1);
        }
    }

    fn empty(
        &self,
        req: &Request,
        reply: ReplyEmpty,
        fut: impl std::future::Future<Output = Result<(), FsError>>,
    ) {
        self.serve(req, reply, fut, |reply, ()| reply.ok());
    }

    fn xattr(
        &self,
        req: &Request,
        reply: ReplyXattr,
        fut: impl std::future::Future<Output = Result<XattrReply, FsError>>,
    ) {
        self.serve(req, reply, fut, |reply, x| match x {
            XattrReply::Size(n) => reply.size(n),
            XattrReply::Data(d) => reply.data(&d),
        });
    }

    /// Closes a handle whose open was answered EINTR: the kernel never
    /// learnt of it, so it will never release it.
    fn orphaned(&self, fh: Option<u64>) {
        if let Some(fh) = fh {
            let _ = self.rt.block_on(self.fs.release(fh));
        }
    }
}

impl<B: Backend> Filesystem for FuseFs<B> {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Big writes and reads (1 MiB pages per request): fewer round trips.
        // The kernel refuses more read-ahead than it offers here (128 KiB);
        // mount.rs widens it once the session serves.
        let _ = config.set_max_write(1 << 20);
        // The kernel enforces POSIX ACLs (kept as xattrs, the mode in step)
        // on top of default_permissions.
        if let Err(missing) = config.add_capabilities(fuser::InitFlags::FUSE_POSIX_ACL) {
            tracing::warn!(
                ?missing,
                "the kernel offers no POSIX ACL support: ACLs are kept, not enforced"
            );
        }
        // The mode of a create comes unmasked, the umask beside it: the
        // server applies the umask, unless the directory has a default ACL,
        // which sets the mode instead (as POSIX ACLs have it). A kernel
        // without it masks the mode itself; masking twice changes nothing.
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_DONT_MASK);
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _s = tracing::debug_span!("lookup", parent = parent.0, ?name).entered();
        let Ok(n) = name_of(name) else {
            return reply.error(Errno::EINVAL);
        };
        let found = async {
            match self.fs.lookup(parent.0, n, req.pid()).await {
                Err(FsError::NotFound) => Ok(None),
                r => r.map(Some),
            }
        };
        let late = self.serve(req, reply, found, |reply, a| match a {
            Some(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
            // A negative entry (inode 0): the kernel answers ENOENT itself
            // for the TTL, and forgets it when it makes the name.
            None => reply.entry(&TTL, &absent(), Generation(0)),
        });
        // Answered EINTR: the kernel never got the entry to forget.
        if let Some(Some(a)) = late {
            self.fs.forget(a.ino, 1);
        }
    }

    // fuser's batch_forget hands each node of a batch to this one.
    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let _s = tracing::debug_span!("forget", ino = ino.0, nlookup).entered();
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let _s = tracing::debug_span!("getattr", ino = ino.0).entered();
        self.serve(req, reply, self.fs.getattr(ino.0), |reply, a| {
            reply.attr(&TTL, &file_attr(&a))
        });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _s = tracing::debug_span!("setattr", ino = ino.0, ?mode, ?uid, ?gid, ?size).entered();
        let s = SetAttr {
            size,
            mode,
            uid,
            gid,
            atime_ns: atime.map(time_ns),
            mtime_ns: mtime.map(time_ns),
        };
        self.serve(req, reply, self.fs.setattr(ino.0, s), |reply, a| {
            reply.attr(&TTL, &file_attr(&a))
        });
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        let _s = tracing::debug_span!("readlink", ino = ino.0).entered();
        self.serve(req, reply, self.fs.readlink(ino.0), |reply, t| {
            reply.data(t.as_bytes())
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let _s = tracing::debug_span!("mknod", parent = parent.0, ?name, mode).entered();
        let Ok(n) = name_of(name) else {
            return reply.error(Errno::EINVAL);
        };
        self.entry(
            req,
            reply,
            self.fs.mknod(parent.0, n, mode, rdev, made_by(req, umask)),
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let _s = tracing::debug_span!("mkdir", parent = parent.0, ?name, mode).entered();
        let Ok(n) = name_of(name) else {
            return reply.error(Errno::EINVAL);
        };
        self.entry(
            req,
            reply,
            self.fs.mkdir(parent.0, n, mode, made_by(req, umask)),
        );
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _s = tracing::debug_span!("unlink", parent = parent.0, ?name).entered();
        let Ok(n) = name_of(name) else {
            return reply.error(Errno::EINVAL);
        };
        self.empty(req, reply, self.fs.unlink(parent.0, n));
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _s = tracing::debug_span!("rmdir", parent = parent.0, ?name).entered();
        let Ok(n) = name_of(name) else {
            return reply.error(Errno::EINVAL);
        };
        self.empty(req, reply, self.fs.rmdir(parent.0, n));
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let _s = tracing::debug_span!("symlink", parent = parent.0, ?link_name, ?target).entered();
        let (Ok(n), Some(t)) = (name_of(link_name), target.to_str()) else {
            return reply.error(Errno::EINVAL);
        };
        self.entry(req, reply, self.fs.symlink(parent.0, n, t, made_by(req, 0)));
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let _s = tracing::debug_span!(
            "rename",
            parent = parent.0,
            ?name,
            newparent = newparent.0,
            ?newname
        )
        .entered();
        if flags.contains(RenameFlags::RENAME_WHITEOUT) {
            return reply.error(Errno::EINVAL);
        }
        let noreplace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        let exchange = flags.contains(RenameFlags::RENAME_EXCHANGE);
        let (Ok(n), Ok(nn)) = (name_of(name), name_of(newname)) else {
            return reply.error(Errno::EINVAL);
        };
        let renamed = self
            .fs
            .rename(parent.0, n, newparent.0, nn, noreplace, exchange);
        self.empty(req, reply, renamed);
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let _s =
            tracing::debug_span!("link", ino = ino.0, newparent = newparent.0, ?newname).entered();
        let Ok(n) = name_of(newname) else {
            return reply.error(Errno::EINVAL);
        };
        self.entry(req, reply, self.fs.link(ino.0, newparent.0, n));
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: fuser::OpenFlags, reply: ReplyOpen) {
        let _s =
            tracing::debug_span!("open", ino = ino.0, flags = flags.0, pid = req.pid()).entered();
        let late = self.serve(
            req,
            reply,
            self.fs.open(ino.0, open_flags(req, flags.0)),
            |reply, (fh, keep)| {
                let f = if keep {
                    FopenFlags::FOPEN_KEEP_CACHE
                } else {
                    FopenFlags::empty()
                };
                reply.opened(FileHandle(fh), f)
            },
        );
        self.orphaned(late.map(|(fh, _)| fh));
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _s = tracing::debug_span!("read", ino = ino.0, fh = fh.0, offset, size).entered();
        self.serve(req, reply, self.fs.read(fh.0, offset, size), |reply, d| {
            reply.data(&d)
        });
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _s = tracing::debug_span!("write", ino = ino.0, fh = fh.0, offset, len = data.len())
            .entered();
        self.serve(req, reply, self.fs.write(fh.0, offset, data), |reply, n| {
            reply.written(n)
        });
    }

    fn flush(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let _s = tracing::debug_span!("flush", ino = ino.0, fh = fh.0).entered();
        self.empty(req, reply, self.fs.flush(fh.0, req.pid()));
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _s = tracing::debug_span!("release", ino = ino.0, fh = fh.0).entered();
        self.empty(req, reply, self.fs.release(fh.0));
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _s = tracing::debug_span!("fsync", ino = ino.0, fh = fh.0).entered();
        self.empty(req, reply, self.fs.fsync(fh.0));
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: fuser::OpenFlags, reply: ReplyOpen) {
        let _s = tracing::debug_span!("opendir", ino = ino.0).entered();
        let late = self.serve(req, reply, self.fs.opendir(ino.0), |reply, fh| {
            reply.opened(FileHandle(fh), FopenFlags::empty())
        });
        if let Some(fh) = late {
            self.fs.releasedir(fh);
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let _s = tracing::debug_span!("readdir", ino = ino.0, offset).entered();
        match self.fs.readdir(fh.0) {
            Ok(entries) => {
                for (i, e) in entries.iter().enumerate().skip(offset as usize) {
                    if reply.add(
                        INodeNo(e.ino),
                        i as u64 + 1,
                        file_type(e.attr.kind),
                        &e.name,
                    ) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let _s = tracing::debug_span!("readdirplus", ino = ino.0, offset).entered();
        match self.fs.readdir(fh.0) {
            Ok(entries) => {
                for (i, e) in entries.iter().enumerate().skip(offset as usize) {
                    if reply.add(
                        INodeNo(e.ino),
                        i as u64 + 1,
                        &e.name,
                        &TTL,
                        &file_attr(&e.attr),
                        Generation(0),
                    ) {
                        break;
                    }
                    self.fs.handed_entry(ino.0, e);
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: fuser::OpenFlags,
        reply: ReplyEmpty,
    ) {
        let _s = tracing::debug_span!("releasedir", ino = ino.0).entered();
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn statfs(&self, req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let _s = tracing::debug_span!("statfs").entered();
        self.serve(req, reply, self.fs.statfs(), |reply, s| {
            let blocks = s.capacity / BLOCK as u64;
            let free = s.capacity.saturating_sub(s.used) / BLOCK as u64;
            // namelen: the longest name the drive takes (pathconf's NAME_MAX).
            let namelen = crate::meta::path::MAX_NAME as u32;
            reply.statfs(
                blocks,
                free,
                free,
                s.files,
                u64::MAX / 2,
                BLOCK,
                namelen,
                BLOCK,
            )
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let _s = tracing::debug_span!("create", parent = parent.0, ?name, mode, flags).entered();
        let Ok(n) = name_of(name) else {
            return reply.error(Errno::EINVAL);
        };
        let created = self.fs.create(
            parent.0,
            n,
            mode,
            made_by(req, umask),
            open_flags(req, flags),
        );
        let late = self.serve(req, reply, created, |reply, (a, fh)| {
            reply.created(
                &TTL,
                &file_attr(&a),
                Generation(0),
                FileHandle(fh),
                FopenFlags::empty(),
            )
        });
        if let Some((a, fh)) = late {
            self.fs.forget(a.ino, 1);
            self.orphaned(Some(fh));
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let _s = tracing::debug_span!("fallocate", ino = ino.0, offset, length, mode).entered();
        self.empty(req, reply, self.fs.fallocate(fh.0, offset, length, mode));
    }

    fn copy_file_range(
        &self,
        req: &Request,
        ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let _s = tracing::debug_span!(
            "copy_file_range",
            ino_in = ino_in.0,
            offset_in,
            ino_out = ino_out.0,
            offset_out,
            len
        )
        .entered();
        let copy = self
            .fs
            .copy_range(fh_in.0, offset_in, fh_out.0, offset_out, len);
        self.serve(req, reply, copy, |reply, n| reply.written(n));
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let _s = tracing::debug_span!("getxattr", ino = ino.0, ?name, size).entered();
        let Ok(n) = name_of(name) else {
            return reply.error(Errno::ENODATA);
        };
        self.xattr(req, reply, self.fs.getxattr(ino.0, n, size, req.uid()));
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let _s = tracing::debug_span!("listxattr", ino = ino.0, size).entered();
        self.xattr(req, reply, self.fs.listxattr(ino.0, size, req.uid()));
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let _s = tracing::debug_span!("setxattr", ino = ino.0, ?name, len = value.len()).entered();
        let Ok(n) = name_of(name) else {
            return reply.error(Errno::EOPNOTSUPP);
        };
        let set = self.fs.setxattr(ino.0, n, value, flags, req.uid());
        self.empty(req, reply, set);
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _s = tracing::debug_span!("removexattr", ino = ino.0, ?name).entered();
        let Ok(n) = name_of(name) else {
            return reply.error(Errno::ENODATA);
        };
        self.empty(req, reply, self.fs.removexattr(ino.0, n, req.uid()));
    }
}
