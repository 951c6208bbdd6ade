//! The drive never loses staged bytes and never overwrites a newer version
//! with them: uploads commit only to the version their writer started
//! from (else a conflict copy), and uploads that failed because storage
//! was unreachable stay staged and are retried. Real cluster processes,
//! real mounts; needs root and /dev/fuse.

mod common;

use std::io::Write;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use tfsfs::proto::TfsEntry;

const MIB: usize = 1 << 20;

/// Paths in the mount's staging dir, with their sizes.
fn staging(m: &TestMount) -> Vec<(PathBuf, u64)> {
    std::fs::read_dir(m.cache.join("staging"))
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            Some((e.path(), e.metadata().ok()?.len()))
        })
        .collect()
}

/// The staging markers, by state ("open" or "done").
fn markers(m: &TestMount, state: &str) -> usize {
    staging(m)
        .iter()
        .filter(|(p, _)| p.extension().is_some_and(|x| x == state))
        .count()
}

fn staged_whole(m: &TestMount, len: usize) -> bool {
    staging(m)
        .iter()
        .any(|(p, n)| p.extension().is_some_and(|x| x == "data") && *n == len as u64)
}

/// Waits until no staging marker is left (every upload committed).
fn wait_staging_emptied(m: &TestMount) {
    wait_for(10, "staging emptied", || {
        markers(m, "done") + markers(m, "open") == 0
    });
}

/// Every staged file committed and none set aside.
fn assert_settled(m: &TestMount) {
    wait_staging_emptied(m);
    assert!(recovered(m).is_empty(), "set aside: {:?}", recovered(m));
}

