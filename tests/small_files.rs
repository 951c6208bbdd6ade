//! Small files in few round trips, on real mounts: a lookup that misses in
//! a directory the mount listed (or made, or changed itself, nothing else
//! changing it) is answered by the mount, so a new small file costs its
//! create and its commit. Names made elsewhere show after the TTL, O_EXCL
//! stays exact across mounts, open(O_CREAT) of a name made elsewhere opens
//! that file, and a killed mount leaves a closed small file's bytes.
//! Needs root and /dev/fuse.

mod common;

use std::collections::HashMap;
use std::io::{ErrorKind, Write};
use std::time::{Duration, Instant};

use common::*;

/// The entry and attribute TTL of the mount (`fs::TTL`).
const TTL: Duration = Duration::from_secs(1);

/// How many times in `took` the kernel may ask again for each of two
/// directories (the root and "d"): once a TTL, counting a start.
fn once_a_ttl_for_root_and_d(took: Duration) -> u64 {
    2 * ((took.as_secs_f64() / TTL.as_secs_f64()).ceil() as u64 + 1)
}

/// Requests the metadata server answered so far, by (method, route, status).
async fn requests(c: &TestCluster) -> HashMap<(String, String, String), u64> {
    let text = metrics_text(&c.meta.url).await;
    let label = |l: &str, key: &str| {
        let from = l.find(&format!("{key}=\"")).unwrap() + key.len() + 2;
        l[from..from + l[from..].find('"').unwrap()].to_string()
    };
    text.lines()
        .filter(|l| l.starts_with("tfsfs_http_requests_total{"))
        .map(|l| {
            let n: f64 = l.rsplit(' ').next().unwrap().parse().unwrap();
            let key = (label(l, "method"), label(l, "route"), label(l, "status"));
            (key, n as u64)
        })
        .collect()
}

