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
    Request, TimeOrNow, WriteFlags,
};

use crate::fs::{Attr, Backend, Fs, FsError, OpenFlags, Owner, SetAttr};
use crate::proto::NodeKind;

/// How long the kernel may cache attributes and entries.
const TTL: Duration = Duration::from_secs(1);
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

fn open_flags(flags: i32) -> OpenFlags {
    let acc = fuser::OpenFlags(flags).acc_mode();
    OpenFlags {
        read: acc != OpenAccMode::O_WRONLY,
        write: acc != OpenAccMode::O_RDONLY,
        truncate: flags & libc::O_TRUNC != 0,
        append: flags & libc::O_APPEND != 0,
    }
}

fn owner(req: &Request) -> Owner {
    Owner {
        uid: req.uid(),
        gid: req.gid(),
    }
}

fn name_of(name: &OsStr) -> Result<&str, Errno> {
    name.to_str().ok_or(Errno::EINVAL)
}

impl<B: Backend> FuseFs<B> {
    fn run<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, FsError>>,
    ) -> Result<T, Errno> {
        self.rt.block_on(fut).map_err(|e| errno(&e))
    }

    fn entry(&self, reply: ReplyEntry, r: Result<Attr, Errno>) {
        match r {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn empty(&self, reply: ReplyEmpty, r: Result<(), Errno>) {
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}

impl<B: Backend> Filesystem for FuseFs<B> {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Big writes and reads: fewer round trips into the staging file.
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(4 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _s = tracing::debug_span!("lookup", parent = parent.0, ?name).entered();
        let r = name_of(name).and_then(|n| self.run(self.fs.lookup(parent.0, n)));
        self.entry(reply, r);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let _s = tracing::debug_span!("getattr", ino = ino.0).entered();
        match self.run(self.fs.getattr(ino.0)) {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
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
        match self.run(self.fs.setattr(ino.0, s)) {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let _s = tracing::debug_span!("readlink", ino = ino.0).entered();
        match self.run(self.fs.readlink(ino.0)) {
            Ok(t) => reply.data(t.as_bytes()),
            Err(e) => reply.error(e),
        }
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
        let r = name_of(name).and_then(|n| {
            let mode = mode & (libc::S_IFMT | (0o7777 & !umask));
            self.run(self.fs.mknod(parent.0, n, mode, rdev, owner(req)))
        });
        self.entry(reply, r);
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
        let r = name_of(name)
            .and_then(|n| self.run(self.fs.mkdir(parent.0, n, mode & !umask, owner(req))));
        self.entry(reply, r);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _s = tracing::debug_span!("unlink", parent = parent.0, ?name).entered();
        let r = name_of(name).and_then(|n| self.run(self.fs.unlink(parent.0, n)));
        self.empty(reply, r);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _s = tracing::debug_span!("rmdir", parent = parent.0, ?name).entered();
        let r = name_of(name).and_then(|n| self.run(self.fs.rmdir(parent.0, n)));
        self.empty(reply, r);
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
        let r = name_of(link_name).and_then(|n| {
            let t = target.to_str().ok_or(Errno::EINVAL)?;
            self.run(self.fs.symlink(parent.0, n, t, owner(req)))
        });
        self.entry(reply, r);
    }

    fn rename(
        &self,
        _req: &Request,
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
        let r = name_of(name).and_then(|n| {
            let nn = name_of(newname)?;
            self.run(
                self.fs
                    .rename(parent.0, n, newparent.0, nn, noreplace, exchange),
            )
        });
        self.empty(reply, r);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let _s = tracing::debug_span!("link", ino = ino.0).entered();
        reply.error(Errno::EPERM);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: fuser::OpenFlags, reply: ReplyOpen) {
        let _s =
            tracing::debug_span!("open", ino = ino.0, flags = flags.0, pid = req.pid()).entered();
        match self.run(self.fs.open(ino.0, open_flags(flags.0))) {
            Ok((fh, keep)) => {
                let f = if keep {
                    FopenFlags::FOPEN_KEEP_CACHE
                } else {
                    FopenFlags::empty()
                };
                reply.opened(FileHandle(fh), f)
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _s = tracing::debug_span!("read", ino = ino.0, fh = fh.0, offset, size).entered();
        match self.run(self.fs.read(fh.0, offset, size)) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
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
        match self.run(self.fs.write(fh.0, offset, data)) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let _s = tracing::debug_span!("flush", ino = ino.0, fh = fh.0).entered();
        let r = self.run(self.fs.flush(fh.0));
        self.empty(reply, r);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _s = tracing::debug_span!("release", ino = ino.0, fh = fh.0).entered();
        let r = self.run(self.fs.release(fh.0));
        self.empty(reply, r);
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _s = tracing::debug_span!("fsync", ino = ino.0, fh = fh.0).entered();
        let r = self.run(self.fs.fsync(fh.0));
        self.empty(reply, r);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: fuser::OpenFlags, reply: ReplyOpen) {
        let _s = tracing::debug_span!("opendir", ino = ino.0).entered();
        match self.run(self.fs.opendir(ino.0)) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
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

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let _s = tracing::debug_span!("statfs").entered();
        match self.run(self.fs.statfs()) {
            Ok(s) => {
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
            }
            Err(e) => reply.error(e),
        }
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
        let r = name_of(name).and_then(|n| {
            self.run(
                self.fs
                    .create(parent.0, n, mode & !umask, owner(req), open_flags(flags)),
            )
        });
        match r {
            Ok((a, fh)) => reply.created(
                &TTL,
                &file_attr(&a),
                Generation(0),
                FileHandle(fh),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let _s = tracing::debug_span!("fallocate", ino = ino.0, offset, length, mode).entered();
        let r = self.run(self.fs.fallocate(fh.0, offset, length, mode));
        self.empty(reply, r);
    }

    // Extended attributes are not kept: say so rather than pretend.
    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: fuser::ReplyXattr,
    ) {
        reply.error(Errno::EOPNOTSUPP);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: fuser::ReplyXattr) {
        reply.error(Errno::EOPNOTSUPP);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EOPNOTSUPP);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EOPNOTSUPP);
    }
}
