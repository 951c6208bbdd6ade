//! The drive's acceptance tests: a real `tfsfs mount` (a separate process,
//! over a metadata server and provider processes) used by real tools (cp,
//! cmp, rsync, tar, mv, dd, truncate, ...). Needs root and /dev/fuse.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const MIB: usize = 1 << 20;

/// `prog ARGS` in `cwd` (or here); the output, whatever the status.
fn exec(cwd: Option<&Path>, prog: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(prog);
    cmd.args(args).stdin(Stdio::null());
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {prog} (is it installed?): {e}"))
}

/// `prog ARGS`, which must succeed; its stdout.
fn run(cwd: Option<&Path>, prog: &str, args: &[&str]) -> String {
    let out = exec(cwd, prog, args);
    assert_ok(&out, &format!("{prog} {}", args.join(" ")));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `sh -c SCRIPT` in `cwd`, which must succeed.
fn sh(cwd: &Path, script: &str) -> String {
    run(Some(cwd), "sh", &["-c", script])
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `cmp a b` says they are equal.
fn cmp(a: &Path, b: &Path) {
    let out = exec(None, "cmp", &[p(a), p(b)]);
    assert!(
        out.status.success(),
        "cmp {} {}: {}{}",
        a.display(),
        b.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write_random(path: &Path, len: usize, seed: u64) {
    std::fs::write(path, random_bytes(len, seed)).unwrap();
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// What a tree holds, entry by entry (symlinks not followed): kind, mode,
/// mtime, size and content (files), target (symlinks).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: char,
    mode: u32,
    mtime: (i64, i64),
    size: Option<u64>,
    content: Option<Vec<u8>>,
}

fn snapshot(root: &Path) -> BTreeMap<String, Entry> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Entry>) {
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for path in names {
            let md = std::fs::symlink_metadata(&path).unwrap();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            let ft = md.file_type();
            let (kind, size, content) = if ft.is_dir() {
                ('d', None, None)
            } else if ft.is_symlink() {
                let t = std::fs::read_link(&path).unwrap();
                (
                    'l',
                    Some(md.len()),
                    Some(t.into_os_string().into_encoded_bytes()),
                )
            } else {
                ('f', Some(md.len()), Some(std::fs::read(&path).unwrap()))
            };
            out.insert(
                rel,
                Entry {
                    kind,
                    mode: md.mode() & 0o7777,
                    mtime: (md.mtime(), md.mtime_nsec()),
                    size,
                    content,
                },
            );
            if ft.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Two snapshots are equal; on failure, says where they differ.
fn assert_same_tree(a: &BTreeMap<String, Entry>, b: &BTreeMap<String, Entry>, what: &str) {
    let names_a: Vec<&String> = a.keys().collect();
    let names_b: Vec<&String> = b.keys().collect();
    assert_eq!(names_a, names_b, "{what}: different names");
    for (name, ea) in a {
        let eb = &b[name];
        if ea != eb {
            let short = |e: &Entry| {
                format!(
                    "{} {:o} mtime {:?} size {:?} content {}",
                    e.kind,
                    e.mode,
                    e.mtime,
                    e.size,
                    e.content.as_ref().map_or(0, |c| c.len())
                )
            };
            panic!(
                "{what}: {name} differs:\n  {}\n  {}{}",
                short(ea),
                short(eb),
                if ea.content != eb.content {
                    " (content differs)"
                } else {
                    ""
                }
            );
        }
    }
}

/// Without mtimes (of things an operation stamps with "now").
fn without_mtimes(s: &BTreeMap<String, Entry>) -> BTreeMap<String, Entry> {
    s.iter()
        .map(|(k, e)| {
            (
                k.clone(),
                Entry {
                    mtime: (0, 0),
                    ..e.clone()
                },
            )
        })
        .collect()
}

/// `got == want`, or a failure that says how they differ (not the bytes).
#[track_caller]
fn assert_bytes(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: {} bytes, {} expected; first difference at {at:?}",
            got.len(),
            want.len()
        );
    }
}

fn errno_of(r: std::io::Result<impl Sized>) -> i32 {
    match r {
        Ok(_) => panic!("succeeded; an error was expected"),
        Err(e) => e.raw_os_error().unwrap_or_else(|| panic!("no errno: {e}")),
    }
}

// ---- 1. cp in and out ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cp_in_and_out_then_cold_after_remount() {
    let c = TestCluster::start(6).await;
    let mut m = TestMount::new(&c);
    let local = tempdir();
    let sizes = [
        0usize,
        1,
        8191,
        8192,
        8193,
        MIB,
        4 * MIB - 1,
        4 * MIB,
        4 * MIB + 1,
        37 * MIB,
        200 * MIB,
    ];
    let src = local.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let mut names = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let name = format!("f{i}-{n}");
        write_random(&src.join(&name), n, 100 + i as u64);
        names.push(name);
    }
    std::fs::create_dir(m.path("in")).unwrap();
    let t = Instant::now();
    let mut args: Vec<String> = names.iter().map(|n| p(&src.join(n)).to_string()).collect();
    args.push(p(&m.path("in")).to_string());
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    run(None, "cp", &args);
    eprintln!("cp in: {:?}", t.elapsed());
    for (name, &n) in names.iter().zip(&sizes) {
        assert_eq!(
            std::fs::metadata(m.path("in").join(name)).unwrap().len(),
            n as u64
        );
        cmp(&src.join(name), &m.path("in").join(name));
    }
    let out = local.path().join("out");
    let t = Instant::now();
    run(None, "cp", &["-r", p(&m.path("in")), p(&out)]);
    eprintln!("cp out: {:?}", t.elapsed());
    for name in &names {
        cmp(&src.join(name), &out.join(name));
    }

    // Nothing local left: a new process, an empty cache, no page cache.
    m.remount(true);
    let t = Instant::now();
    let mut listed: Vec<String> = std::fs::read_dir(m.path("in"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    listed.sort();
    let mut want = names.clone();
    want.sort();
    assert_eq!(listed, want);
    for (name, &n) in names.iter().zip(&sizes) {
        assert_eq!(
            std::fs::metadata(m.path("in").join(name)).unwrap().len(),
            n as u64
        );
        cmp(&src.join(name), &m.path("in").join(name));
    }
    eprintln!("cold cmp after remount: {:?}", t.elapsed());
}

// ---- trees for rsync and tar ----

/// Sets the times of `path` (not following symlinks), nanoseconds included.
fn set_mtime(path: &Path, secs: i64, nsec: i64) {
    let when = format!("@{secs}.{nsec:09}");
    run(None, "touch", &["-h", "-d", &when, p(path)]);
}

/// A local tree: nested dirs, files of several sizes and modes, relative,
/// absolute, dangling and directory symlinks, an empty dir; every mtime set
/// with nanoseconds.
fn make_tree(root: &Path) {
    let files: [(&str, usize, u32); 8] = [
        ("a.txt", 13, 0o644),
        ("secret", 100, 0o600),
        ("run.sh", 8192, 0o755),
        ("group.cfg", 8193, 0o640),
        ("empty", 0, 0o644),
        ("d1/big.bin", 5 * MIB + 3, 0o644),
        ("d1/d2/mid.bin", 300_000, 0o400),
        ("d1/d2/d3/deep.txt", 1, 0o666),
    ];
    for d in ["d1/d2/d3", "emptydir", "d1/other"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for (i, (name, len, mode)) in files.iter().enumerate() {
        let path = root.join(name);
        write_random(&path, *len, 1000 + i as u64);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    std::os::unix::fs::symlink("../a.txt", root.join("d1/link-rel")).unwrap();
    std::os::unix::fs::symlink("/no/such/target", root.join("dangling")).unwrap();
    std::os::unix::fs::symlink("d1/d2", root.join("link-dir")).unwrap();
    for (d, mode) in [
        ("d1", 0o755),
        ("d1/d2", 0o700),
        ("d1/d2/d3", 0o750),
        ("emptydir", 0o711),
        ("d1/other", 0o775),
    ] {
        std::fs::set_permissions(root.join(d), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    // Times last, deepest first, so that nothing changes them afterwards.
    let mut all: Vec<String> = snapshot(root).into_keys().collect();
    all.sort_by_key(|k| std::cmp::Reverse(k.matches('/').count()));
    for (i, rel) in all.iter().enumerate() {
        set_mtime(
            &root.join(rel),
            1_500_000_000 + 86_400 * i as i64,
            123_456_789 + i as i64,
        );
    }
}

// ---- 2. rsync ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsync_in_again_and_back() {
    let c = TestCluster::start(6).await;
    let m = TestMount::new(&c);
    let local = tempdir();
    let src = local.path().join("src");
    make_tree(&src);
    let want = snapshot(&src);
    let dst = m.path("tree");

    run(None, "rsync", &["-a", &format!("{}/", p(&src)), p(&dst)]);
    assert_same_tree(&want, &snapshot(&dst), "the mount after rsync -a");

    let again = run(
        None,
        "rsync",
        &[
            "-a",
            "--itemize-changes",
            &format!("{}/", p(&src)),
            &format!("{}/", p(&dst)),
        ],
    );
    assert_eq!(again, "", "a second rsync -a transfers something");

    let back = local.path().join("back");
    run(
        None,
        "rsync",
        &["-a", "--checksum", &format!("{}/", p(&dst)), p(&back)],
    );
    run(None, "diff", &["-r", "--no-dereference", p(&src), p(&back)]);
    assert_same_tree(&want, &snapshot(&back), "rsync'd back from the mount");
}

// ---- 3. tar ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tar_into_and_out_of_the_mount() {
    let c = TestCluster::start(6).await;
    let m = TestMount::new(&c);
    let local = tempdir();
    let src = local.path().join("src");
    make_tree(&src);

    // An archive written on the mount, extracted from it.
    let on_mount = m.path("x.tar");
    run(None, "tar", &["cf", p(&on_mount), "-C", p(&src), "."]);
    let local_tar = local.path().join("x.tar");
    run(None, "tar", &["cf", p(&local_tar), "-C", p(&src), "."]);
    cmp(&local_tar, &on_mount);
    let out = local.path().join("out");
    std::fs::create_dir(&out).unwrap();
    run(None, "tar", &["xf", p(&on_mount), "-C", p(&out)]);
    run(None, "diff", &["-r", "--no-dereference", p(&src), p(&out)]);

    // A local archive extracted into the mount, and the same into a local dir.
    let into = m.path("extracted");
    std::fs::create_dir(&into).unwrap();
    run(None, "tar", &["xf", p(&local_tar), "-C", p(&into)]);
    run(None, "diff", &["-r", "--no-dereference", p(&src), p(&into)]);
    assert_same_tree(&snapshot(&out), &snapshot(&into), "tar x into the mount");
}

// ---- 4. mv over a file being read ----

/// Reads `target` in a loop (with `cat` or std::fs::read) until `stop`;
/// every read must be one whole version (`len` bytes of one fill byte).
/// Returns the fill bytes seen, in order.
fn read_loop(
    target: PathBuf,
    len: usize,
    with_cat: bool,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let d = if with_cat {
                let out = exec(None, "cat", &[p(&target)]);
                assert!(
                    out.status.success(),
                    "cat failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                out.stdout
            } else {
                std::fs::read(&target)
                    .unwrap_or_else(|e| panic!("read of {} failed: {e}", target.display()))
            };
            let v = d.first().copied().unwrap_or(0);
            assert!(
                d.len() == len && d.iter().all(|&b| b == v),
                "a torn read: {} bytes, first {v}, {} distinct values",
                d.len(),
                d.iter().collect::<std::collections::BTreeSet<_>>().len()
            );
            seen.push(v);
        }
        seen
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mv_over_a_file_while_it_is_read() {
    let c = TestCluster::start(6).await;
    let m = TestMount::new(&c);
    let len = 3 * MIB;
    let target = m.path("f");
    std::fs::write(&target, vec![1u8; len]).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let readers = [
        read_loop(target.clone(), len, false, stop.clone()),
        read_loop(target.clone(), len, true, stop.clone()),
    ];
    let start = Instant::now();
    let mut v = 1u8;
    while start.elapsed() < Duration::from_secs(2) && v < 250 {
        v += 1;
        let tmp = m.path(&format!("tmp-{v}"));
        std::fs::write(&tmp, vec![v; len]).unwrap();
        run(None, "mv", &[p(&tmp), p(&target)]);
    }
    stop.store(true, Ordering::Relaxed);
    for (i, r) in readers.into_iter().enumerate() {
        let seen = r.join().expect("a reader saw something wrong");
        eprintln!("reader {i}: {} versions, {} reads", v, seen.len());
        assert!(seen.len() >= 5, "only {} reads", seen.len());
        assert!(
            seen.windows(2).all(|w| w[0] <= w[1]),
            "an older version came back after a newer one: {seen:?}"
        );
        assert!(seen.iter().all(|&s| (1..=v).contains(&s)));
        assert!(seen.iter().any(|&s| s > 1), "never saw a new version");
    }
    assert!(std::fs::read(&target).unwrap() == vec![v; len]);
    let names: Vec<_> = std::fs::read_dir(&m.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("f")]);
}

// ---- 5. everyday tools, against the same on a local dir ----

/// `ls -la` as (perms, owner, group, size unless a dir, name) per line.
fn ls_la(dir: &Path) -> Vec<String> {
    let out = run(Some(dir), "ls", &["-la", "--time-style=+%s"]);
    out.lines()
        .filter(|l| !l.starts_with("total"))
        .map(|l| {
            // perms links owner group size time name...
            let f: Vec<&str> = l.split_whitespace().collect();
            let size = if f[0].starts_with('d') { "-" } else { f[4] };
            format!("{} {} {} {} {}", f[0], f[2], f[3], size, f[6..].join(" "))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everyday_tools_match_a_local_dir() {
    let c = TestCluster::start(6).await;
    let m = TestMount::new(&c);
    let scratch = tempdir();
    let local = scratch.path().join("local");
    std::fs::create_dir(&local).unwrap();
    let inputs = scratch.path().join("inputs");
    std::fs::create_dir(&inputs).unwrap();
    write_random(&inputs.join("big10"), 10 * MIB, 7);
    write_random(&inputs.join("patch"), 64 * 1024, 8);
    let dirs = [local.as_path(), m.dir.as_path()];

    // Each step on both sides; the trees (mtimes aside) equal after each.
    let steps: &[&str] = &[
        "mkdir -p a/b/c/d",
        "mkdir -p a/x/y && echo hi > a/x/y/f && echo ho > a/x/g && rm -r a/x",
        "touch a/b/t && touch -d '2001-02-03 04:05:06.123456789' a/b/t",
        "chmod 0640 a/b/t && chmod 0700 a/b/c && chmod 0751 a",
        "ln -s b/t a/lnk && ln -s /no/such a/dangling && ln -s c a/b/dirlink",
        "printf hello > tr && truncate -s 100000 tr",
        "truncate -s 3 tr",
        "truncate -s 5000000 tr && truncate -s 4194305 tr",
        "cp INPUTS/big10 big",
        "dd if=INPUTS/patch of=big bs=4096 seek=1234 count=3 conv=notrunc status=none",
        "dd if=INPUTS/patch of=big bs=1000 seek=4194 count=20 conv=notrunc status=none",
        "dd if=INPUTS/patch of=big bs=1 seek=12000000 count=100 conv=notrunc status=none",
        "echo first > log && echo second >> log && printf third >> log",
        "echo tail >> big",
        "rm -r a/b/c",
    ];
    for step in steps {
        let step = step.replace("INPUTS", p(&inputs));
        for d in dirs {
            sh(d, &step);
        }
        assert_same_tree(
            &without_mtimes(&snapshot(&local)),
            &without_mtimes(&snapshot(&m.dir)),
            &format!("after `{step}`"),
        );
        assert_eq!(ls_la(&local), ls_la(&m.dir), "ls -la after `{step}`");
        assert_eq!(
            ls_la(&local.join("a")),
            ls_la(&m.path("a")),
            "ls -la a after `{step}`"
        );
    }
    // touch -d: the exact time, nanoseconds included.
    let lt = std::fs::metadata(local.join("a/b/t")).unwrap();
    let mt = std::fs::metadata(m.path("a/b/t")).unwrap();
    assert_eq!(lt.mtime_nsec(), 123_456_789);
    assert_eq!(
        (mt.mtime(), mt.mtime_nsec()),
        (lt.mtime(), lt.mtime_nsec()),
        "touch -d"
    );
    assert_eq!(
        std::fs::read_link(m.path("a/lnk")).unwrap(),
        Path::new("b/t")
    );
    assert_eq!(run(Some(&m.dir), "readlink", &["a/lnk"]), "b/t\n");
    assert_eq!(
        std::fs::read(m.path("log")).unwrap(),
        b"first\nsecond\nthird"
    );
    assert_eq!(
        std::fs::metadata(m.path("big")).unwrap().len(),
        12_000_100 + 5
    );
    // Still so from a fresh mount with no cache.
    drop(m);
    let mut m = TestMount::new(&c);
    assert_same_tree(
        &without_mtimes(&snapshot(&local)),
        &without_mtimes(&snapshot(&m.dir)),
        "after a fresh mount",
    );
    m.remount(true);

    // The errors POSIX names.
    assert_eq!(
        errno_of(std::fs::remove_dir(m.path("a/b"))),
        libc::ENOTEMPTY
    );
    assert_eq!(errno_of(std::fs::create_dir(m.path("a"))), libc::EEXIST);
    assert_eq!(errno_of(std::fs::File::open(m.path("nope"))), libc::ENOENT);
    assert_eq!(
        errno_of(std::fs::File::open(m.path("a/nope/deeper"))),
        libc::ENOENT
    );
    // A directory takes no second name (files do: tests/links.rs).
    assert_eq!(
        errno_of(std::fs::hard_link(m.path("a"), m.path("a2"))),
        libc::EPERM
    );
    let out = exec(Some(&m.dir), "rmdir", &["a/b"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Directory not empty"));
    assert!(!m.path("a2").exists());
}

// ---- 6. providers die during a read ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_survives_two_providers_killed() {
    use std::io::Read;
    let mut c = TestCluster::start(6).await;
    let mut m = TestMount::new(&c);
    let scratch = tempdir();
    let len = 200 * MIB;
    let data = random_bytes(len, 66);
    let local = scratch.path().join("f");
    std::fs::write(&local, &data).unwrap();
    run(None, "cp", &[p(&local), p(&m.path("f"))]);
    // Cold: a new mount process, no cache, no kernel pages.
    m.remount(true);

    let mut f = std::fs::File::open(m.path("f")).unwrap();
    let mut at = 0;
    let mut buf = vec![0u8; MIB];
    let mut killed = false;
    let start = Instant::now();
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert!(
            buf[..n] == data[at..at + n],
            "bytes differ in [{at}, {})",
            at + n
        );
        at += n;
        if !killed && at >= 60 * MIB {
            c.providers[1].kill();
            c.providers[4].kill();
            killed = true;
        }
    }
    drop(f);
    assert!(killed);
    assert_eq!(at, len);
    eprintln!(
        "200 MiB read, 2 of 6 providers killed mid-way: {:?}",
        start.elapsed()
    );
    // And again from nothing, with only four providers.
    let t = Instant::now();
    m.remount(true);
    eprintln!("remount: {:?}", t.elapsed());
    let t = Instant::now();
    cmp(&local, &m.path("f"));
    eprintln!("cmp: {:?}", t.elapsed());
}

// ---- 7. over quota ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_quota_cp_fails_with_edquot_and_keeps_the_old_version() {
    let capacity = (30 * MIB).to_string();
    let c = TestCluster::start_with(6, &["--free-capacity", &capacity]).await;
    let mut m = TestMount::new(&c);
    let scratch = tempdir();
    let v1 = random_bytes(100_000, 71);
    let f = m.path("f");
    std::fs::write(&f, &v1).unwrap();
    let big = scratch.path().join("big");
    write_random(&big, 40 * MIB, 72);

    let out = exec(None, "cp", &[p(&big), p(&f)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "cp of 40 MiB into 30 MiB succeeded");
    assert!(err.contains("Disk quota exceeded"), "cp said: {err}");
    // The refused bytes are not lost: kept aside in the cache dir once the
    // kernel has released cp's file (asynchronously, after close()).
    let want = std::fs::read(&big).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let kept: Vec<PathBuf> = std::fs::read_dir(m.cache.join("recovered"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        if kept.iter().any(|k| std::fs::read(k).unwrap() == want) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the refused version is not in recovered/: {kept:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_bytes(
        &std::fs::read(&f).unwrap(),
        &v1,
        "the old version right after",
    );
    assert_eq!(std::fs::metadata(&f).unwrap().len(), v1.len() as u64);

    // fsync gives the same error.
    {
        use std::io::Write;
        let mut g = std::fs::File::create(m.path("g")).unwrap();
        g.write_all(&random_bytes(40 * MIB, 73)).unwrap();
        assert_eq!(errno_of(g.sync_all()), libc::EDQUOT);
    }
    std::thread::sleep(Duration::from_millis(1100));
    assert_bytes(
        &std::fs::read(&f).unwrap(),
        &v1,
        "the old version after the TTL",
    );
    m.remount(true);
    assert_bytes(
        &std::fs::read(&f).unwrap(),
        &v1,
        "the old version after a remount",
    );
    // Refused versions take no room: the account holds v1 alone.
    let usage = c.usage().await;
    assert!(
        usage["used"].as_u64().unwrap() < MIB as u64,
        "usage after two refused versions: {usage}\n{}",
        m.log()
    );
    // What fits still goes in.
    let small = random_bytes(2 * MIB, 74);
    {
        use std::io::Write;
        let mut h = std::fs::File::create(m.path("h")).unwrap();
        h.write_all(&small).unwrap();
        h.sync_all()
            .unwrap_or_else(|e| panic!("fsync of a file that fits: {e}; usage {}", usage));
    }
    assert_bytes(
        &std::fs::read(m.path("h")).unwrap(),
        &small,
        "a file that fits",
    );
}

// ---- 8. the mount dies during an upload ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_the_mount_during_an_upload() {
    let c = TestCluster::start(6).await;
    let mut m = TestMount::new(&c);
    let scratch = tempdir();
    let old = scratch.path().join("old");
    let new = scratch.path().join("new");
    let len = 100 * MIB;
    write_random(&old, 5 * MIB, 81);
    write_random(&new, len, 82);
    let f = m.path("f");
    run(None, "cp", &[p(&old), p(&f)]);

    let staging = m.cache.join("staging");
    let mut cp = Command::new("cp")
        .args([p(&new), p(&f)])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until every byte is staged and the upload has begun (cp is in
    // close(): the marker says "done").
    let deadline = Instant::now() + Duration::from_secs(60);
    let uploading = loop {
        let names: Vec<(PathBuf, u64)> = std::fs::read_dir(&staging)
            .unwrap()
            .filter_map(|e| {
                let e = e.ok()?;
                Some((e.path(), e.metadata().ok()?.len()))
            })
            .collect();
        let full = names
            .iter()
            .any(|(p, n)| p.extension().is_some_and(|x| x == "data") && *n == len as u64);
        let done = names
            .iter()
            .any(|(p, _)| p.extension().is_some_and(|x| x == "done"));
        if (full && done) || Instant::now() > deadline {
            break full && done;
        }
        if cp.try_wait().unwrap().is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    assert!(
        uploading,
        "never saw the staged file whole and uploading while cp ran"
    );
    // Partitions went up while cp wrote: close() waits only for the last
    // few and the commit, so the kill comes at once.
    let cp_done = cp.try_wait().unwrap().is_some();
    assert!(!cp_done, "close() finished before the kill");
    m.kill9();
    let status = cp.wait().unwrap();
    eprintln!("cp status {status}");
    let markers: Vec<PathBuf> = std::fs::read_dir(&staging)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "open" || x == "done"))
        .collect();
    // Killed in close(): cp saw it fail, and the file is staged whole.
    assert!(!status.success(), "cp succeeded on a killed mount");
    assert_eq!(markers.len(), 1, "the killed upload left no marker");
    assert!(
        markers[0].extension().is_some_and(|x| x == "done"),
        "staged, closed, yet marked {markers:?}"
    );

    m.mount();
    let got = std::fs::read(&f).unwrap();
    let is_new = got == std::fs::read(&new).unwrap();
    let is_old = got == std::fs::read(&old).unwrap();
    assert!(is_new || is_old, "a torn file: {} bytes", got.len());
    // Nothing left staged; whatever was not uploaded was kept aside.
    let left: Vec<_> = std::fs::read_dir(&staging)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "open" || x == "done"))
        .collect();
    assert!(left.is_empty(), "still staged: {left:?}");
    if is_old {
        let kept: Vec<PathBuf> = std::fs::read_dir(m.cache.join("recovered"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(
            kept.iter()
                .any(|k| std::fs::read(k).unwrap() == std::fs::read(&new).unwrap()),
            "the new version was neither uploaded nor kept: {kept:?}"
        );
    }
    eprintln!(
        "after the remount the file is the {} version",
        if is_new { "new" } else { "old" }
    );
    m.remount(true);
    cmp(if is_new { &new } else { &old }, &f);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_the_mount_while_a_file_is_written() {
    use std::io::Write;
    let c = TestCluster::start(6).await;
    let mut m = TestMount::new(&c);
    let old = random_bytes(3 * MIB, 91);
    let new = random_bytes(40 * MIB, 92);
    let staged = 20 * MIB;
    let f = m.path("f");
    std::fs::write(&f, &old).unwrap();

    // A writer that stops half-way, its file still open, when the mount
    // dies: dd from a FIFO we feed. (A separate process: a thread of this
    // test process would share its descriptor with every child forked
    // meanwhile, and each child's close would upload the file.)
    let scratch = tempdir();
    let fifo = scratch.path().join("fifo");
    let c_fifo = std::ffi::CString::new(p(&fifo)).unwrap();
    // SAFETY: a valid NUL-terminated path; no memory is handed over.
    assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o600) }, 0);
    let mut dd = Command::new("dd")
        .args([
            &format!("if={}", p(&fifo)),
            &format!("of={}", p(&f)),
            "bs=1M",
            "iflag=fullblock",
            "status=none",
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut feed = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    feed.write_all(&new[..staged]).unwrap();
    let data = m.cache.join("staging");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_dir(&data).unwrap().any(|e| {
        let e = e.unwrap();
        e.path().extension().is_some_and(|x| x == "data")
            && e.metadata().is_ok_and(|md| md.len() == staged as u64)
    }) {
        assert!(Instant::now() < deadline, "dd never staged {staged} bytes");
        std::thread::sleep(Duration::from_millis(5));
    }
    let markers = |m: &TestMount| -> Vec<PathBuf> {
        std::fs::read_dir(m.cache.join("staging"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "open" || x == "done"))
            .collect()
    };
    let before = markers(&m);
    assert_eq!(
        before.len(),
        1,
        "markers of an open, written file: {before:?}"
    );
    assert!(before[0].extension().is_some_and(|x| x == "open"));
    m.kill9();
    drop(feed);
    let status = dd.wait().unwrap();
    assert!(!status.success(), "dd succeeded on a killed mount");

    // Never closed: not uploaded, never shown torn; the data kept aside.
    m.mount();
    assert!(std::fs::read(&f).unwrap() == old, "not the old version");
    assert!(markers(&m).is_empty());
    let kept: Vec<PathBuf> = std::fs::read_dir(m.cache.join("recovered"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(kept.len(), 1, "recovered: {kept:?}");
    assert!(
        std::fs::read(&kept[0]).unwrap() == new[..staged],
        "the staged bytes were not kept as written"
    );
    m.remount(true);
    assert!(std::fs::read(&f).unwrap() == old);
}

// ---- a rewrite becomes visible elsewhere whole, at close ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_mount_sees_the_old_version_until_the_writer_closes() {
    use std::io::Write;
    let c = TestCluster::start(6).await;
    let a = TestMount::new(&c);
    let b = TestMount::new(&c);
    let old = random_bytes(MIB + 5, 101);
    let new = random_bytes(3 * MIB + 7, 102);
    std::fs::write(a.path("f"), &old).unwrap();
    assert!(std::fs::read(b.path("f")).unwrap() == old);

    // dd rewrites f on mount a (open O_TRUNC, dup onto stdout, close the
    // original, then write), fed from a FIFO so that it stays open.
    let scratch = tempdir();
    let fifo = scratch.path().join("fifo");
    let c_fifo = std::ffi::CString::new(p(&fifo)).unwrap();
    // SAFETY: a valid NUL-terminated path; no memory is handed over.
    assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o600) }, 0);
    let mut dd = Command::new("dd")
        .args([
            &format!("if={}", p(&fifo)),
            &format!("of={}", p(&a.path("f"))),
            "bs=64K",
            "iflag=fullblock",
            "status=none",
        ])
        .spawn()
        .unwrap();
    let mut feed = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    let half = 2 * MIB;
    feed.write_all(&new[..half]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(a.path("f")).unwrap().len() < half as u64 {
        assert!(Instant::now() < deadline, "dd never wrote {half} bytes");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Half written, truncated at open: elsewhere, still the old version.
    std::thread::sleep(Duration::from_millis(1100));
    assert!(
        std::fs::read(b.path("f")).unwrap() == old,
        "another mount sees a version the writer has not closed"
    );
    feed.write_all(&new[half..]).unwrap();
    drop(feed);
    assert!(dd.wait().unwrap().success());
    assert!(std::fs::read(a.path("f")).unwrap() == new);
    // The new version, whole, once the other mount's attributes expire.
    std::thread::sleep(Duration::from_millis(1100));
    assert!(
        std::fs::read(b.path("f")).unwrap() == new,
        "the other mount does not see the new version"
    );
}
