//! Cold big reads through the mount: the kernel's read-ahead is widened so
//! requests come 1 MiB at a time and several at once; a read goes around a
//! dead provider and a stopped one; a provider merely slower than others
//! is waited for, not gone around; what a read holds stays bounded.

mod common;

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;

const MIB: usize = 1 << 20;

fn signal(p: &Proc, sig: i32) {
    // SAFETY: kill(2) on a child process we own.
    assert_eq!(unsafe { libc::kill(p.child.id() as i32, sig) }, 0);
}

/// Reads `path` in 1 MiB calls (as `cp` and `dd bs=1M` do), checking each
/// against `want`; returns the time taken.
fn read_and_check(path: &std::path::Path, want: &[u8]) -> Duration {
    let started = Instant::now();
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; MIB];
    let mut at = 0;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert!(
            buf[..n] == want[at..at + n],
            "bytes at {at}..{} differ",
            at + n
        );
        at += n;
    }
    assert_eq!(at, want.len(), "read stops at the file's end");
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mount_widens_the_kernels_read_ahead() {
    let c = TestCluster::start(6).await;
    let m = TestMount::new(&c);
    let dev = std::fs::metadata(&m.dir).unwrap().dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let kib = || {
        std::fs::read_to_string(format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb")).unwrap()
    };
    // FUSE's own default is 128 KiB; the mount widens it just after the
    // mount point appears.
    let deadline = Instant::now() + Duration::from_secs(5);
    while kib().trim() != "8192" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(kib().trim(), "8192");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_read_goes_around_a_dead_and_a_stopped_provider() {
    let c = TestCluster::start(6).await;
    let mut m = TestMount::new(&c);
    let data = random_bytes(96 * MIB, 11);
    std::fs::write(m.path("f"), &data).unwrap();
    m.remount(true);
    let all_up = read_and_check(&m.path("f"), &data);

    // 4 + 2 erasure coding: two providers lost leave exactly k shards.
    let mut c = c;
    c.providers[0].kill();
    signal(&c.providers[1], libc::SIGSTOP);
    m.remount(true);
    let degraded = read_and_check(&m.path("f"), &data);
    signal(&c.providers[1], libc::SIGCONT);
    eprintln!(
        "cold 96 MiB read: {all_up:?} all up, {degraded:?} with one provider dead, one stopped"
    );
    // Hedging asks parity within 1.5 s of a stalled request, not after its
    // 5 s STALL; the stopped provider is then asked last.
    assert!(
        degraded < all_up * 3 + Duration::from_secs(4),
        "one dead and one stopped provider slowed a cold read from {all_up:?} to {degraded:?}"
    );
}

/// Shard GETs each provider answered, from its /metrics.
async fn shard_gets(c: &TestCluster) -> Vec<u64> {
    let mut out = Vec::new();
    for p in &c.providers {
        let text = metrics_text(&p.url).await;
        let n: f64 = text
            .lines()
            .filter(|l| l.starts_with("tfsfs_http_requests_total{"))
            .filter(|l| l.contains(r#"method="GET""#) && l.contains("/shards/"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        out.push(n as u64);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_read_asks_only_data_shards_unless_a_provider_stalls() {
    let c = TestCluster::start(6).await;
    let mut m = TestMount::new(&c);
    let data = random_bytes(64 * MIB, 13);
    std::fs::write(m.path("f"), &data).unwrap();
    // Each provider's data shards: the first k of each partition.
    let layout = c.layout("/f").await;
    let mut data_shards = vec![0u64; c.providers.len()];
    for frag in &layout.fragments {
        for part in &frag.object.partitions {
            assert_eq!((part.k, part.m), (4, 2));
            for s in &part.shards[..part.k] {
                let at = c.providers.iter().position(|p| p.url == s.providers[0].url);
                data_shards[at.expect("a provider of the cluster")] += 1;
            }
        }
    }
    assert_eq!(data_shards.iter().sum::<u64>(), 16 * 4);
    // Every provider up, then one slowed down (stopped 200 ms in every 250,
    // so its GETs take many times the others' yet bytes keep coming):
    // slower shards are waited for, no parity shard is asked, so none is
    // decoded.
    let mut all_up = Duration::ZERO;
    for slowed in [false, true] {
        m.remount(true);
        let before = shard_gets(&c).await;
        let done = AtomicBool::new(false);
        let took = std::thread::scope(|s| {
            if slowed {
                s.spawn(|| {
                    while !done.load(Ordering::Relaxed) {
                        signal(&c.providers[2], libc::SIGSTOP);
                        std::thread::sleep(Duration::from_millis(200));
                        signal(&c.providers[2], libc::SIGCONT);
                        std::thread::sleep(Duration::from_millis(50));
                    }
                });
            }
            let took = read_and_check(&m.path("f"), &data);
            done.store(true, Ordering::Relaxed);
            took
        });
        let asked: Vec<u64> = shard_gets(&c)
            .await
            .iter()
            .zip(&before)
            .map(|(after, before)| after - before)
            .collect();
        eprintln!("cold 64 MiB read, one provider slowed: {slowed}: {took:?}");
        assert_eq!(
            asked, data_shards,
            "GETs per provider against data shards held (one provider slowed: {slowed})"
        );
        if !slowed {
            all_up = took;
        }
    }

    signal(&c.providers[1], libc::SIGSTOP);
    m.remount(true);
    let stopped = read_and_check(&m.path("f"), &data);
    signal(&c.providers[1], libc::SIGCONT);
    eprintln!("cold 64 MiB read: {all_up:?} all up, {stopped:?} with one provider stopped");
    // A request that moves no byte is gone around within a second or so.
    assert!(
        stopped < all_up * 3 + Duration::from_secs(4),
        "one stopped provider slowed a cold read from {all_up:?} to {stopped:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_read_holds_at_most_its_cache_and_prefetch() {
    let cache = 32 * MIB;
    let c = TestCluster::start(6).await;
    let mut m = TestMount::with_args(&c, true, &["--cache-size", &cache.to_string()]);
    let data = random_bytes(320 * MIB, 12);
    std::fs::write(m.path("f"), &data).unwrap();
    // A new process: its peak is the read's alone.
    m.remount(true);
    read_and_check(&m.path("f"), &data);
    let (_, peak) = memory(m.pid().unwrap());
    eprintln!(
        "peak RSS of a cold 320 MiB read, cache {cache}: {} MiB",
        peak >> 20
    );
    assert!(
        peak <= (cache + 256 * MIB) as u64,
        "peak RSS {} MiB over the cache ({} MiB) + 256 MiB",
        peak >> 20,
        cache >> 20
    );
    // With room for the whole file, the cache still lets go of each
    // partition read whole: a sequential read holds its prefetch window
    // and a few pooled buffers, not the file.
    drop(m);
    let m = TestMount::new(&c);
    read_and_check(&m.path("f"), &data);
    let (_, peak) = memory(m.pid().unwrap());
    eprintln!(
        "peak RSS of a cold 320 MiB read, default cache (512 MiB): {} MiB",
        peak >> 20
    );
    assert!(
        peak <= 256 * MIB as u64,
        "peak RSS {} MiB reading 320 MiB: blocks read whole were kept",
        peak >> 20
    );
}
