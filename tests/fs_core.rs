//! The filesystem core's own rules, driven directly over the in-memory
//! backend: no FUSE, no servers, no root. The orphan rule, ESTALE, dup and
//! close, rename, hard links, and the inode records' lookup counts and
//! forget.

use tfsfs::fs::{Backend, Fs, FsConfig, FsError, MemoryBackend, OpenFlags, Owner};
use tfsfs::proto::{FileAttrs, RemoveRequest};

const ROOT: u64 = 1;
const ME: Owner = Owner {
    uid: 0,
    gid: 0,
    umask: 0,
};
const RW: OpenFlags = OpenFlags {
    read: true,
    write: true,
    truncate: false,
    append: false,
    exclusive: false,
    opener: 0,
};
const RO: OpenFlags = OpenFlags {
    read: true,
    write: false,
    truncate: false,
    append: false,
    exclusive: false,
    opener: 0,
};

/// A core over a fresh in-memory namespace, and that namespace (to act
/// beside the core as another client would).
async fn core() -> (Fs<MemoryBackend>, MemoryBackend, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let backend = MemoryBackend::default();
    let cfg = FsConfig {
        cache_dir: dir.path().to_path_buf(),
        cache_size: 1 << 20,
        prefetch: 2,
    };
    let fs = Fs::new(backend.clone(), cfg).await.unwrap();
    (fs, backend, dir)
}

/// Makes `name` in `parent` with `data`, closed; returns its inode number.
async fn file(fs: &Fs<MemoryBackend>, parent: u64, name: &str, data: &[u8]) -> u64 {
    let (attr, fh) = fs.create(parent, name, 0o644, ME, RW).await.unwrap();
    fs.write(fh, 0, data).await.unwrap();
    fs.flush(fh, 0).await.unwrap();
    fs.release(fh).await.unwrap();
    attr.ino
}

/// The whole file as a new reader sees it.
async fn contents(fs: &Fs<MemoryBackend>, ino: u64) -> Vec<u8> {
    let (fh, _) = fs.open(ino, RO).await.unwrap();
    let data = fs.read(fh, 0, 1 << 24).await.unwrap();
    fs.release(fh).await.unwrap();
    data.into()
}

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[tokio::test]
async fn an_unlinked_open_file_keeps_its_data_until_the_last_close() {
    let (fs, backend, _dir) = core().await;
    let data = bytes(200_000, 1);
    let ino = file(&fs, ROOT, "f", &data).await;
    let (reader, _) = fs.open(ino, RO).await.unwrap();
    let (writer, _) = fs.open(ino, RW).await.unwrap();
    fs.unlink(ROOT, "f").await.unwrap();
    assert_eq!(fs.lookup(ROOT, "f", 0).await, Err(FsError::NotFound));
    assert_eq!(fs.getattr(ino).await.unwrap().nlink, 0);
    // The reader reads the version it opened, across partitions.
    assert_eq!(
        fs.read(reader, 70_000, 100_000).await.unwrap(),
        &data[70_000..170_000]
    );
    // The writer writes its own copy, which nobody else can reach.
    fs.write(writer, 0, b"changed").await.unwrap();
    assert_eq!(fs.read(writer, 0, 7).await.unwrap(), &b"changed"[..]);
    fs.flush(writer, 0).await.unwrap();
    fs.release(writer).await.unwrap();
    fs.release(reader).await.unwrap();
    // Closed: nothing was uploaded, and the node is gone.
    assert_eq!(backend.lookup(1, "f").await.err(), Some(FsError::NotFound));
    assert_eq!(fs.getattr(ino).await, Err(FsError::Stale));
}

#[tokio::test]
async fn a_node_gone_elsewhere_is_stale() {
    let (fs, backend, _dir) = core().await;
    let ino = file(&fs, ROOT, "f", b"data").await;
    backend
        .remove(RemoveRequest {
            parent: 1,
            name: "f".into(),
            dir: false,
        })
        .await
        .unwrap();
    assert_eq!(fs.getattr(ino).await, Err(FsError::Stale));
    assert_eq!(fs.open(ino, RO).await.err(), Some(FsError::Stale));
}