/// Requests between two scrapes to routes ending in `route`, answered
/// with a status starting with `status` ("" for any).
fn sent(
    before: &HashMap<(String, String, String), u64>,
    after: &HashMap<(String, String, String), u64>,
    route: &str,
    status: &str,
) -> u64 {
    after
        .iter()
        .filter(|((_, r, s), _)| r.ends_with(route) && s.starts_with(status))
        .map(|(k, n)| n - before.get(k).copied().unwrap_or(0))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_small_file_costs_one_request() {
    let c = TestCluster::start(3).await;
    let m = TestMount::new(&c);
    std::fs::create_dir(m.path("d")).unwrap();
    const FILES: usize = 100;
    let before = requests(&c).await;
    let started = Instant::now();
    for i in 0..FILES {
        std::fs::write(m.path(&format!("d/f{i}")), random_bytes(4096, i as u64)).unwrap();
    }
    let took = started.elapsed();
    let after = requests(&c).await;
    // Made by its commit, under an id from a range reserved once.
    assert_eq!(sent(&before, &after, "/fs/make", ""), 0, "creates");
    assert_eq!(sent(&before, &after, "/fs/ids", ""), 1, "id ranges");
    assert_eq!(sent(&before, &after, "/check", ""), FILES as u64, "commits");
    // The directory was made here and changed only here: every miss is
    // answered by the mount.
    let misses = sent(&before, &after, "/fs/lookup/{parent}", "404");
    assert_eq!(misses, 0, "lookups that missed");
    // A file this mount made has no security.capability.
    assert_eq!(
        sent(&before, &after, "/fs/xattr/{id}", ""),
        0,
        "xattr reads"
    );
    // Once a TTL (1 s) for each directory on the path, the root and "d":
    // the kernel looks them up again and asks their attributes (dropped
    // at each create; the mount answers them in between). Not once a file.
    let once_a_ttl = once_a_ttl_for_root_and_d(took);
    for route in ["/fs/node/{id}", "/fs/lookup/{parent}"] {
        let n = sent(&before, &after, route, "");
        assert!(n <= once_a_ttl, "{n} {route} in {took:?}");
    }
    for i in 0..FILES {
        let back = std::fs::read(m.path(&format!("d/f{i}"))).unwrap();
        assert!(back == random_bytes(4096, i as u64), "d/f{i} read back");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_small_read_costs_one_request() {
    let c = TestCluster::start(3).await;
    let (a, b) = (TestMount::new(&c), TestMount::new(&c));
    std::fs::create_dir(a.path("d")).unwrap();
    const FILES: usize = 50;
    for i in 0..FILES {
        std::fs::write(a.path(&format!("d/f{i}")), random_bytes(4096, i as u64)).unwrap();
    }
    // b's kernel knows none of them: each read is lookup, open, read.
    std::fs::metadata(b.path("d")).unwrap();
    let before = requests(&c).await;
    let started = Instant::now();
    for i in 0..FILES {
        let back = std::fs::read(b.path(&format!("d/f{i}"))).unwrap();
        assert!(back == random_bytes(4096, i as u64), "d/f{i} read cold");
    }
    let took = started.elapsed();
    let after = requests(&c).await;
    let lookups = sent(&before, &after, "/fs/lookup/{parent}", "");
    assert_eq!(lookups, FILES as u64, "lookups");
    assert_eq!(sent(&before, &after, "/fs/layout/{id}", ""), 0, "layouts");
    // Of any kind but the providers' own heartbeats and the attributes of
    // the root and "d", which the kernel asks again once a TTL; the scrape
    // between counts itself once.
    let attrs = sent(&before, &after, "/fs/node/{id}", "");
    let once_a_ttl = once_a_ttl_for_root_and_d(took);
    assert!(attrs <= once_a_ttl, "{attrs} /fs/node/{{id}} in {took:?}");
    let grown: Vec<_> = after
        .iter()
        .filter(|((_, route, _), _)| {
            !route.ends_with("/providers/heartbeat") && !route.ends_with("/fs/node/{id}")
        })
        .map(|(k, n)| (k, n - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect();
    let all: u64 = grown.iter().map(|(_, n)| n).sum();
    assert_eq!(all, FILES as u64 + 1, "requests of any kind: {grown:?}");

    // A file too big to travel inline: its open asks for the layout.
    std::fs::write(a.path("d/big"), random_bytes(100_000, 7)).unwrap();
    let before = requests(&c).await;
    assert!(std::fs::read(b.path("d/big")).unwrap() == random_bytes(100_000, 7));
    let after = requests(&c).await;
    assert_eq!(
        sent(&before, &after, "/fs/layout/{id}", ""),
        1,
        "big layout"
    );

    // Close-to-open: an open after a's close sees a's bytes, whether b's
    // kernel still holds the entry (no lookup: the open asks) or b looked
    // the name up before the close (a stat, not the open's own lookup).
    std::fs::write(a.path("d/f0"), b"new f0").unwrap();
    assert_eq!(std::fs::read(b.path("d/f0")).unwrap(), b"new f0");
    std::fs::metadata(b.path("d/f1")).unwrap();
    std::fs::write(a.path("d/f1"), b"new f1").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(std::fs::read(b.path("d/f1")).unwrap(), b"new f1");

    // b's own close: a lookup's layout from before it is not read after.
    let mut w = std::fs::OpenOptions::new()
        .write(true)
        .open(b.path("d/f2"))
        .unwrap();
    std::thread::sleep(TTL + Duration::from_millis(300));
    std::fs::metadata(b.path("d/f2")).unwrap();
    w.write_all(b"b's f2").unwrap();
    drop(w);
    let back = std::fs::read(b.path("d/f2")).unwrap();
    assert_eq!(&back[..6], b"b's f2");
    assert!(back[6..] == random_bytes(4096, 2)[6..], "the rest of f2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_made_by_another_mount_shows_after_the_ttl() {
    let c = TestCluster::start(3).await;
    let (a, b) = (TestMount::new(&c), TestMount::new(&c));
    std::fs::create_dir(a.path("d")).unwrap();
    assert_eq!(std::fs::read_dir(a.path("d")).unwrap().count(), 0);

    // Misses in a directory just listed cost no request.
    let before = requests(&c).await;
    for i in 0..20 {
        let e = std::fs::metadata(a.path(&format!("d/missing{i}"))).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }
    let after = requests(&c).await;
    let misses = sent(&before, &after, "/fs/lookup/{parent}", "404");
    assert_eq!(misses, 0, "lookups that missed");

    std::fs::write(b.path("d/x"), b"made by b").unwrap();
    std::thread::sleep(TTL + Duration::from_millis(300));
    assert_eq!(
        std::fs::read(a.path("d/x")).unwrap(),
        b"made by b",
        "b's file, through a, a TTL later"
    );
    let names: Vec<String> = std::fs::read_dir(a.path("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["x"]);

    // a's own create after b's change, within the TTL of a's listing: the
    // server's answer shows the directory changed elsewhere, so a drops the
    // listing and asks (finding b's file at once).
    assert_eq!(std::fs::read_dir(a.path("d")).unwrap().count(), 1);
    std::fs::write(b.path("d/y"), b"also b").unwrap();
    std::fs::write(a.path("d/z"), b"made by a").unwrap();
    assert_eq!(std::fs::read(a.path("d/y")).unwrap(), b"also b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o_excl_across_two_mounts_gives_eexist_to_exactly_one() {
    let c = TestCluster::start(3).await;
    let (a, b) = (TestMount::new(&c), TestMount::new(&c));
    std::fs::create_dir(a.path("d")).unwrap();
    std::thread::sleep(TTL + Duration::from_millis(300));
    for round in 0..5 {
        // Both list the directory: both take the name for free.
        std::fs::read_dir(a.path("d")).unwrap().count();
        std::fs::read_dir(b.path("d")).unwrap().count();
        let name = format!("d/x{round}");
        let racers = [a.path(&name), b.path(&name)].map(|p| {
            std::thread::spawn(move || {
                let tag = p.to_string_lossy().into_owned();
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&p)?;
                f.write_all(tag.as_bytes())?;
                Ok::<String, std::io::Error>(tag)
            })
        });
        let results: Vec<_> = racers.map(|t| t.join().unwrap()).into();
        let won: Vec<&String> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        let lost: Vec<ErrorKind> = results
            .iter()
            .filter_map(|r| r.as_ref().err().map(|e| e.kind()))
            .collect();
        assert_eq!(
            (won.len(), lost),
            (1, vec![ErrorKind::AlreadyExists]),
            "round {round}"
        );
        // Through the winner's mount (the loser's kernel keeps its
        // negative entry for the TTL).
        let back = std::fs::read(won[0]).unwrap();
        assert_eq!(back, won[0].as_bytes(), "the winner's bytes");
    }

    // b listed the directory before a made y: b's listing says y is not
    // there, but O_EXCL asks the server.
    std::fs::read_dir(b.path("d")).unwrap().count();
    std::fs::write(a.path("d/y"), b"a's y").unwrap();
    let e = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(b.path("d/y"))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    // Without O_EXCL, open(O_CREAT) opens a's file (its name, its inode).
    std::fs::read_dir(b.path("d")).unwrap().count();
    std::fs::write(a.path("d/w"), b"a's w").unwrap();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(b.path("d/w"))
        .unwrap();
    f.write_all(b"b wrote w").unwrap();
    drop(f);
    std::thread::sleep(TTL + Duration::from_millis(300));
    assert_eq!(std::fs::read(a.path("d/w")).unwrap(), b"b wrote w");
    let names = std::fs::read_dir(a.path("d")).unwrap().count();
    assert_eq!(names, 5 + 2, "no second w");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_mount_leaves_the_small_files_it_closed() {
    let c = TestCluster::start(3).await;
    let mut m = TestMount::new(&c);
    std::fs::create_dir(m.path("d")).unwrap();
    for i in 0..20 {
        std::fs::write(m.path(&format!("d/f{i}")), random_bytes(3000, i)).unwrap();
    }
    m.kill9();
    m.mount();
    for i in 0..20 {
        let back = std::fs::read(m.path(&format!("d/f{i}"))).unwrap();
        assert!(back == random_bytes(3000, i), "d/f{i} after kill -9");
    }
}

/// Commits that meet at the metadata server: on SQLite one takes the
/// writer on its worker, the others wait for it handed over
/// (`point_write`); on PostgreSQL they conflict and are retried. Every
/// close succeeds and every file is made once, with its bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_new_small_files_are_each_made_with_their_bytes() {
    let c = TestCluster::start(3).await;
    let m = TestMount::new(&c);
    std::fs::create_dir(m.path("d")).unwrap();
    const THREADS: u64 = 8;
    const EACH: u64 = 40;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let m = &m;
            s.spawn(move || {
                for i in 0..EACH {
                    let n = t * EACH + i;
                    let mut f = std::fs::File::create(m.path(&format!("d/f{n}"))).unwrap();
                    f.write_all(&random_bytes(4096, n)).unwrap();
                    // close(2)'s own answer, which dropping a File drops.
                    let fd = std::os::fd::IntoRawFd::into_raw_fd(f);
                    // SAFETY: fd is ours, closed once.
                    let closed = unsafe { libc::close(fd) };
                    assert_eq!(
                        closed,
                        0,
                        "close of d/f{n}: {}",
                        std::io::Error::last_os_error()
                    );
                }
            });
        }
    });
    let other = TestMount::new(&c);
    assert_eq!(
        std::fs::read_dir(other.path("d")).unwrap().count() as u64,
        THREADS * EACH
    );
    for n in 0..THREADS * EACH {
        let back = std::fs::read(other.path(&format!("d/f{n}"))).unwrap();
        assert!(back == random_bytes(4096, n), "d/f{n} read back");
    }
}