fn recovered(m: &TestMount) -> Vec<PathBuf> {
    std::fs::read_dir(m.cache.join("recovered"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

/// Polls `ok` every 50 ms until it holds; fails after `secs`.
fn wait_for(secs: u64, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (up to `secs`) for `child` to exit.
fn wait_exit(child: &mut Child, secs: u64) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "still running after {secs} s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `cp /dev/stdin DEST`, fed by the test: DEST stays open until the pipe
/// is closed.
fn cp_from_pipe(dest: &Path) -> (Child, std::process::ChildStdin) {
    let mut cp = Command::new("cp")
        .arg("/dev/stdin")
        .arg(dest)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cp");
    let pipe = cp.stdin.take().unwrap();
    (cp, pipe)
}

fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut s).unwrap();
    s
}

/// The root listing as another client (REST) sees it.
async fn remote_root(c: &TestCluster) -> Vec<TfsEntry> {
    let r = reqwest::get(format!("{}/dir/", c.v2_meta())).await.unwrap();
    assert!(r.status().is_success(), "listing: {}", r.status());
    r.json().await.unwrap()
}

/// `remote` fetched by the CLI (another client).
fn cli_get(c: &TestCluster, remote: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("got");
    assert_ok(&c.get(remote, &local, true), &format!("get {remote}"));
    std::fs::read(local).unwrap()
}

/// Waits for a conflict copy of `name` holding `len` bytes in the
/// namespace (as another client sees it) and returns its name.
async fn conflict_copy(c: &TestCluster, name: &str, len: usize) -> String {
    let prefix = format!("{name}.conflict-");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let copies: Vec<TfsEntry> = remote_root(c)
            .await
            .into_iter()
            .filter(|e| e.name.starts_with(&prefix))
            .collect();
        assert!(copies.len() <= 1, "conflict copies: {copies:?}");
        if let Some(e) = copies.iter().find(|e| e.size == len as u64) {
            return e.name.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {prefix}* of {len} bytes: {copies:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stale staging vs a newer version: the mount dies during the upload of
/// f, another client writes f, and the next mount's retry of the leftover
/// must not replace that newer version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leftover_upload_never_overwrites_a_newer_version() {
    let c = TestCluster::start(6).await;
    let mut m = TestMount::new(&c);
    let scratch = tempfile::tempdir().unwrap();
    let old = random_bytes(5 * MIB, 111);
    let staged = random_bytes(100 * MIB, 112);
    let newer = random_bytes(3 * MIB + 5, 113);
    let newer_src = scratch.path().join("newer");
    std::fs::write(&newer_src, &newer).unwrap();
    let f = m.path("f");
    std::fs::write(&f, &old).unwrap();

    // kill -9 once cp is in close(): staged whole, marker "done", uploading.
    // cp reads a pipe the test holds open, so it stays before its close()
    // until the test lets it go.
    let (mut cp, mut pipe) = cp_from_pipe(&f);
    pipe.write_all(&staged).unwrap();
    wait_for(60, "the staged file whole", || {
        assert!(cp.try_wait().unwrap().is_none(), "cp ended before the kill");
        staged_whole(&m, staged.len())
    });
    // The metadata server stops answering, so close() waits on the upload
    // (partitions went up while cp wrote: only the tail and the commit
    // are left, too quick to catch otherwise).
    let meta = c.meta.child.id() as i32;
    // SAFETY: kill(2) of a child process of this test.
    assert_eq!(unsafe { libc::kill(meta, libc::SIGSTOP) }, 0);
    drop(pipe);
    wait_for(60, "the staged file closed", || markers(&m, "done") == 1);
    assert!(
        cp.try_wait().unwrap().is_none(),
        "the upload finished before the kill: kill earlier"
    );
    m.kill9();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(meta, libc::SIGCONT) }, 0);
    assert!(
        !cp.wait().unwrap().success(),
        "cp succeeded on a killed mount"
    );
    assert_eq!(markers(&m, "done"), 1, "the killed upload left no marker");

    // Meanwhile another client writes f.
    assert_ok(&c.put(&newer_src, "/f", true), "put of the newer f");

    m.mount();
    assert!(
        std::fs::read(&f).unwrap() == newer,
        "the leftover replaced the newer version"
    );
    assert!(
        cli_get(&c, "/f") == newer,
        "another client lost the newer f"
    );
    // The staged bytes are a conflict copy beside it, stored for any client.
    let copy = conflict_copy(&c, "f", staged.len()).await;
    assert!(cli_get(&c, &format!("/{copy}")) == staged);
    assert!(std::fs::read(m.path(&copy)).unwrap() == staged);
    assert_settled(&m);
    assert!(
        m.log().contains("conflict copy"),
        "no word of it in the log"
    );
}

/// A meta outage at close(): cp fails with EIO at once, the bytes stay
/// staged, and once the metadata server is back the running mount
/// uploads them. No client ever sees a size whose bytes are not stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_down_at_close_fails_then_the_file_lands_without_remount() {
    let mut c = TestCluster::start(6).await;
    let m = TestMount::new(&c);
    let data = random_bytes(20 * MIB + 3, 121);
    let f = m.path("f");

    let (mut cp, mut pipe) = cp_from_pipe(&f);
    pipe.write_all(&data).unwrap();
    wait_for(30, "cp's bytes staged", || staged_whole(&m, data.len()));
    c.meta.kill();
    let closed = Instant::now();
    drop(pipe);
    let status = wait_exit(&mut cp, 30);
    let err = stderr_of(&mut cp);
    assert!(!status.success(), "cp succeeded with meta down");
    assert!(err.contains("Input/output error"), "cp said: {err}");
    assert!(
        closed.elapsed() < Duration::from_secs(10),
        "cp took {:?} to fail",
        closed.elapsed()
    );
    // Whole and staged, not set aside.
    wait_for(5, "the staged file marked whole", || {
        markers(&m, "done") == 1 && markers(&m, "open") == 0
    });
    assert!(recovered(&m).is_empty(), "set aside: {:?}", recovered(&m));
    // A try or two fail while meta is down.
    std::thread::sleep(Duration::from_millis(2500));
    c.restart_meta();

    // No remount: the file appears whole; never another size meanwhile.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let r = reqwest::get(format!("{}/file/f", c.v2_meta()))
            .await
            .unwrap();
        assert!(r.status().is_success(), "stat of f: {}", r.status());
        let size = r.json::<TfsEntry>().await.unwrap().size;
        if size == data.len() as u64 {
            break;
        }
        assert_eq!(size, 0, "the namespace shows {size} bytes for f");
        // Here, the staged bytes all along.
        let mut head = vec![0u8; 4096];
        std::fs::File::open(&f)
            .unwrap()
            .read_exact_at(&mut head, data.len() as u64 - 4096)
            .unwrap();
        assert!(
            head == data[data.len() - 4096..],
            "the mount reads other bytes"
        );
        assert!(
            Instant::now() < deadline,
            "f never landed after meta came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        cli_get(&c, "/f") == data,
        "another client reads other bytes"
    );
    assert!(std::fs::read(&f).unwrap() == data);
    assert_settled(&m);
}

/// One mount's own writes, truncates, rewrites, chmods and fsyncs never
/// conflict with themselves; another mount writing a file this one has
/// open does: the writer's close() fails, the other version stays, and
/// the writer's bytes become a conflict copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_changes_never_conflict_another_writers_do() {
    let c = TestCluster::start(6).await;
    let mut a = TestMount::new(&c);
    let f = a.path("f");
    let mut want = random_bytes(3 * MIB, 131);
    std::fs::write(&f, &want).unwrap();
    {
        let h = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
        let part = random_bytes(MIB, 132);
        h.write_all_at(&part, MIB as u64).unwrap();
        want[MIB..2 * MIB].copy_from_slice(&part);
        h.sync_all().unwrap();
        h.set_len(2 * MIB as u64 + 7).unwrap();
        want.resize(2 * MIB + 7, 0);
        h.sync_all().unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let tail = random_bytes(1000, 133);
        h.write_all_at(&tail, 5 * MIB as u64).unwrap();
        want.resize(5 * MIB, 0);
        want.extend_from_slice(&tail);
        h.sync_all().unwrap();
    }
    let out = Command::new("truncate")
        .args(["-s", "4M"])
        .arg(&f)
        .output()
        .unwrap();
    assert_ok(&out, "truncate");
    want.truncate(4 * MIB);
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
    {
        let mut h = std::fs::OpenOptions::new().append(true).open(&f).unwrap();
        let more = random_bytes(MIB, 134);
        h.write_all(&more).unwrap();
        want.extend_from_slice(&more);
    }
    let g = a.path("g");
    std::fs::rename(&f, &g).unwrap();
    let out = Command::new("touch")
        .args(["-d", "2020-01-01"])
        .arg(&g)
        .output()
        .unwrap();
    assert_ok(&out, "touch");
    {
        let h = std::fs::OpenOptions::new().write(true).open(&g).unwrap();
        let head = random_bytes(100, 135);
        h.write_all_at(&head, 0).unwrap();
        want[..100].copy_from_slice(&head);
    }
    let small = random_bytes(5000, 136);
    std::fs::write(a.path("s"), &small).unwrap();
    std::fs::write(a.path("s"), &small[..10]).unwrap();

    let names = |m: &TestMount| -> Vec<String> {
        std::fs::read_dir(&m.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    };
    assert!(
        !names(&a).iter().any(|n| n.contains(".conflict-")),
        "a conflict copy of one mount's own changes: {:?}",
        names(&a)
    );
    assert!(!a.log().contains("conflict"), "{}", a.log());
    a.remount(true);
    assert!(std::fs::read(&g).unwrap() == want, "g is not as written");
    assert!(std::fs::read(a.path("s")).unwrap() == small[..10]);
    assert_eq!(
        std::fs::metadata(&g).unwrap().permissions().mode() & 0o777,
        0o640
    );

    // Another mount writes h while it is open for writing here.
    let b = TestMount::new(&c);
    let ours = random_bytes(2 * MIB + 1, 137);
    let theirs = random_bytes(MIB + 3, 138);
    let h = a.path("h");
    let (mut cp, mut pipe) = cp_from_pipe(&h);
    pipe.write_all(&ours[..MIB]).unwrap();
    wait_for(30, "cp's first bytes staged", || staged_whole(&a, MIB));
    std::fs::write(b.path("h"), &theirs).unwrap();
    pipe.write_all(&ours[MIB..]).unwrap();
    drop(pipe);
    let status = wait_exit(&mut cp, 60);
    let err = stderr_of(&mut cp);
    assert!(
        !status.success(),
        "cp succeeded over another writer's version"
    );
    assert!(err.contains("Input/output error"), "cp said: {err}");
    assert!(
        cli_get(&c, "/h") == theirs,
        "the other writer's version is gone"
    );
    let copy = conflict_copy(&c, "h", ours.len()).await;
    assert!(cli_get(&c, &format!("/{copy}")) == ours);
    std::thread::sleep(Duration::from_millis(1100));
    assert!(
        std::fs::read(&h).unwrap() == theirs,
        "mount a reads another h"
    );
    assert!(std::fs::read(b.path("h")).unwrap() == theirs);
    assert!(std::fs::read(b.path(&copy)).unwrap() == ours);
    assert!(a.log().contains("conflict copy"));
}

/// Providers unreachable at close(): EIO, the bytes stay staged; a file
/// removed meanwhile takes its pending upload with it, and the other lands
/// once providers are back, without a remount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_down_at_close_the_file_lands_when_they_are_back() {
    let mut c = TestCluster::start(6).await;
    let m = TestMount::new(&c);
    for p in &mut c.providers {
        p.kill();
    }
    let data = random_bytes(3 * MIB + 1, 141);
    let f = m.path("f");
    let g = m.path("g");
    for (path, bytes) in [(&f, &data[..]), (&g, &data[..MIB])] {
        let (mut cp, mut pipe) = cp_from_pipe(path);
        pipe.write_all(bytes).unwrap();
        drop(pipe);
        let status = wait_exit(&mut cp, 60);
        let err = stderr_of(&mut cp);
        assert!(!status.success(), "cp succeeded with no provider");
        assert!(err.contains("Input/output error"), "cp said: {err}");
    }
    wait_for(5, "both staged whole", || markers(&m, "done") == 2);
    std::fs::remove_file(&g).unwrap();
    wait_for(5, "g's staged copy gone", || markers(&m, "done") == 1);

    for _ in 0..6 {
        c.add_provider();
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = reqwest::get(format!("{}/file/f", c.v2_meta()))
            .await
            .unwrap();
        let size = r.json::<TfsEntry>().await.unwrap().size;
        if size == data.len() as u64 {
            break;
        }
        assert_eq!(size, 0, "the namespace shows {size} bytes for f");
        assert!(Instant::now() < deadline, "f never landed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        cli_get(&c, "/f") == data,
        "another client reads other bytes"
    );
    assert_settled(&m);
    assert!(!remote_root(&c).await.iter().any(|e| e.name == "g"));
}

/// A new small file is made by its commit at close(). The mount killed
/// while that commit waits on a stopped metadata server: the next mount
/// makes the file from what staging recorded (or finds it made, when the
/// server took the request before it noticed the writer gone): one file,
/// its bytes, no conflict copy, nothing set aside. A new file whose writer
/// never closed it is not made at all, its bytes kept aside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_file_killed_at_its_commit_is_made_by_the_next_mount() {
    let c = TestCluster::start(3).await;
    let mut m = TestMount::new(&c);
    let scratch = tempfile::tempdir().unwrap();
    let data = random_bytes(5000, 131);
    let src = scratch.path().join("src");
    std::fs::write(&src, &data).unwrap();
    // A first new file: the mount holds reserved ids from now on.
    std::fs::write(m.path("first"), b"first").unwrap();

    // A second writer that never closes its new file.
    let mut holder = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import time; f = open('{}', 'w'); f.write('never closed'); f.flush(); time.sleep(60)",
            m.path("never").display()
        ))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(30, "the unclosed file staged", || staged_whole(&m, 12));
    // The mount answers the miss of "new" from its listing, without
    // asking the stopped server.
    std::fs::read_dir(m.path("")).unwrap().count();
    let meta = c.meta.child.id() as i32;
    // SAFETY: kill(2) of a child process of this test.
    assert_eq!(unsafe { libc::kill(meta, libc::SIGSTOP) }, 0);
    // open(O_CREAT|O_TRUNC), write, close: the deferred create (a
    // shell's `>` would make the file at its dup's close, before writing).
    let mut sh = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "f = open('{}', 'wb'); f.write(open('{}', 'rb').read()); f.close()",
            m.path("new").display(),
            src.display()
        ))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(30, "the new file closed", || markers(&m, "done") == 1);
    assert!(
        sh.try_wait().unwrap().is_none(),
        "close() returned with meta stopped"
    );
    m.kill9();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(meta, libc::SIGCONT) }, 0);
    assert!(
        !sh.wait().unwrap().success(),
        "the writer's close succeeded"
    );
    holder.kill().unwrap();
    let _ = holder.wait();

    m.mount();
    let got = std::fs::read(m.path("new")).unwrap();
    assert!(
        got == data,
        "new after the restart: {} bytes; {}",
        got.len(),
        m.log()
    );
    assert!(
        cli_get(&c, "/new") == data,
        "another client reads other bytes"
    );
    let names: Vec<String> = remote_root(&c).await.into_iter().map(|e| e.name).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"first".to_string()) && names.contains(&"new".to_string()));
    wait_staging_emptied(&m);
    let aside = recovered(&m);
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read(&aside[0]).unwrap(), b"never closed");
}