#[tokio::test]
async fn closing_one_of_two_descriptors_leaves_the_other_working() {
    let (fs, _backend, _dir) = core().await;
    let ino = file(&fs, ROOT, "f", b"0123456789").await;
    let (a, _) = fs.open(ino, RW).await.unwrap();
    let (b, _) = fs.open(ino, RW).await.unwrap();
    fs.write(a, 0, b"AB").await.unwrap();
    fs.flush(a, 0).await.unwrap();
    fs.release(a).await.unwrap();
    assert_eq!(fs.read(a, 0, 10).await, Err(FsError::BadHandle));
    // The other descriptor sees the first one's bytes and writes on.
    assert_eq!(fs.read(b, 0, 10).await.unwrap(), &b"AB23456789"[..]);
    fs.write(b, 8, b"YZ").await.unwrap();
    fs.flush(b, 0).await.unwrap();
    fs.release(b).await.unwrap();
    assert_eq!(contents(&fs, ino).await, b"AB234567YZ");
}

#[tokio::test]
async fn rename_replaces_a_file_but_not_a_full_directory_nor_moves_a_directory_into_itself() {
    let (fs, _backend, _dir) = core().await;
    let old = bytes(100_000, 2);
    let victim = file(&fs, ROOT, "old", &old).await;
    let src = file(&fs, ROOT, "new", b"new bytes").await;
    let (reader, _) = fs.open(victim, RO).await.unwrap();
    fs.rename(ROOT, "new", ROOT, "old", false, false)
        .await
        .unwrap();
    assert_eq!(fs.lookup(ROOT, "old", 0).await.unwrap().ino, src);
    assert_eq!(fs.lookup(ROOT, "new", 0).await, Err(FsError::NotFound));
    assert_eq!(contents(&fs, src).await, b"new bytes");
    // The replaced file lives on for its open descriptor.
    assert_eq!(fs.read(reader, 0, 200_000).await.unwrap(), old);
    assert_eq!(fs.getattr(victim).await.unwrap().nlink, 0);
    fs.release(reader).await.unwrap();
    assert_eq!(fs.getattr(victim).await, Err(FsError::Stale));

    let a = fs.mkdir(ROOT, "a", 0o755, ME).await.unwrap().ino;
    let full = fs.mkdir(ROOT, "full", 0o755, ME).await.unwrap().ino;
    file(&fs, full, "inside", b"x").await;
    assert_eq!(
        fs.rename(ROOT, "a", ROOT, "full", false, false).await,
        Err(FsError::NotEmpty)
    );
    let sub = fs.mkdir(a, "sub", 0o755, ME).await.unwrap().ino;
    let into_itself = fs.rename(ROOT, "a", sub, "a", false, false).await;
    assert_eq!(into_itself.map_err(|e| e.errno()), Err(libc::EINVAL));
    // An empty directory is replaced.
    fs.unlink(full, "inside").await.unwrap();
    fs.rename(ROOT, "a", ROOT, "full", false, false)
        .await
        .unwrap();
    assert_eq!(fs.lookup(ROOT, "full", 0).await.unwrap().ino, a);
}

#[tokio::test]
async fn the_kernels_lookups_keep_a_record_and_forget_drops_it() {
    let (fs, _backend, _dir) = core().await;
    let dir = fs.mkdir(ROOT, "d", 0o755, ME).await.unwrap().ino;
    for i in 0..100 {
        file(&fs, dir, &format!("f{i}"), b"x").await;
    }
    // mkdir and 100 creates handed the kernel 101 entries.
    assert_eq!(fs.inode_count(), 101);
    for i in 0..100 {
        let ino = fs.lookup(dir, &format!("f{i}"), 0).await.unwrap().ino;
        fs.forget(ino, 2);
    }
    assert_eq!(fs.inode_count(), 1, "only the directory is still known");
    // A listing hands the kernel no entry: no record grows.
    let fh = fs.opendir(dir).await.unwrap();
    assert_eq!(fs.readdir(fh).unwrap().len(), 102);
    fs.releasedir(fh);
    assert_eq!(fs.inode_count(), 1);
    // Forgotten while open: the record stays until the last close.
    let ino = fs.lookup(dir, "f7", 0).await.unwrap().ino;
    fs.lookup(dir, "f7", 0).await.unwrap();
    let (fh, _) = fs.open(ino, RO).await.unwrap();
    fs.forget(ino, 1);
    fs.forget(ino, 1);
    assert_eq!(fs.inode_count(), 2);
    assert_eq!(fs.read(fh, 0, 10).await.unwrap(), &b"x"[..]);
    fs.release(fh).await.unwrap();
    assert_eq!(fs.inode_count(), 1);
    // readdirplus hands entries, but not "." and "..".
    let fh = fs.opendir(dir).await.unwrap();
    for e in fs.readdir(fh).unwrap().iter() {
        fs.handed_entry(dir, e);
    }
    fs.releasedir(fh);
    assert_eq!(fs.inode_count(), 101);
    for i in 0..100 {
        let ino = fs.lookup(dir, &format!("f{i}"), 0).await.unwrap().ino;
        fs.forget(ino, 2);
    }
    assert_eq!(fs.inode_count(), 1);
}

