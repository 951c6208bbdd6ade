//! Hard links on a real mount: one node under several names, its data kept
//! while any name is left (garbage collection included), Linux's errors.
//! Needs root and /dev/fuse.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

fn ln(from: &Path, to: &Path) {
    let out = Command::new("ln").arg(from).arg(to).output().unwrap();
    assert_ok(&out, &format!("ln {} {}", from.display(), to.display()));
}

fn nlink(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().nlink()
}

fn errno(r: std::io::Result<()>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_is_the_same_file_under_two_names_and_keeps_its_data_when_the_other_goes() {
    // GC runs every second with no grace: data without a name goes at once.
    let c = TestCluster::start_with(4, GC_NOW).await;
    let mut m = TestMount::new(&c);
    std::fs::create_dir(m.path("d1")).unwrap();
    std::fs::create_dir(m.path("d2")).unwrap();
    let (a, b) = (m.path("d1/a"), m.path("d2/b"));
    std::fs::write(&a, random_bytes(3 << 20, 1)).unwrap();
    let ctime_before = std::fs::metadata(&a).unwrap().ctime_nsec();
    std::thread::sleep(Duration::from_millis(20));
    ln(&a, &b);
    assert_eq!((nlink(&a), nlink(&b)), (2, 2), "nlink through both names");
    let (ma, mb) = (
        std::fs::metadata(&a).unwrap(),
        std::fs::metadata(&b).unwrap(),
    );
    assert_eq!(ma.ino(), mb.ino(), "one inode");
    assert_ne!(ma.ctime_nsec(), ctime_before, "link changes ctime");

    // A write through one name is read through the other.
    let v2 = random_bytes(5 << 20, 2);
    std::fs::write(&b, &v2).unwrap();
    assert!(
        std::fs::read(&a).unwrap() == v2,
        "written via b, read via a"
    );

    // REST lists each name as a file of its own.
    for (dir, name) in [("/d1", "a"), ("/d2", "b")] {
        let out = c.cli(&["ls", dir]);
        assert_ok(&out, "tfsfs ls");
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(
            listing.contains(&format!(" {} ", v2.len())) && listing.trim_end().ends_with(name),
            "{dir}: {listing}"
        );
    }

    // One name goes: the other keeps the bytes, through GC rounds and a
    // fresh mount.
    std::fs::remove_file(&a).unwrap();
    assert!(!a.exists());
    assert_eq!(nlink(&b), 1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    m.remount(true);
    assert!(
        std::fs::read(&b).unwrap() == v2,
        "bytes after remount and GC"
    );
    let out = c.cli(&["ls", "/d1"]);
    assert_ok(&out, "tfsfs ls /d1");
    assert!(out.stdout.is_empty(), "the removed name is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_over_a_linked_name_drops_only_that_name() {
    let c = TestCluster::start(4).await;
    let m = TestMount::new(&c);
    let (a, b, other) = (m.path("a"), m.path("b"), m.path("other"));
    std::fs::write(&a, b"first").unwrap();
    ln(&a, &b);
    std::fs::write(&other, b"second").unwrap();
    std::fs::rename(&other, &b).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), b"first");
    assert_eq!(std::fs::read(&b).unwrap(), b"second");
    assert_eq!((nlink(&a), nlink(&b)), (1, 1));

    // rename between two names of one file changes nothing.
    ln(&a, &other);
    std::fs::rename(&a, &other).unwrap();
    assert!(a.exists() && other.exists());
    assert_eq!(nlink(&other), 2);

    // The file's other name lives on after its first one is renamed away
    // and removed.
    std::fs::rename(&a, m.path("moved")).unwrap();
    std::fs::remove_file(m.path("moved")).unwrap();
    assert_eq!(std::fs::read(&other).unwrap(), b"first");
    assert_eq!(nlink(&other), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_answers_linux_errors() {
    let c = TestCluster::start(4).await;
    let m = TestMount::new(&c);
    std::fs::create_dir(m.path("dir")).unwrap();
    std::fs::write(m.path("f"), b"x").unwrap();
    std::fs::write(m.path("g"), b"y").unwrap();
    let link = |a: &str, b: &str| errno(std::fs::hard_link(m.path(a), m.path(b)));
    assert_eq!(link("dir", "dir2"), Some(libc::EPERM), "a directory");
    assert_eq!(link("f", "g"), Some(libc::EEXIST), "onto a name");
    assert_eq!(link("missing", "h"), Some(libc::ENOENT), "from nothing");
    assert_eq!(link("f", "nodir/h"), Some(libc::ENOENT), "into nothing");
    assert_eq!(link("f", "g/h"), Some(libc::ENOTDIR), "into a file");
    assert_eq!(std::fs::read(m.path("g")).unwrap(), b"y", "g untouched");
    // A directory holding only a link is not empty.
    std::fs::hard_link(m.path("f"), m.path("dir/f")).unwrap();
    assert_eq!(
        errno(std::fs::remove_dir(m.path("dir"))),
        Some(libc::ENOTEMPTY)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_file_keeps_reading_when_one_of_its_names_goes() {
    let c = TestCluster::start(4).await;
    let m = TestMount::new(&c);
    let data = random_bytes(2 << 20, 3);
    std::fs::write(m.path("a"), &data).unwrap();
    ln(&m.path("a"), &m.path("b"));
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("a"))
        .unwrap();
    std::fs::remove_file(m.path("a")).unwrap();
    use std::io::{Read, Write};
    f.write_all(b"head").unwrap();
    drop(f);
    let mut expect = data.clone();
    expect[..4].copy_from_slice(b"head");
    let mut back = Vec::new();
    std::fs::File::open(m.path("b"))
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert!(
        back == expect,
        "a write through an open name lands on the file"
    );
}
