//! Files as lists of partition objects: an edit moves only the partitions
//! it changed, a repeated partition is stored once, and files stored as one
//! whole object before keep reading back. Real cluster processes, real
//! mounts, bytes counted on the providers' disks; needs root and /dev/fuse.

mod common;

use std::collections::HashSet;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tfsfs::proto::FileLayout;

const MIB: u64 = 1 << 20;
/// The cluster's partition size in these tests.
const PART: u64 = MIB;

async fn cluster() -> TestCluster {
    cluster_with(&[]).await
}

async fn cluster_with(meta_args: &[&str]) -> TestCluster {
    let part = PART.to_string();
    let args = [&["--partition-size", part.as_str()], meta_args].concat();
    TestCluster::start_with(6, &args).await
}

/// Bytes of shard files (`shards/XX/SHA1`) on every provider's disk.
fn shard_bytes(c: &TestCluster) -> u64 {
    let files = |dir: &Path| -> Vec<std::fs::DirEntry> {
        std::fs::read_dir(dir)
            .map(|d| d.filter_map(Result::ok).collect())
            .unwrap_or_default()
    };
    (0..c.providers.len())
        .flat_map(|i| files(&c.provider_dir(i).join("shards")))
        .flat_map(|sub| files(&sub.path()))
        .map(|f| f.metadata().map_or(0, |m| m.len()))
        .sum()
}

/// Shard bytes a file of `len` bytes costs in partitions of `part`: per
/// partition RS(4,2) of the bytes and the AES-GCM tag.
fn shards_of(len: u64, part: u64) -> u64 {
    (0..len.div_ceil(part))
        .map(|i| ((len - i * part).min(part) + 16).div_ceil(4) * 6)
        .sum()
}

/// Shard bytes one full partition costs.
fn one_partition_of_shards() -> u64 {
    shards_of(PART, PART)
}