#[tokio::test]
async fn a_hard_link_is_a_second_name_and_counts_a_lookup() {
    let (fs, _backend, _dir) = core().await;
    let data = bytes(200_000, 3);
    let ino = file(&fs, ROOT, "a", &data).await;
    assert_eq!(fs.inode_count(), 1);
    let linked = fs.link(ino, ROOT, "b").await.unwrap();
    assert_eq!(linked.ino, ino);
    assert_eq!(linked.nlink, 2);
    assert_eq!(fs.link(ino, ROOT, "a").await.err(), Some(FsError::Exists));
    let dir = fs.mkdir(ROOT, "d", 0o755, ME).await.unwrap().ino;
    assert_eq!(
        fs.link(dir, ROOT, "d2").await.err(),
        Some(FsError::NotPermitted)
    );
    fs.forget(dir, 1);
    // One name goes; the other reads the same bytes.
    fs.unlink(ROOT, "a").await.unwrap();
    assert_eq!(fs.lookup(ROOT, "a", 0).await, Err(FsError::NotFound));
    let b = fs.lookup(ROOT, "b", 0).await.unwrap();
    assert_eq!((b.ino, b.nlink), (ino, 1));
    assert_eq!(contents(&fs, ino).await, data);
    // A write through the one name left is the file's.
    let (fh, _) = fs.open(ino, RW).await.unwrap();
    fs.write(fh, 100_000, b"linked").await.unwrap();
    fs.release(fh).await.unwrap();
    let mut want = data.clone();
    want[100_000..100_006].copy_from_slice(b"linked");
    assert_eq!(contents(&fs, ino).await, want);
    // create, link and lookup each handed the kernel an entry.
    fs.forget(ino, 2);
    assert_eq!(fs.inode_count(), 1);
    fs.forget(ino, 1);
    assert_eq!(fs.inode_count(), 0);
}

#[tokio::test]
async fn only_closes_in_the_writers_process_commit() {
    let (fs, backend, _dir) = core().await;
    let ino = file(&fs, ROOT, "f", b"old").await;
    let me = std::process::id();
    let (fh, _) = fs.open(ino, OpenFlags { opener: me, ..RW }).await.unwrap();
    fs.write(fh, 0, b"new bytes").await.unwrap();
    // A child that inherited the descriptor exits: pid 1 stands for any
    // other process.
    fs.flush(fh, 1).await.unwrap();
    assert_eq!(backend.lookup(1, "f").await.unwrap().size, 3);
    // Another thread of the writer's process closes it: that commits.
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        tid_tx.send(unsafe { libc::gettid() } as u32).unwrap();
        let _ = done_rx.recv();
    });
    fs.flush(fh, tid_rx.recv().unwrap()).await.unwrap();
    drop(done_tx);
    thread.join().unwrap();
    assert_eq!(backend.lookup(1, "f").await.unwrap().size, 9);
    fs.release(fh).await.unwrap();
    assert_eq!(contents(&fs, ino).await, b"new bytes");
}

