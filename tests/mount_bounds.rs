//! A mount over time and size: its memory stays bounded over a tree of
//! 200,000 files listed twice, and a file held open for longer than a
//! read grant lives still reads.

mod common;

use std::os::unix::fs::FileExt;
use std::process::Command;
use std::time::Duration;

use common::*;
use futures::stream::{self, StreamExt};

const DIRS: usize = 200;
const FILES_PER_DIR: usize = 1000;

/// `find DIR -type f | wc -l`.
fn find_files(dir: &std::path::Path) -> usize {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("find '{}' -type f | wc -l", dir.display()))
        .output()
        .unwrap();
    assert_ok(&out, "find | wc -l");
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A gauge of the mount's `GET /metrics`.
async fn gauge(metrics: &str, name: &str) -> f64 {
    let text = metrics_text(&format!("http://{metrics}")).await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_200k_files_twice_keeps_the_mount_small() {
    let c = TestCluster::start(0).await;
    let h = reqwest::Client::new();
    let base = c.v2();
    let post = |url: String| {
        let h = h.clone();
        async move {
            let r = h.post(&url).send().await.unwrap();
            assert_eq!(r.status(), 201, "POST {url}");
        }
    };
    stream::iter((0..DIRS).map(|d| post(format!("{base}/dir/d{d}"))))
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    let started = std::time::Instant::now();
    stream::iter((0..DIRS * FILES_PER_DIR).map(|i| {
        post(format!(
            "{base}/file/d{}/f{}",
            i / FILES_PER_DIR,
            i % FILES_PER_DIR
        ))
    }))
    .buffer_unordered(32)
    .collect::<Vec<()>>()
    .await;
    eprintln!(
        "{} files made in {:?}",
        DIRS * FILES_PER_DIR,
        started.elapsed()
    );

    let cache = 16u64 << 20;
    let metrics = format!("127.0.0.1:{}", free_port());
    let mnt = TestMount::with_args(
        &c,
        false,
        &[
            "--cache-size",
            &cache.to_string(),
            "--metrics",
            &metrics,
            "--no-sidecar",
        ],
    );
    let pid = mnt.pid().unwrap();
    let dir = mnt.dir.clone();
    let first = tokio::task::spawn_blocking(move || find_files(&dir))
        .await
        .unwrap();
    assert_eq!(first, DIRS * FILES_PER_DIR);
    let (rss1, hwm1) = memory(pid);
    let dir = mnt.dir.clone();
    let second = tokio::task::spawn_blocking(move || find_files(&dir))
        .await
        .unwrap();
    assert_eq!(second, DIRS * FILES_PER_DIR);
    let (rss2, hwm2) = memory(pid);
    eprintln!(
        "mount after find 1: VmRSS {} MiB, VmHWM {} MiB; after find 2: VmRSS {} MiB, VmHWM {} MiB",
        rss1 >> 20,
        hwm1 >> 20,
        rss2 >> 20,
        hwm2 >> 20
    );
    assert!(
        rss2 < cache + (256 << 20),
        "VmRSS {rss2} past the cache size + 256 MiB"
    );
    assert!(
        rss2 < rss1 + (16 << 20),
        "the second find grew VmRSS from {rss1} to {rss2}"
    );
    // find reads types from the listings and looks up directories only:
    // the mount keeps records for those, not for the files listed.
    let records = gauge(&metrics, "tfsfs_mount_inodes").await;
    assert!(
        records <= (DIRS + 1) as f64,
        "{records} inode records after listing {DIRS} directories"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_held_open_past_its_read_grants_reads_the_right_bytes() {
    let c =
        TestCluster::start_with(6, &["--grant-ttl-secs", "3", "--partition-size", "1048576"]).await;
    let mnt = TestMount::new(&c);
    let data = random_bytes(16 << 20, 5);
    std::fs::write(mnt.path("held.bin"), &data).unwrap();
    // A cold start: nothing of the file in the mount's cache.
    let mut mnt = mnt;
    mnt.unmount();
    mnt.mount();
    let f = std::fs::File::open(mnt.path("held.bin")).unwrap();
    let mut head = vec![0u8; 4096];
    f.read_exact_at(&mut head, 0).unwrap();
    assert_eq!(head, data[..4096]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Partitions 14 and 15: neither read nor fetched ahead.
    let at = 14 << 20;
    let mut tail = vec![0u8; 2 << 20];
    f.read_exact_at(&mut tail, at as u64).unwrap();
    assert!(tail == data[at..], "bytes past the grants' life differ");
}