fn read_all(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Opens `path` for writing without truncating and runs `f` on it; the
/// close uploads.
fn edit(path: &Path, f: impl FnOnce(&std::fs::File)) -> Duration {
    let started = Instant::now();
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f(&file);
    drop(file);
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_move_only_the_partitions_they_change() {
    let c = cluster().await;
    let mut m = TestMount::new(&c);
    let mut want = random_bytes(64 * MIB as usize, 1);
    let path = m.path("big");
    std::fs::write(&path, &want).unwrap();
    let written = shard_bytes(&c);
    assert!(written >= 64 * one_partition_of_shards(), "{written}");

    // One byte in the middle.
    let at = 20 * MIB + 12345;
    let took = edit(&path, |f| f.write_all_at(b"!", at).unwrap());
    want[at as usize] = b'!';
    let moved = shard_bytes(&c) - written;
    assert!(
        moved <= one_partition_of_shards(),
        "a one-byte edit stored {moved} bytes of shards"
    );
    eprintln!("one-byte edit of 64 MiB: {moved} shard bytes, {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "a one-byte edit took {took:?}"
    );

    // Appending touches the last partition only; truncating, the one cut.
    let before = shard_bytes(&c);
    let tail = random_bytes(1000, 2);
    edit(&path, |f| f.write_all_at(&tail, want.len() as u64).unwrap());
    want.extend_from_slice(&tail);
    let cut = 30 * MIB + 7;
    edit(&path, |f| f.set_len(cut).unwrap());
    want.truncate(cut as usize);
    let moved = shard_bytes(&c) - before;
    assert!(
        moved <= 2 * one_partition_of_shards(),
        "an append and a truncate stored {moved} bytes of shards"
    );

    assert_eq!(read_all(&path), want, "read back by the mount that wrote");
    m.remount(true);
    assert_eq!(read_all(&m.path("big")), want, "read back after a remount");
    let layout = c.layout("/big").await;
    assert_eq!(
        layout.fragments.len() as u64,
        cut.div_ceil(PART),
        "one object per partition"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_partition_is_stored_once() {
    let c = cluster().await;
    let m = TestMount::new(&c);
    let a = random_bytes(PART as usize, 3);
    let b = random_bytes(PART as usize, 4);
    std::fs::write(m.path("ab"), [a.clone(), b.clone()].concat()).unwrap();
    let stored = shard_bytes(&c);
    // The same partitions in another order, in another file.
    std::fs::write(m.path("ba"), [b.clone(), a.clone()].concat()).unwrap();
    assert_eq!(shard_bytes(&c), stored, "known partitions moved bytes");
    assert_eq!(read_all(&m.path("ba")), [b, a].concat());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_stored_whole_before_partitions_read_back_and_edit() {
    let c = cluster().await;
    let mut want = random_bytes(5 * PART as usize + 333, 5);
    // A REST write stores its body as one object, as the drive did before.
    let http = reqwest::Client::new();
    let url = format!("{}/file/old", c.v2());
    let made = http.post(&url).send().await.unwrap();
    assert_eq!(made.status(), 201);
    let wrote = http.put(&url).body(want.clone()).send().await.unwrap();
    assert!(wrote.status().is_success(), "{}", wrote.status());
    assert_eq!(c.layout("/old").await.fragments.len(), 1);
    let mut m = TestMount::new(&c);
    assert_eq!(read_all(&m.path("old")), want, "an old object reads back");
    // Its first edit rewrites it whole, as partitions.
    edit(&m.path("old"), |f| {
        f.write_all_at(b"xyz", 2 * PART - 1).unwrap()
    });
    want[2 * PART as usize - 1..2 * PART as usize + 2].copy_from_slice(b"xyz");
    m.remount(true);
    assert_eq!(read_all(&m.path("old")), want, "the edit reads back");
    assert_eq!(c.layout("/old").await.fragments.len(), 6);
}

/// Waits (up to 20 s) until the providers hold at least `bytes` of shards.
fn wait_for_shards(c: &TestCluster, bytes: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while shard_bytes(c) < bytes {
        assert!(
            Instant::now() < deadline,
            "providers hold {} shard bytes, not {bytes}, while the file is open",
            shard_bytes(c)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_upload_while_the_file_is_written() {
    let c = cluster().await;
    let mut m = TestMount::new(&c);
    let want = random_bytes(8 * PART as usize + 100, 6);
    let path = m.path("streamed");
    let writer = Writer::start(&path, &want, 0);
    // Still open: the complete partitions go to the providers anyway.
    wait_for_shards(&c, 6 * one_partition_of_shards());
    // Nothing committed yet: a new file is made by its first commit.
    let stat = reqwest::get(format!("{}/file/streamed", c.v2_meta()))
        .await
        .unwrap();
    assert_eq!(
        stat.status(),
        reqwest::StatusCode::NOT_FOUND,
        "the file before close"
    );
    let before_close = shard_bytes(&c);
    assert!(writer.close(), "close commits");
    let at_close = shard_bytes(&c) - before_close;
    assert!(
        at_close <= 2 * one_partition_of_shards(),
        "close stored {at_close} bytes of shards"
    );
    m.remount(true);
    assert_eq!(read_all(&m.path("streamed")), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_after_partitions_went_up_keeps_the_old_version_and_the_bytes() {
    let c = cluster_with(GC_SOON).await;
    let mut m = TestMount::new(&c);
    let old = random_bytes(4 * PART as usize, 7);
    std::fs::write(m.path("f"), &old).unwrap();
    let stored = shard_bytes(&c);
    // Rewritten in place, mid-partition at the end, never closed.
    let new = random_bytes(8 * PART as usize + PART as usize / 2, 8);
    let writer = Writer::start(&m.path("f"), &new, 0);
    wait_for_shards(&c, stored + 4 * one_partition_of_shards());
    m.kill9();
    drop(writer);
    m.mount();
    assert_version(&read_all(&m.path("f")), &old, &new, false);
    assert!(
        recovered(&m).contains(&new),
        "the staged bytes are kept aside"
    );
    // The partitions that went up are garbage: collected, the old stays.
    wait_for_exactly(&c, stored);
    m.remount(true);
    assert_version(&read_all(&m.path("f")), &old, &new, false);
}

/// `tfsfs meta` arguments: unused objects collected 2 s after they went
/// up; shards of a window cut short by a kill, when its session ends at 10 s.
const GC_SOON: &[&str] = &[
    "--gc-interval-secs",
    "1",
    "--gc-grace-secs",
    "2",
    "--clock-skew-secs",
    "0",
    "--session-ttl-secs",
    "10",
];

/// Fails unless `got` is exactly the new version (`want_new`) or exactly
/// the old one, naming which it is (or a mix).
fn assert_version(got: &[u8], old: &[u8], new: &[u8], want_new: bool) {
    let which = |b: &[u8]| match b {
        b if b == new => "the new version",
        b if b == old => "the old version",
        _ => "a mix of versions",
    };
    let want = if want_new { new } else { old };
    assert_eq!(which(got), which(want), "the file read back");
}

/// The files a mount kept aside in `CACHE/recovered`.
fn recovered(m: &TestMount) -> Vec<Vec<u8>> {
    std::fs::read_dir(m.cache.join("recovered"))
        .map(|d| {
            d.map(|e| std::fs::read(e.unwrap().path()).unwrap())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits (up to 60 s) until GC leaves the providers exactly `bytes` of shards.
fn wait_for_exactly(c: &TestCluster, bytes: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while shard_bytes(c) != bytes {
        assert!(
            Instant::now() < deadline,
            "providers hold {} shard bytes, not the {bytes} the committed version uses",
            shard_bytes(c)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A process holding a file of the mount open after writing to it, until
/// told to fsync or close it. Not this process: every fork a parallel test
/// makes here would copy the descriptor, and the child's exec closing it
/// is a close of the file, which commits what was written so far.
struct Writer {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
    _data: tempfile::NamedTempFile,
}

impl Writer {
    /// Opens `path` (made if missing, not truncated) and writes `bytes`
    /// at `offset`.
    fn start(path: &Path, bytes: &[u8], offset: u64) -> Writer {
        use std::io::BufRead;
        let data = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(data.path(), bytes).unwrap();
        let script = "import os, sys\n\
            fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644)\n\
            data = open(sys.argv[2], 'rb').read(); at = int(sys.argv[3]); n = 0\n\
            while n < len(data): n += os.pwrite(fd, data[n:], at + n)\n\
            print('written', flush=True)\n\
            for line in sys.stdin:\n\
            \x20   if line == 'fork\\n':\n\
            \x20       pid = os.fork()\n\
            \x20       if pid == 0: os._exit(0)\n\
            \x20       os.waitpid(pid, 0)\n\
            \x20   else: (os.fsync if line == 'fsync\\n' else os.close)(fd)\n\
            \x20   print('ok', flush=True)\n";
        let mut child = Command::new("python3")
            .args(["-c", script])
            .arg(path)
            .arg(data.path())
            .arg(offset.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line, "written\n", "the writer failed");
        Writer {
            child,
            out,
            _data: data,
        }
    }

    /// Asks for fsync(2) (`fsync`), a child that inherits the descriptor
    /// and exits (`fork`), or close(2); whether it succeeded.
    fn ask(&mut self, what: &str) -> bool {
        use std::io::{BufRead, Write};
        let stdin = self.child.stdin.as_mut().unwrap();
        if stdin.write_all(format!("{what}\n").as_bytes()).is_err() {
            return false;
        }
        let mut line = String::new();
        self.out.read_line(&mut line).is_ok() && line == "ok\n"
    }

    fn fsync(&mut self) -> bool {
        self.ask("fsync")
    }

    /// Closes the file (the last close commits); whether close succeeded.
    fn close(mut self) -> bool {
        self.ask("close")
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every fork in a writer's process (a shell running a tool, a build
/// spawning a compiler) gives the child a copy of the descriptor, and the
/// child's exit closes it: the file must not be published half written
/// (nor take quota) until the writer itself closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_closing_an_inherited_descriptor_publishes_nothing() {
    let c = cluster().await;
    let m = TestMount::new(&c);
    let old = random_bytes(MIB as usize + 5, 141);
    std::fs::write(m.path("f"), &old).unwrap();
    let new = random_bytes(9 * MIB as usize, 142);
    let mut w = Writer::start(&m.path("f"), &new, 0);
    for _ in 0..3 {
        assert!(w.ask("fork"), "fork");
    }
    assert_eq!(
        c.layout("/f").await.size,
        old.len() as u64,
        "a child's close published the file half written"
    );
    assert!(w.close(), "close");
    assert_eq!(c.layout("/f").await.size, new.len() as u64);
    assert!(read_all(&m.path("f")) == new, "the file after close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_held_open_past_the_gc_grace_commits_every_partition() {
    let c = cluster_with(GC_SOON).await;
    let mut m = TestMount::new(&c);
    let want = random_bytes(6 * PART as usize + PART as usize / 2, 20);
    let mut writer = Writer::start(&m.path("f"), &want, 0);
    wait_for_shards(&c, 6 * one_partition_of_shards());
    // The writer pauses: its early partitions, used by no file yet, are
    // collected, shards and all.
    wait_for_exactly(&c, 0);
    assert!(writer.fsync(), "fsync commits");
    assert_eq!(
        c.layout("/f").await.size,
        want.len() as u64,
        "committed at fsync"
    );
    assert_eq!(shard_bytes(&c), shards_of(want.len() as u64, PART));
    // What fsync made durable survives the mount's death before close.
    m.kill9();
    drop(writer);
    m.mount();
    assert!(recovered(&m).is_empty(), "nothing kept aside");
    assert_eq!(read_all(&m.path("f")), want, "read back after a kill -9");
    m.remount(true);
    assert_eq!(read_all(&m.path("f")), want, "read back after a remount");
    // Nothing the commit uses is garbage.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(shard_bytes(&c), shards_of(want.len() as u64, PART));
    assert_eq!(read_all(&m.path("f")), want, "read back after GC");
}

/// A file of 4 partitions, written and committed; its shard bytes.
fn old_version(c: &TestCluster, m: &TestMount) -> (Vec<u8>, u64) {
    let old = random_bytes(4 * PART as usize, 21);
    std::fs::write(m.path("f"), &old).unwrap();
    let stored = shard_bytes(c);
    assert_eq!(stored, shards_of(old.len() as u64, PART));
    (old, stored)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_partition_keeps_the_old_version_and_the_bytes() {
    let c = cluster_with(GC_SOON).await;
    let mut m = TestMount::new(&c);
    let (old, stored) = old_version(&c, &m);
    // Half a partition rewritten: nothing complete to upload yet.
    let mut new = old.clone();
    let edit = random_bytes(PART as usize / 2, 22);
    new[..edit.len()].copy_from_slice(&edit);
    let writer = Writer::start(&m.path("f"), &edit, 0);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(shard_bytes(&c), stored, "half a partition went up");
    m.kill9();
    drop(writer);
    m.mount();
    assert_version(&read_all(&m.path("f")), &old, &new, false);
    // Kept aside as staged: the partition written; the others, never
    // fetched, are zeros.
    let kept = recovered(&m);
    assert!(
        kept.iter()
            .any(|k| k.len() == new.len() && k[..PART as usize] == new[..PART as usize]),
        "the staged bytes are kept aside"
    );
    wait_for_exactly(&c, stored);
    m.remount(true);
    assert_version(&read_all(&m.path("f")), &old, &new, false);
}

/// Requests the metadata server answered on routes ending in `route`.
async fn meta_requests(c: &TestCluster, route: &str) -> u64 {
    let text = metrics_text(&c.meta.url).await;
    text.lines()
        .filter(|l| l.starts_with("tfsfs_http_requests_total") && l.contains(route))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_while_close_waits_for_the_commit_commits_at_the_next_mount() {
    let mut c = cluster_with(GC_SOON).await;
    let mut m = TestMount::new(&c);
    let (old, _) = old_version(&c, &m);
    let done = meta_requests(&c, "/partitions/done\"").await;
    // Whole partitions: every one goes up while the file is open.
    let new = random_bytes(8 * PART as usize, 23);
    let writer = Writer::start(&m.path("f"), &new, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while meta_requests(&c, "/partitions/done\"").await < done + 8 {
        assert!(Instant::now() < deadline, "8 partitions never went up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The metadata server stops answering: close waits on the commit.
    let meta = c.meta.child.id() as i32;
    assert_eq!(unsafe { libc::kill(meta, libc::SIGSTOP) }, 0);
    let closing = std::thread::spawn(move || writer.close());
    let staging = m.cache.join("staging");
    let deadline = Instant::now() + Duration::from_secs(30);
    let closed = || {
        std::fs::read_dir(&staging)
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".done"))
    };
    while !closed() {
        assert!(Instant::now() < deadline, "close never began its commit");
        std::thread::sleep(Duration::from_millis(20));
    }
    m.kill9();
    assert!(!closing.join().unwrap(), "close of a killed mount");
    // The request held by the stopped server dies with it.
    c.restart_meta();
    assert_the_new_version_stays(&c, &mut m, &old, &new).await;
}

/// After a killed mount (`m`) of `c` whose file `f` went from `old` to
/// `new`: mounted again, `f` is `new`, nothing is kept aside, GC brings the
/// providers to exactly `new`'s shards, and `new` reads from storage.
async fn assert_the_new_version_stays(c: &TestCluster, m: &mut TestMount, old: &[u8], new: &[u8]) {
    m.mount();
    assert_version(&read_all(&m.path("f")), old, new, true);
    assert!(recovered(m).is_empty(), "nothing kept aside");
    wait_for_exactly(c, shards_of(new.len() as u64, PART));
    m.remount(true);
    assert_version(&read_all(&m.path("f")), old, new, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_right_after_the_commit_keeps_the_new_version() {
    let c = cluster_with(GC_SOON).await;
    let mut m = TestMount::new(&c);
    let (old, _) = old_version(&c, &m);
    let new = random_bytes(8 * PART as usize + PART as usize / 2, 24);
    assert!(
        Writer::start(&m.path("f"), &new, 0).close(),
        "close commits"
    );
    m.kill9();
    assert_the_new_version_stays(&c, &mut m, &old, &new).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_repeated_in_a_file_moves_its_shards_once() {
    // Default partitions (4 MiB).
    let c = TestCluster::start(6).await;
    let m = TestMount::new(&c);
    let part = 4 * MIB;
    let block = random_bytes(part as usize, 25);
    let want = block.repeat(8);
    let received = || provider_counters(&c, &["tfsfs_provider_shard_bytes_received_total"]);
    let before = received().await;
    std::fs::write(m.path("rep"), &want).unwrap();
    let moved = received().await - before;
    assert_eq!(
        moved,
        shards_of(part, part),
        "shard bytes the providers received"
    );
    let layout = c.layout("/rep").await;
    assert_eq!(layout.fragments.len(), 8);
    assert!(
        layout
            .fragments
            .iter()
            .all(|f| f.object.sha1 == layout.fragments[0].object.sha1),
        "one object for the 8 partitions"
    );
    assert_eq!(read_all(&m.path("rep")), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_file_in_two_accounts_shares_no_object_and_no_shard() {
    let c = cluster().await;
    let one = TestMount::new(&c);
    let two = TestMount::as_uid(&c, 2);
    // The short last partition travels inline: no shards.
    let want = random_bytes(3 * PART as usize + 100, 26);
    std::fs::write(one.path("f"), &want).unwrap();
    std::fs::write(two.path("f"), &want).unwrap();
    let ids = |l: &FileLayout| -> (HashSet<String>, HashSet<String>) {
        let objects = l.fragments.iter().map(|f| f.object.sha1.clone()).collect();
        let shards = l
            .fragments
            .iter()
            .flat_map(|f| &f.object.partitions)
            .flat_map(|p| &p.shards)
            .map(|s| s.sha1.clone())
            .collect();
        (objects, shards)
    };
    let (objects1, shards1) = ids(&c.layout_as(1, "/f").await);
    let (objects2, shards2) = ids(&c.layout_as(2, "/f").await);
    assert_eq!((objects1.len(), objects2.len()), (4, 4));
    assert!(
        objects1.is_disjoint(&objects2),
        "an object shared by two accounts"
    );
    assert_eq!((shards1.len(), shards2.len()), (18, 18));
    assert!(
        shards1.is_disjoint(&shards2),
        "a shard shared by two accounts"
    );
    assert_eq!(shard_bytes(&c), 2 * shards_of(3 * PART, PART));
    assert_eq!(read_all(&one.path("f")), want);
    assert_eq!(read_all(&two.path("f")), want);
}

/// Shard bytes the providers received and sent, from their /metrics.
async fn shard_traffic(c: &TestCluster) -> u64 {
    provider_counters(
        c,
        &[
            "tfsfs_provider_shard_bytes_received_total",
            "tfsfs_provider_shard_bytes_sent_total",
        ],
    )
    .await
}

/// The sum of the providers' counters `names`, from their /metrics.
async fn provider_counters(c: &TestCluster, names: &[&str]) -> u64 {
    let mut total = 0.0;
    for p in &c.providers {
        let text = metrics_text(&p.url).await;
        total += text
            .lines()
            .filter(|l| names.iter().any(|n| l.starts_with(n)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    total as u64
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cp_within_the_mount_refers_to_the_same_partitions() {
    let c = cluster().await;
    let mut m = TestMount::new(&c);
    // Whole partitions and a short last one.
    let want = random_bytes(64 * PART as usize + 12345, 9);
    std::fs::write(m.path("src"), &want).unwrap();
    // Nothing cached: a copy through the bytes would fetch every shard.
    m.remount(true);
    let (stored, traffic) = (shard_bytes(&c), shard_traffic(&c).await);
    let started = Instant::now();
    // cp (coreutils 9.1) copies with copy_file_range unless given
    // --reflink=never (then it reads and writes).
    run_ok(Command::new("cp").arg(m.path("src")).arg(m.path("dst")));
    let took = started.elapsed();
    assert_eq!(shard_bytes(&c), stored, "the copy stored shard bytes");
    assert_eq!(
        shard_traffic(&c).await,
        traffic,
        "the copy moved shard bytes"
    );
    eprintln!("cp of {} bytes within the mount: {took:?}", want.len());
    let objects =
        |l: FileLayout| -> Vec<String> { l.fragments.into_iter().map(|f| f.object.sha1).collect() };
    assert_eq!(
        objects(c.layout("/dst").await),
        objects(c.layout("/src").await),
        "the copy names the source's objects"
    );

    // Not on partition boundaries: the bytes are copied.
    let (from, len, to) = (PART + 7, 3 * PART, 5);
    let python = format!(
        "import os\n\
         s = os.open('{}', os.O_RDONLY); d = os.open('{}', os.O_WRONLY | os.O_CREAT, 0o644)\n\
         n = 0\n\
         while n < {len}: n += os.copy_file_range(s, d, {len} - n, {from} + n, {to} + n)\n",
        m.path("src").display(),
        m.path("part").display(),
    );
    run_ok(Command::new("python3").args(["-c", &python]));
    let mut part = vec![0u8; to as usize];
    part.extend_from_slice(&want[from as usize..(from + len) as usize]);

    assert_eq!(read_all(&m.path("dst")), want, "the copy reads back");
    assert_eq!(read_all(&m.path("part")), part, "the byte copy reads back");
    m.remount(true);
    assert_eq!(read_all(&m.path("dst")), want, "the copy after a remount");
    assert_eq!(
        read_all(&m.path("part")),
        part,
        "the byte copy after a remount"
    );
    std::fs::remove_file(m.path("src")).unwrap();
    assert_eq!(
        read_all(&m.path("dst")),
        want,
        "the copy outlives its source"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4_gib_copy_in_keeps_the_mount_within_its_cache_and_256_mib_and_copies_within_in_no_time()
{
    // Default partitions (4 MiB): the upload window holds a few of them,
    // whatever the file's size.
    let c = TestCluster::start(6).await;
    let cache = 64 * MIB;
    let m = TestMount::with_args(&c, true, &["--cache-size", &cache.to_string()]);
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("big");
    {
        let f = std::fs::File::create(&local).unwrap();
        for i in 0..256u64 {
            let chunk = random_bytes(16 * MIB as usize, 100 + i);
            f.write_all_at(&chunk, i * 16 * MIB).unwrap();
        }
    }
    let within = |peak: u64| {
        assert!(
            peak <= cache + 256 * MIB,
            "peak RSS {} MiB over a {} MiB cache",
            peak >> 20,
            cache >> 20
        )
    };
    let started = Instant::now();
    run_ok(Command::new("cp").arg(&local).arg(m.path("big")));
    let took = started.elapsed();
    let peak = memory(m.pid().unwrap()).1;
    eprintln!(
        "4 GiB copied in: {took:?}, mount peak RSS {} MiB",
        peak >> 20
    );
    within(peak);

    // Copied within: the copy names the same partitions, no shard moves.
    let traffic = shard_traffic(&c).await;
    let started = Instant::now();
    run_ok(Command::new("cp").arg(m.path("big")).arg(m.path("copy")));
    let took = started.elapsed();
    eprintln!("4 GiB copied within the mount: {took:?}");
    assert_eq!(
        shard_traffic(&c).await,
        traffic,
        "the copy moved shard bytes"
    );
    // Generous (5 s a GiB): its time grows with the partitions named, and
    // is well under a second on a quiet machine.
    assert!(took < Duration::from_secs(20), "the copy took {took:?}");
    run_ok(Command::new("cmp").arg(&local).arg(m.path("copy")));
    within(memory(m.pid().unwrap()).1);
}

/// Stands between a client and the metadata server: forwards every
/// request, but holds the first commit until `release`.
struct CommitGate {
    url: String,
    commits: Arc<AtomicU64>,
    arrived: Arc<tokio::sync::Notify>,
    open: Arc<tokio::sync::Semaphore>,
}

impl CommitGate {
    async fn start(meta: &str) -> CommitGate {
        let gate = CommitGate {
            url: String::new(),
            commits: Arc::default(),
            arrived: Arc::default(),
            open: Arc::new(tokio::sync::Semaphore::new(0)),
        };
        let (commits, arrived, open) = (
            gate.commits.clone(),
            gate.arrived.clone(),
            gate.open.clone(),
        );
        let (meta, client) = (meta.to_string(), reqwest::Client::new());
        let forward = move |req: axum::extract::Request| {
            let (commits, arrived, open) = (commits.clone(), arrived.clone(), open.clone());
            let (meta, client) = (meta.clone(), client.clone());
            async move {
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                if parts.uri.path().ends_with("/commit") && commits.fetch_add(1, SeqCst) == 0 {
                    arrived.notify_one();
                    open.acquire().await.unwrap().forget();
                }
                let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                let mut headers = parts.headers;
                headers.remove(axum::http::header::HOST);
                let answer = client
                    .request(parts.method, format!("{meta}{path}"))
                    .headers(headers)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let status = answer.status();
                let headers = answer.headers().clone();
                (status, headers, answer.bytes().await.unwrap())
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(forward);
        tokio::spawn(async move { axum::serve(listener, app).await });
        CommitGate { url, ..gate }
    }

    /// Waits (up to 60 s) until the first commit is held.
    async fn held(&self) {
        tokio::time::timeout(Duration::from_secs(60), self.arrived.notified())
            .await
            .expect("no commit arrived");
    }

    fn release(&self) {
        self.open.add_permits(1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_whose_partitions_are_collected_before_its_commit_stores_them_again() {
    let c = cluster_with(GC_SOON).await;
    let want = random_bytes(3 * PART as usize + PART as usize / 2, 30);
    let local = c.dir.path().join("f");
    std::fs::write(&local, &want).unwrap();
    let gate = CommitGate::start(&c.meta.url).await;
    let mut put = c
        .cli_command(c.uid, &gate.url)
        .args(["put", local.to_str().unwrap(), "/f"])
        .spawn()
        .unwrap();
    gate.held().await;
    // Every partition is stored, named by no file: GC takes them all.
    assert_eq!(shard_bytes(&c), shards_of(want.len() as u64, PART));
    wait_for_exactly(&c, 0);
    gate.release();
    let status = tokio::task::spawn_blocking(move || put.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "put");
    assert_eq!(
        gate.commits.load(SeqCst),
        2,
        "refused for the collected partitions, then made"
    );
    assert_eq!(shard_bytes(&c), shards_of(want.len() as u64, PART));
    let back = c.dir.path().join("back");
    assert_ok(&c.get("/f", &back, true), "get");
    assert!(std::fs::read(&back).unwrap() == want, "the file read back");
}