/// A new small file whose close finds the metadata server down: close()
/// fails (EIO), the bytes stay staged, and once the server is back the
/// running mount makes the file, bytes and all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_down_at_a_new_files_close_it_is_made_when_meta_is_back() {
    let mut c = TestCluster::start(3).await;
    let m = TestMount::new(&c);
    let data = random_bytes(6000, 141);
    // Created (asking nothing) while meta is up; written and closed after.
    let mut writer = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sys; f = open('{}', 'wb'); f.write(sys.stdin.buffer.read()); f.close()",
            m.path("new").display()
        ))
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = writer.stdin.take().unwrap();
    wait_for(30, "the new file created", || markers(&m, "open") == 1);
    c.meta.kill();
    pipe.write_all(&data).unwrap();
    drop(pipe);
    let status = wait_exit(&mut writer, 30);
    let err = stderr_of(&mut writer);
    assert!(!status.success(), "close succeeded with meta down");
    assert!(err.contains("Input/output error"), "the writer said: {err}");
    wait_for(5, "the staged file marked whole", || {
        markers(&m, "done") == 1 && markers(&m, "open") == 0
    });
    c.restart_meta();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = reqwest::get(format!("{}/file/new", c.v2_meta()))
            .await
            .unwrap();
        if r.status().is_success() {
            assert_eq!(r.json::<TfsEntry>().await.unwrap().size, data.len() as u64);
            break;
        }
        assert_eq!(r.status(), reqwest::StatusCode::NOT_FOUND, "stat of new");
        assert!(
            Instant::now() < deadline,
            "new never landed after meta came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        cli_get(&c, "/new") == data,
        "another client reads other bytes"
    );
    assert!(
        std::fs::read(m.path("new")).unwrap() == data,
        "the mount reads other bytes"
    );
    assert_settled(&m);
}
