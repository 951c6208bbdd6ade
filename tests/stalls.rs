//! A provider that stops answering (SIGSTOP: connections open, no bytes)
//! costs a writer seconds, not the upload, and a reader a fraction of its
//! time: stalled requests fail after a few seconds without progress, the
//! provider is then asked last, and reads hedge to other shards early.

mod common;

use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use common::*;

fn signal(p: &Proc, sig: i32) {
    // SAFETY: kill(2) on a child process we own.
    assert_eq!(unsafe { libc::kill(p.child.id() as i32, sig) }, 0);
}

/// Reads `path` whole, returning the bytes and the time taken.
fn timed_read(path: &std::path::Path) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let data = std::fs::read(path).unwrap();
    (data, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_provider_costs_a_writer_seconds_and_a_reader_little() {
    let c = TestCluster::start(6).await;
    let mut m = TestMount::new(&c);
    let a = random_bytes(200 << 20, 1);
    let b = random_bytes(200 << 20, 2);
    std::fs::write(m.path("a"), &a).unwrap();

    // The copy of b goes on while provider 0 is stopped 0.1 s in.
    let local = c.dir.path().join("b");
    std::fs::write(&local, &b).unwrap();
    let dest = m.path("b");
    let cp = std::thread::spawn(move || {
        std::process::Command::new("cp")
            .arg(&local)
            .arg(&dest)
            .status()
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    signal(&c.providers[0], libc::SIGSTOP);
    assert!(cp.join().unwrap().success(), "cp with a stopped provider");

    // Cold reads: a with every provider up would need provider 0 back; so
    // measure both with the same mount, cache wiped before each.
    m.remount(true);
    let (got_b, stopped) = timed_read(&m.path("b"));
    assert!(got_b == b, "b reads back equal with provider 0 stopped");
    signal(&c.providers[0], libc::SIGCONT);
    m.remount(true);
    let (got_a, all_up) = timed_read(&m.path("a"));
    assert!(got_a == a, "a reads back equal");
    eprintln!("cold 200 MiB read: {all_up:?} all up, {stopped:?} with one provider stopped");
    // The first shard asked of the stopped provider waits one hedge delay
    // (at most 1.5 s) before parity is asked alongside; after that the
    // provider is asked last. A fixed cost, not one per shard: as reads got
    // faster, "twice the time" alone left that one delay no room.
    assert!(
        stopped < all_up * 2 + Duration::from_millis(1500),
        "a stopped provider slowed a cold read from {all_up:?} to {stopped:?}"
    );
}

/// Runs `cmd` to its end, returning its status and how long it took.
fn timed(cmd: &mut std::process::Command) -> (std::process::ExitStatus, Duration) {
    let started = Instant::now();
    let status = cmd.status().unwrap();
    (status, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_metadata_server_never_hangs_the_mount() {
    let c = TestCluster::start(6).await;
    let m = TestMount::new(&c);
    std::fs::create_dir(m.path("d")).unwrap();
    std::fs::write(m.path("d/f"), b"kept").unwrap();
    signal(&c.meta, libc::SIGSTOP);
    let stopped = Instant::now();
    // Past the kernel's attribute and entry cache (1 s).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, took) = timed(std::process::Command::new("ls").arg("-la").arg(m.path("d")));
    assert!(
        !status.success(),
        "ls fails while the metadata server is stopped"
    );
    assert!(took < Duration::from_secs(35), "ls returned after {took:?}");
    // A process blocked in the mount dies as soon as it is killed, by
    // SIGKILL or by a signal it does not catch, long before its request
    // could time out.
    for (cmd, sig) in [
        ("stat", libc::SIGKILL),
        ("cat", libc::SIGTERM),
        ("ls", libc::SIGINT),
    ] {
        let mut command = std::process::Command::new(cmd);
        command.arg(m.path(&format!("d/{cmd}-never")));
        // A signal the process does not ignore: a shell without job control
        // starts background jobs (a test run among them) with SIGINT
        // ignored, and every child inherits that.
        // SAFETY: signal(2) is async-signal-safe; SIGKILL's fails harmlessly.
        unsafe {
            command.pre_exec(move || {
                libc::signal(sig, libc::SIG_DFL);
                Ok(())
            })
        };
        let mut blocked = command.spawn().unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(blocked.try_wait().unwrap().is_none(), "{cmd} is blocked");
        let started = Instant::now();
        assert_eq!(unsafe { libc::kill(blocked.id() as i32, sig) }, 0);
        let status = blocked.wait().unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{cmd} took {:?} to die of signal {sig}",
            started.elapsed()
        );
        assert!(!status.success());
    }
    // Stopped for a minute in all.
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(stopped.elapsed())).await;
    signal(&c.meta, libc::SIGCONT);
    // The same mount works again, no remount.
    let mut back = None;
    for _ in 0..50 {
        if let Ok(data) = std::fs::read(m.path("d/f")) {
            back = Some(data);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(back.as_deref(), Some(&b"kept"[..]));
    std::fs::write(m.path("d/g"), b"new").unwrap();
    assert_eq!(std::fs::read(m.path("d/g")).unwrap(), b"new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_fail_over_to_the_next_metadata_server() {
    let c = TestCluster::start(6).await;
    // A second metadata server on the same store; the first URL given to
    // the client refuses connections.
    let meta_dir = c.dir.path().join("meta");
    let second = Proc::spawn(&[
        "meta",
        "--listen",
        "127.0.0.1:0",
        "--data",
        meta_dir.to_str().unwrap(),
    ]);
    let urls = format!("http://127.0.0.1:1,{},{}", second.url, c.meta.url);
    let cli = |args: &[&str]| {
        std::process::Command::new(bin())
            .args(args)
            .env("TFSFS_META", &urls)
            .env("TFSFS_APPKEY", &c.appkey)
            .env("TFSFS_UID", "1")
            .env("XDG_CONFIG_HOME", c.dir.path().join("config"))
            .output()
            .unwrap()
    };
    let local = c.dir.path().join("f");
    std::fs::write(&local, random_bytes(6 << 20, 4)).unwrap();
    assert_ok(&cli(&["put", local.to_str().unwrap(), "/f"]), "put");
    // A mount given the same list starts, reads and writes.
    let m = TestMount::at(&c, &urls, true);
    assert!(std::fs::read(m.path("f")).unwrap() == std::fs::read(&local).unwrap());
    std::fs::write(m.path("g"), b"through the list").unwrap();
    drop(m);
    drop(second);
    let back = c.dir.path().join("f.back");
    assert_ok(&cli(&["get", "/f", back.to_str().unwrap()]), "get");
    assert!(std::fs::read(&back).unwrap() == std::fs::read(&local).unwrap());
}