#[tokio::test]
async fn a_lookups_layout_serves_only_the_open_of_its_own_path_walk() {
    let (fs, backend, dir) = core().await;
    let ino = file(&fs, ROOT, "f", b"one").await;
    let id = backend.lookup(1, "f").await.unwrap().id;
    let open_as = |tid: u32| OpenFlags { opener: tid, ..RO };
    let read_as = |tid: u32| {
        let fs = &fs;
        async move {
            let (fh, _) = fs.open(ino, open_as(tid)).await.unwrap();
            let data = fs.read(fh, 0, 100).await.unwrap();
            fs.release(fh).await.unwrap();
            Vec::from(data)
        }
    };
    // Another client's new version of f.
    let other = |data: &'static [u8]| {
        let (backend, path) = (backend.clone(), dir.path().join("other"));
        async move {
            std::fs::write(&path, data).unwrap();
            let base = backend.getattr(id).await.unwrap().ver_no;
            let attrs = FileAttrs {
                mode: None,
                mtime_ns: None,
            };
            backend.upload(id, "f", &path, attrs, base).await.unwrap();
        }
    };
    // The lookup's own open reads what the lookup found.
    fs.lookup(ROOT, "f", 7).await.unwrap();
    assert_eq!(read_as(7).await, b"one");
    // An open by another thread asks.
    fs.lookup(ROOT, "f", 7).await.unwrap();
    other(b"two").await;
    assert_eq!(read_as(8).await, b"two");
    // So does one past the path walk's time.
    fs.lookup(ROOT, "f", 7).await.unwrap();
    other(b"three").await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(read_as(7).await, b"three");
    // And one after this mount's own commit, which the lookup predates.
    let (w, _) = fs.open(ino, OpenFlags { opener: 7, ..RW }).await.unwrap();
    fs.lookup(ROOT, "f", 7).await.unwrap();
    fs.write(w, 0, b"four!").await.unwrap();
    fs.flush(w, 7).await.unwrap();
    fs.release(w).await.unwrap();
    assert_eq!(read_as(7).await, b"four!");
}

/// A new file (create without O_EXCL) is made on the server by its first
/// commit. Until then this mount alone knows it: lookups, getattr and
/// listings show it, a directory holding it is not empty, and whatever
/// needs it on the server (chmod, rename, unlink, xattrs) makes it first.
#[tokio::test]
async fn a_new_file_is_made_by_its_first_commit() {
    let (fs, backend, _dir) = core().await;
    let dir = fs.mkdir(ROOT, "d", 0o755, ME).await.unwrap().ino;
    let (attr, fh) = fs.create(dir, "f", 0o640, ME, RW).await.unwrap();
    fs.write(fh, 0, b"new bytes").await.unwrap();
    let d = backend.lookup(1, "d").await.unwrap().id;
    assert_eq!(backend.lookup(d, "f").await.err(), Some(FsError::NotFound));
    assert_eq!(fs.lookup(dir, "f", 0).await.unwrap().ino, attr.ino);
    let seen = fs.getattr(attr.ino).await.unwrap();
    assert_eq!((seen.size, seen.mode, seen.nlink), (9, 0o640, 1));
    let listing = fs.opendir(dir).await.unwrap();
    let names: Vec<String> = fs
        .readdir(listing)
        .unwrap()
        .iter()
        .map(|e| e.name.clone())
        .collect();
    fs.releasedir(listing);
    assert_eq!(names, [".", "..", "f"]);
    assert_eq!(fs.rmdir(ROOT, "d").await, Err(FsError::NotEmpty));
    fs.flush(fh, 0).await.unwrap();
    fs.release(fh).await.unwrap();
    // Made with its bytes, under the inode number the kernel was given.
    let made = backend.lookup(d, "f").await.unwrap();
    assert_eq!((made.id as u64, made.size), (attr.ino, 9));
    assert_eq!(contents(&fs, attr.ino).await, b"new bytes");

    // chmod of a file still open: made first, then changed.
    let (g, gh) = fs.create(dir, "g", 0o644, ME, RW).await.unwrap();
    let chmod = tfsfs::fs::SetAttr {
        mode: Some(0o600),
        ..Default::default()
    };
    fs.setattr(g.ino, chmod).await.unwrap();
    assert_eq!(backend.lookup(d, "g").await.unwrap().mode, 0o600);
    fs.write(gh, 0, b"g").await.unwrap();
    fs.release(gh).await.unwrap();
    assert_eq!(contents(&fs, g.ino).await, b"g");

    // Renamed, then unlinked while open: nothing left once closed.
    let (h, hh) = fs.create(dir, "h", 0o644, ME, RW).await.unwrap();
    fs.write(hh, 0, b"h").await.unwrap();
    fs.rename(dir, "h", dir, "h2", false, false).await.unwrap();
    assert_eq!(fs.lookup(dir, "h2", 0).await.unwrap().ino, h.ino);
    fs.unlink(dir, "h2").await.unwrap();
    fs.release(hh).await.unwrap();
    assert_eq!(backend.lookup(d, "h2").await.err(), Some(FsError::NotFound));
    assert_eq!(backend.lookup(d, "h").await.err(), Some(FsError::NotFound));

    // Another client makes the name meanwhile. Opened with O_TRUNC, the
    // new file replaces it (as truncating it on open would have emptied
    // it); without, its bytes go to a conflict name beside it.
    let (r, rh) = fs
        .create(
            dir,
            "r",
            0o644,
            ME,
            OpenFlags {
                truncate: true,
                ..RW
            },
        )
        .await
        .unwrap();
    let (_, sh) = fs.create(dir, "s", 0o644, ME, RW).await.unwrap();
    let theirs = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(theirs.path(), b"theirs").unwrap();
    for name in ["r", "s"] {
        let req = tfsfs::proto::MakeRequest {
            id: None,
            parent: d,
            name: name.into(),
            kind: tfsfs::proto::NodeKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            umask: 0,
            target: None,
            rdev: 0,
        };
        let n = backend.make(req).await.unwrap();
        let attrs = FileAttrs {
            mode: None,
            mtime_ns: None,
        };
        backend
            .upload(n.id, name, theirs.path(), attrs, n.ver_no)
            .await
            .unwrap();
    }
    fs.write(rh, 0, b"mine").await.unwrap();
    fs.write(sh, 0, b"mine").await.unwrap();
    fs.release(rh).await.unwrap();
    let r_now = backend.lookup(d, "r").await.unwrap();
    assert_eq!(r_now.id as u64, r.ino, "replaced by the new file");
    assert_eq!(contents(&fs, r.ino).await, b"mine");
    let closed = fs.release(sh).await;
    assert!(
        matches!(&closed, Err(FsError::Io(m)) if m.contains("s.conflict-")),
        "{closed:?}"
    );
    let s_ino = backend.lookup(d, "s").await.unwrap().id as u64;
    assert_eq!(contents(&fs, s_ino).await, b"theirs", "theirs stays");
    let names: Vec<String> = backend
        .children(d)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    let copy = names.iter().find(|n| n.starts_with("s.conflict-")).unwrap();
    let copy_ino = backend.lookup(d, copy).await.unwrap().id as u64;
    assert_eq!(contents(&fs, copy_ino).await, b"mine");
}

