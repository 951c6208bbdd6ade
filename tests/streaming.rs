//! Files as lists of partition objects: an edit moves only the partitions
//! it changed, a repeated partition is stored once, and files stored as one
//! whole object before keep reading back. Real cluster processes, real
//! mounts, bytes counted on the providers' disks; needs root and /dev/fuse.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
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

/// Shard bytes one full partition costs: RS(4,2) and the AES-GCM tag.
fn one_partition_of_shards() -> u64 {
    (PART + 16).div_ceil(4) * 6
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
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("old");
    let mut want = random_bytes(5 * PART as usize + 333, 5);
    std::fs::write(&local, &want).unwrap();
    // `tfsfs put` stores a file as one object, as the drive did before.
    assert_ok(&c.put(&local, "/old", true), "put /old");
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
    let file = std::fs::File::create(&path).unwrap();
    file.write_all_at(&want, 0).unwrap();
    // Still open: the complete partitions go to the providers anyway.
    wait_for_shards(&c, 6 * one_partition_of_shards());
    assert_eq!(c.layout("/streamed").await.size, 0, "nothing committed yet");
    let before_close = shard_bytes(&c);
    drop(file);
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
    // Objects no file uses are collected 2 s after they went up; shards of
    // a window cut short by the kill, when its session ends at 10 s.
    let c = cluster_with(&[
        "--gc-interval-secs",
        "1",
        "--gc-grace-secs",
        "2",
        "--clock-skew-secs",
        "0",
        "--session-ttl-secs",
        "10",
    ])
    .await;
    let mut m = TestMount::new(&c);
    let old = random_bytes(4 * PART as usize, 7);
    std::fs::write(m.path("f"), &old).unwrap();
    let stored = shard_bytes(&c);
    // Rewritten in place, mid-partition at the end, never closed.
    let new = random_bytes(8 * PART as usize + PART as usize / 2, 8);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(m.path("f"))
        .unwrap();
    file.write_all_at(&new, 0).unwrap();
    wait_for_shards(&c, stored + 4 * one_partition_of_shards());
    m.kill9();
    drop(file);
    m.mount();
    assert_eq!(read_all(&m.path("f")), old, "the old version, whole");
    let kept: Vec<Vec<u8>> = std::fs::read_dir(m.cache.join("recovered"))
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(kept.contains(&new), "the staged bytes are kept aside");
    // The partitions that went up are garbage: collected, the old stays.
    let deadline = Instant::now() + Duration::from_secs(40);
    while shard_bytes(&c) > stored {
        assert!(
            Instant::now() < deadline,
            "providers still hold {} shard bytes, {stored} before the write",
            shard_bytes(&c)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(shard_bytes(&c), stored, "the old version's shards stay");
    m.remount(true);
    assert_eq!(read_all(&m.path("f")), old, "the old version after GC");
}

/// Shard bytes the providers received and sent, from their /metrics.
async fn shard_traffic(c: &TestCluster) -> u64 {
    let mut total = 0.0;
    for p in &c.providers {
        let text = reqwest::get(format!("{}/metrics", p.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        total += text
            .lines()
            .filter(|l| {
                l.starts_with("tfsfs_provider_shard_bytes_received_total")
                    || l.starts_with("tfsfs_provider_shard_bytes_sent_total")
            })
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
async fn a_big_copy_in_keeps_the_mount_within_its_cache_and_256_mib() {
    // Default partitions (4 MiB): the upload window holds a few of them,
    // whatever the file's size.
    let c = TestCluster::start(6).await;
    let cache = 64 * MIB;
    let m = TestMount::with_args(&c, true, &["--cache-size", &cache.to_string()]);
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("big");
    {
        let f = std::fs::File::create(&local).unwrap();
        for i in 0..64u64 {
            let chunk = random_bytes(16 * MIB as usize, 100 + i);
            f.write_all_at(&chunk, i * 16 * MIB).unwrap();
        }
    }
    let started = Instant::now();
    run_ok(Command::new("cp").arg(&local).arg(m.path("big")));
    let took = started.elapsed();
    let peak = memory(m.pid().unwrap()).1;
    eprintln!(
        "1 GiB copied in: {took:?}, mount peak RSS {} MiB",
        peak >> 20
    );
    run_ok(Command::new("cmp").arg(&local).arg(m.path("big")));
    let peak = memory(m.pid().unwrap()).1;
    assert!(
        peak <= cache + 256 * MIB,
        "peak RSS {} MiB over a {} MiB cache",
        peak >> 20,
        cache >> 20
    );
}
