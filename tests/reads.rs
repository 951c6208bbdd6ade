//! Cold big reads through the mount: the kernel's read-ahead is widened so
//! requests come 1 MiB at a time and several at once; a read goes around a
//! dead provider and a stopped one; what a read holds stays bounded.

mod common;

use std::io::Read;
use std::os::unix::fs::MetadataExt;
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
    let kib =
        std::fs::read_to_string(format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb")).unwrap();
    // FUSE's own default is 128 KiB.
    assert_eq!(kib.trim(), "8192");
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
}