/// A file made by its first commit shows the mode the umask leaves, as the
/// server will make it; in a directory with a default ACL, which sets the
/// mode instead, a file is made on the server at its create. The core
/// masks the mode it asks for, so a server that ignores `umask` (as the
/// in-memory backend does) makes it right too.
#[tokio::test]
async fn a_new_file_in_a_directory_with_a_default_acl_is_made_at_once() {
    let (fs, backend, _dir) = core().await;
    let masked = Owner { umask: 0o027, ..ME };
    let dir = fs.mkdir(ROOT, "d", 0o777, masked).await.unwrap();
    assert_eq!(dir.mode, 0o750);
    let d = backend.lookup(1, "d").await.unwrap().id;
    let (f, fh) = fs.create(dir.ino, "f", 0o666, masked, RW).await.unwrap();
    assert_eq!(f.mode, 0o640);
    assert_eq!(backend.lookup(d, "f").await.err(), Some(FsError::NotFound));
    fs.release(fh).await.unwrap();
    assert_eq!(backend.lookup(d, "f").await.unwrap().mode, 0o640);

    let default_acl = tfsfs::meta::acl::DEFAULT;
    fs.setxattr(dir.ino, default_acl, b"\x02\0\0\0", 0, 0)
        .await
        .unwrap();
    let (_, gh) = fs.create(dir.ino, "g", 0o666, masked, RW).await.unwrap();
    assert!(backend.lookup(d, "g").await.is_ok(), "made at its create");
    fs.release(gh).await.unwrap();
    fs.removexattr(dir.ino, default_acl, 0).await.unwrap();
    let (_, hh) = fs.create(dir.ino, "h", 0o666, masked, RW).await.unwrap();
    assert_eq!(backend.lookup(d, "h").await.err(), Some(FsError::NotFound));
    fs.release(hh).await.unwrap();

    // Set by another client: known from the directory's next lookup.
    let e = fs.mkdir(dir.ino, "e", 0o755, ME).await.unwrap();
    let e_id = backend.lookup(d, "e").await.unwrap().id;
    backend
        .set_xattr(
            e_id,
            default_acl,
            b"\x02\0\0\0",
            tfsfs::proto::XattrHow::Either,
        )
        .await
        .unwrap();
    assert_eq!(fs.lookup(dir.ino, "e", 0).await.unwrap().ino, e.ino);
    let (_, ih) = fs.create(e.ino, "i", 0o666, masked, RW).await.unwrap();
    assert!(
        backend.lookup(e_id, "i").await.is_ok(),
        "made at its create"
    );
    fs.release(ih).await.unwrap();
}
