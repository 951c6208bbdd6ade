//! Test harness: real `tfsfs` processes on loopback ports, each killed when
//! its handle drops.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::Duration;

use tfsfs::proto::{FileLayout, ProviderHealth, ProviderStatus};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tfsfs")
}

/// A server process; killed (SIGKILL) on drop.
pub struct Proc {
    pub child: Child,
    pub url: String,
    _stdout: BufReader<ChildStdout>,
}

impl Proc {
    /// Starts `tfsfs ARGS` and waits for its `LISTENING url` line.
    pub fn spawn(args: &[&str]) -> Proc {
        Self::spawn_under(&[], args)
    }

    /// `spawn` with `tfsfs` run by the command `wrapper` (e.g. `prlimit ...`).
    pub fn spawn_under(wrapper: &[&str], args: &[&str]) -> Proc {
        let argv: Vec<&str> = wrapper
            .iter()
            .copied()
            .chain([bin()])
            .chain(args.iter().copied())
            .collect();
        let mut child = Command::new(argv[0])
            .args(&argv[1..])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tfsfs");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).expect("read LISTENING line");
        let url = line
            .trim()
            .strip_prefix("LISTENING ")
            .unwrap_or_else(|| panic!("tfsfs {args:?} printed {line:?}"))
            .to_string();
        Proc {
            child,
            url,
            _stdout: out,
        }
    }

    /// kill -9.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `tfsfs meta` arguments for garbage collection every second, with no
/// grace and no clock skew allowance.
pub const GC_NOW: &[&str] = &[
    "--gc-interval-secs",
    "1",
    "--gc-grace-secs",
    "0",
    "--clock-skew-secs",
    "0",
];

/// A throw-away PostgreSQL database for one cluster, made when the tests run
/// on PostgreSQL (`TFSFS_TEST_DB=postgres`, server at `TFSFS_TEST_PG`) and
/// dropped with it.
pub struct TestDb {
    pub url: String,
    admin: String,
    name: String,
}

/// The PostgreSQL server's URL when this run uses it.
pub fn pg_server() -> Option<String> {
    if std::env::var("TFSFS_TEST_DB").ok()? != "postgres" {
        return None;
    }
    Some(std::env::var("TFSFS_TEST_PG").expect("TFSFS_TEST_DB=postgres needs TFSFS_TEST_PG"))
}

/// Runs `sql` on the database at `url`; the first column of the first row
/// as text, if any. On a thread of its own: the client must not run on an
/// async runtime's thread.
pub fn pg_run(url: &str, sql: &str) -> Result<Option<String>, postgres::Error> {
    let (url, sql) = (url.to_string(), sql.to_string());
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls)?;
        let rows = c.simple_query(&sql)?;
        Ok(rows.iter().find_map(|m| match m {
            postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        }))
    })
    .join()
    .expect("PostgreSQL client thread")
}

impl TestDb {
    /// A fresh database on the server at `admin` (a URL of an existing db).
    pub fn create(admin: &str) -> TestDb {
        let name = format!("tfsfs_{}", hex::encode(rand::random::<[u8; 8]>()));
        pg_run(admin, &format!("CREATE DATABASE {name}")).expect("create a test database");
        let base = admin.rsplit_once('/').expect("a URL with a database").0;
        TestDb {
            url: format!("{base}/{name}"),
            admin: admin.to_string(),
            name,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = pg_run(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// `tfsfs admin` on the store of the metadata server whose data dir is
/// `meta_dir` (and whose database is `db` on PostgreSQL runs).
fn admin_command(meta_dir: &Path, db: Option<&TestDb>) -> Command {
    let mut cmd = Command::new(bin());
    cmd.arg("admin").arg("--data").arg(meta_dir);
    if let Some(db) = db {
        cmd.args(["--db", &db.url]);
    }
    cmd
}

/// A metadata server and N providers, each its own process.
pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub meta: Proc,
    /// A reusable provider join token.
    pub join: String,
    pub providers: Vec<Proc>,
    pub appkey: String,
    pub appid: u64,
    pub uid: u64,
    meta_args: Vec<String>,
    /// Dropped after the processes (fields drop in order).
    pub db: Option<TestDb>,
}

impl TestCluster {
    /// `tfsfs admin` on this cluster's store; the caller adds the command.
    pub fn admin_command(&self) -> Command {
        admin_command(&self.dir.path().join("meta"), self.db.as_ref())
    }

    pub async fn start(n: usize) -> TestCluster {
        Self::start_with(n, &[]).await
    }

    /// `meta_args` go to `tfsfs meta` (e.g. `--partition-size`).
    pub async fn start_with(n: usize, meta_args: &[&str]) -> TestCluster {
        Self::start_under(n, &[], meta_args).await
    }

    /// `start_with`, the metadata server run by `wrapper` (see `Proc::spawn_under`).
    pub async fn start_under(n: usize, wrapper: &[&str], meta_args: &[&str]) -> TestCluster {
        let dir = tempfile::tempdir().unwrap();
        let meta_dir = dir.path().join("meta");
        let db = pg_server().map(|server| TestDb::create(&server));
        let db_args: Vec<&str> = match &db {
            Some(d) => vec!["--db", &d.url],
            None => vec![],
        };
        let out = admin_command(&meta_dir, db.as_ref())
            .args(["app", "create"])
            .output()
            .unwrap();
        assert!(out.status.success(), "admin app create: {out:?}");
        let app: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut args = vec![
            "meta",
            "--listen",
            "127.0.0.1:0",
            "--data",
            meta_dir.to_str().unwrap(),
        ];
        args.extend_from_slice(&db_args);
        args.extend_from_slice(meta_args);
        let meta = Proc::spawn_under(wrapper, &args);
        let out = admin_command(&meta_dir, db.as_ref())
            .args(["provider", "token", "--reusable"])
            .output()
            .unwrap();
        assert!(out.status.success(), "admin provider token: {out:?}");
        let mut c = TestCluster {
            meta_args: args.iter().map(|a| a.to_string()).collect(),
            meta,
            join: String::from_utf8(out.stdout).unwrap().trim().to_string(),
            providers: Vec::new(),
            appkey: app["appkey"].as_str().unwrap().to_string(),
            appid: app["appid"].as_u64().unwrap(),
            uid: 1,
            dir,
            db,
        };
        for _ in 0..n {
            c.add_provider();
        }
        c.wait_alive(n).await;
        c
    }

    /// Starts the metadata server again, on its address and data dir
    /// (after `meta.kill()`).
    pub fn restart_meta(&mut self) {
        let addr = self.meta.url.trim_start_matches("http://").to_string();
        let mut args = self.meta_args.clone();
        let at = args.iter().position(|a| a == "--listen").unwrap() + 1;
        args[at] = addr;
        self.meta.kill();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.meta = Proc::spawn(&args);
    }

    /// Another metadata server on this cluster's PostgreSQL store, with
    /// local files of its own.
    pub fn add_meta(&self, i: usize) -> Proc {
        assert!(
            self.db.is_some(),
            "several metadata servers need PostgreSQL"
        );
        let mut args = self.meta_args.clone();
        let at = args.iter().position(|a| a == "--data").unwrap() + 1;
        args[at] = self
            .dir
            .path()
            .join(format!("meta-{i}"))
            .display()
            .to_string();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Proc::spawn(&args)
    }

    /// `tfsfs admin ARGS` on this cluster's store, which must succeed; its stdout.
    pub fn admin(&self, args: &[&str]) -> String {
        let out = self.admin_command().args(args).output().unwrap();
        assert_ok(&out, &format!("admin {args:?}"));
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn provider_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("provider-{i}"))
    }

    pub fn add_provider(&mut self) {
        self.add_provider_with(&[]);
    }

    /// A new provider, with extra `tfsfs provider` arguments.
    pub fn add_provider_with(&mut self, extra: &[&str]) {
        let i = self.providers.len();
        let join = self.join.clone();
        let p = self.spawn_provider(i, &[&["--join", &join], extra].concat());
        self.providers.push(p);
    }

    /// Starts provider `i` again on its data dir (after a kill): enrolled
    /// already, it needs no join token.
    pub fn restart_provider(&mut self, i: usize) {
        self.providers[i] = self.spawn_provider(i, &[]);
    }

    fn spawn_provider(&self, i: usize, extra: &[&str]) -> Proc {
        let d = self.provider_dir(i);
        let mut args = vec![
            "provider",
            "--listen",
            "127.0.0.1:0",
            "--data",
            d.to_str().unwrap(),
            "--meta",
            &self.meta.url,
            "--heartbeat-secs",
            "1",
        ];
        args.extend_from_slice(extra);
        Proc::spawn(&args)
    }

    /// Enrolls a provider that is not a `tfsfs provider` process (a test
    /// double at `url`) under `id`, and sends its first heartbeat.
    pub async fn enroll_double(&self, id: &str, url: &str) -> ed25519_dalek::SigningKey {
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let beat = tfsfs::grant::Beat {
            id: id.into(),
            url: url.into(),
            capacity: 1 << 40,
            used: 0,
            ts_ms: tfsfs::grant::now_ms(),
        };
        let req = tfsfs::proto::EnrollRequest {
            beat: tfsfs::grant::sign(&beat, &key),
            pubkey: hex::encode(key.verifying_key().to_bytes()),
            token: Some(self.join.clone()),
        };
        let r = reqwest::Client::new()
            .post(format!("{}/api/providers/enroll", self.meta.url))
            .json(&req)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "enroll {id}: {}", r.status());
        key
    }

    pub async fn wait_alive(&self, n: usize) {
        for _ in 0..200 {
            if self
                .provider_list()
                .await
                .iter()
                .filter(|p| p.alive)
                .count()
                >= n
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{n} providers never came alive");
    }

    pub async fn provider_list(&self) -> Vec<ProviderStatus> {
        match reqwest::get(format!("{}/api/providers", self.meta.url)).await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    /// `tfsfs ARGS` as a client of this cluster's account.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_as(self.uid, args)
    }

    pub fn cli_as(&self, uid: u64, args: &[&str]) -> Output {
        self.cli_command(uid, &self.meta.url)
            .args(args)
            .output()
            .unwrap()
    }

    /// A `tfsfs` client command of account `uid`, talking to `meta_url`.
    pub fn cli_command(&self, uid: u64, meta_url: &str) -> Command {
        let mut cmd = Command::new(bin());
        cmd.env("TFSFS_META", meta_url)
            .env("TFSFS_APPKEY", &self.appkey)
            .env("TFSFS_UID", uid.to_string())
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"));
        cmd
    }

    pub fn put(&self, local: &Path, remote: &str, encrypt: bool) -> Output {
        let mut args = vec!["put", local.to_str().unwrap(), remote];
        if !encrypt {
            args.push("--no-encrypt");
        }
        self.cli(&args)
    }

    pub fn get(&self, remote: &str, local: &Path, encrypt: bool) -> Output {
        let mut args = vec!["get", remote, local.to_str().unwrap()];
        if !encrypt {
            args.push("--no-encrypt");
        }
        self.cli(&args)
    }

    pub async fn health(&self, i: usize) -> ProviderHealth {
        reqwest::get(format!("{}/health", self.providers[i].url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Bytes received by all live providers.
    pub async fn bytes_received(&self) -> u64 {
        let mut total = 0;
        for i in 0..self.providers.len() {
            if let Ok(r) = reqwest::get(format!("{}/health", self.providers[i].url)).await {
                total += r
                    .json::<ProviderHealth>()
                    .await
                    .map(|h| h.bytes_received)
                    .unwrap_or(0);
            }
        }
        total
    }

    pub async fn layout(&self, path: &str) -> FileLayout {
        self.layout_as(self.uid, path).await
    }

    /// The account's usage (`GET /api/ns/APPID/UID/usage`) as JSON.
    pub async fn usage(&self) -> serde_json::Value {
        self.ns_get(self.uid, "usage", &[]).await
    }

    /// The layout of `path` in the app's namespace `uid`.
    pub async fn layout_as(&self, uid: u64, path: &str) -> FileLayout {
        self.ns_get(uid, "layout", &[("path", path)]).await
    }

    /// `GET /api/ns/APPID/UID/ROUTE` of the app's namespace `uid`, which
    /// must succeed, as JSON.
    pub async fn ns_get<T: serde::de::DeserializeOwned>(
        &self,
        uid: u64,
        route: &str,
        query: &[(&str, &str)],
    ) -> T {
        let r = reqwest::Client::new()
            .get(format!(
                "{}/api/ns/{}/{}/{route}",
                self.meta.url, self.appid, uid
            ))
            .query(query)
            .header(tfsfs::proto::APPKEY_HEADER, &self.appkey)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{route} {query:?}: {}", r.status());
        r.json().await.unwrap()
    }

    /// `{meta}/v2/{appkey}/{appid}/{uid}` — the base of this account's v2 routes.
    pub fn v2(&self) -> String {
        format!(
            "{}/v2/{}/{}/{}",
            self.meta.url, self.appkey, self.appid, self.uid
        )
    }

    /// `{meta}/v2/{appkey}/metadata/{appid}/{uid}`.
    pub fn v2_meta(&self) -> String {
        format!(
            "{}/v2/{}/metadata/{}/{}",
            self.meta.url, self.appkey, self.appid, self.uid
        )
    }
}

/// Deterministic pseudo-random bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// The 6-digit code of a registration mail.
pub fn code_in(mail: &str) -> String {
    let at = mail
        .find("verification code")
        .unwrap_or_else(|| panic!("no code in {mail}"));
    let code: String = mail[at..]
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take(6)
        .collect();
    assert_eq!(code.len(), 6, "{mail}");
    assert!(code.bytes().all(|b| b.is_ascii_digit()), "{mail}");
    code
}

pub fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `tfsfs mount` of a cluster's account at a fresh directory, as a separate
/// process; unmounted (then killed) on drop.
pub struct TestMount {
    /// The mount point.
    pub dir: PathBuf,
    /// The mount's `--cache-dir` (staging and recovered files).
    pub cache: PathBuf,
    /// The mount process's output, one file per start.
    pub logs: PathBuf,
    child: Option<Child>,
    starts: usize,
    meta_url: String,
    appkey: String,
    config_home: PathBuf,
    encrypt: bool,
    /// The account's uid.
    uid: u64,
    /// More `tfsfs mount` arguments.
    args: Vec<String>,
    _tmp: tempfile::TempDir,
}

impl TestMount {
    /// Mounts `c`'s account (uid 1), encrypted.
    pub fn new(c: &TestCluster) -> TestMount {
        Self::with(c, true)
    }

    pub fn with(c: &TestCluster, encrypt: bool) -> TestMount {
        Self::open(c, &c.meta.url, encrypt, &[])
    }

    /// `with`, `args` added to `tfsfs mount`'s.
    pub fn with_args(c: &TestCluster, encrypt: bool, args: &[&str]) -> TestMount {
        Self::open(c, &c.meta.url, encrypt, args)
    }

    /// Mounts `c`'s account `uid` (another namespace of the app), encrypted.
    pub fn as_uid(c: &TestCluster, uid: u64) -> TestMount {
        let mut m = Self::unmounted(c, &c.meta.url, true, &[]);
        m.uid = uid;
        m.mount();
        m
    }

    /// Mounts `c`'s account through the metadata server(s) `meta_url`
    /// (comma-separated: the mount fails over between them).
    pub fn at(c: &TestCluster, meta_url: &str, encrypt: bool) -> TestMount {
        Self::open(c, meta_url, encrypt, &[])
    }

    fn open(c: &TestCluster, meta_url: &str, encrypt: bool, args: &[&str]) -> TestMount {
        let mut m = Self::unmounted(c, meta_url, encrypt, args);
        m.mount();
        m
    }

    fn unmounted(c: &TestCluster, meta_url: &str, encrypt: bool, args: &[&str]) -> TestMount {
        let tmp = tempfile::tempdir().unwrap();
        // Canonical, as /proc/self/mounts lists it.
        let base = std::fs::canonicalize(tmp.path()).unwrap();
        let dir = base.join("mnt");
        let cache = base.join("cache");
        let logs = base.join("logs");
        for d in [&dir, &cache, &logs] {
            std::fs::create_dir_all(d).unwrap();
        }
        TestMount {
            dir,
            cache,
            logs,
            child: None,
            starts: 0,
            meta_url: meta_url.to_string(),
            appkey: c.appkey.clone(),
            config_home: c.dir.path().join("config"),
            encrypt,
            uid: c.uid,
            args: args.iter().map(|a| a.to_string()).collect(),
            _tmp: tmp,
        }
    }

    /// `dir/rel`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// The mount process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Starts the mount process and waits until the kernel lists the mount.
    pub fn mount(&mut self) {
        assert!(self.child.is_none(), "already mounted");
        self.starts += 1;
        let log =
            std::fs::File::create(self.logs.join(format!("mount-{}.log", self.starts))).unwrap();
        let mut cmd = Command::new(bin());
        cmd.arg("mount")
            .arg(&self.dir)
            .arg("--foreground")
            .args([
                "--meta",
                &self.meta_url,
                "--appkey",
                &self.appkey,
                "--uid",
                &self.uid.to_string(),
            ])
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(&self.args)
            .env("XDG_CONFIG_HOME", &self.config_home)
            .env_remove("TFSFS_META")
            .env_remove("TFSFS_APPKEY")
            .env_remove("TFSFS_UID")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if !self.encrypt {
            cmd.arg("--no-encrypt");
        }
        let mut child = cmd.spawn().expect("spawn tfsfs mount");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !is_mounted(&self.dir) {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("tfsfs mount exited ({status}):\n{}", self.log());
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("tfsfs mount never came up:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    /// `umount DIR`, then waits for the process to end (uploads in flight
    /// finish first), killing it after 60 s. A mount still busy (a file
    /// left open) is unmounted lazily, and the test fails unless it is
    /// failing already.
    pub fn unmount(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let umount = |args: &[&str]| {
            Command::new("umount")
                .args(args)
                .arg(&self.dir)
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        let mut lazy = false;
        if is_mounted(&self.dir) && !umount(&[]) {
            std::thread::sleep(Duration::from_millis(200));
            if !umount(&[]) {
                lazy = true;
                umount(&["-l"]);
            }
        }
        let limit = Duration::from_secs(if lazy { 5 } else { 60 });
        let deadline = std::time::Instant::now() + limit;
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if std::time::Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        if lazy && !std::thread::panicking() {
            panic!(
                "umount {}: busy (a file left open?); unmounted lazily",
                self.dir.display()
            );
        }
    }

    /// Unmounts, wipes the cache dir if asked, mounts again.
    pub fn remount(&mut self, wipe_cache: bool) {
        self.unmount();
        if wipe_cache {
            std::fs::remove_dir_all(&self.cache).unwrap();
            std::fs::create_dir_all(&self.cache).unwrap();
        }
        self.mount();
    }

    /// kill -9 of the mount process, then `umount -l` of the dead mount.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if is_mounted(&self.dir) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        assert!(!is_mounted(&self.dir), "dead mount still listed");
    }

    /// Everything the mount processes printed.
    pub fn log(&self) -> String {
        let mut out = String::new();
        for i in 1..=self.starts {
            let text = std::fs::read_to_string(self.logs.join(format!("mount-{i}.log")))
                .unwrap_or_default();
            out.push_str(&format!("--- mount #{i} ---\n{text}"));
        }
        out
    }
}

impl Drop for TestMount {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: String = log
                .lines()
                .rev()
                .take(60)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            eprintln!("tfsfs mount log (tail):\n{tail}");
            // TFSFS_KEEP_LOGS=DIR keeps the whole log of a failed test.
            if let Some(keep) = std::env::var_os("TFSFS_KEEP_LOGS") {
                let _ = std::fs::create_dir_all(&keep);
                let to = Path::new(&keep).join(format!(
                    "mount-{}-{}.log",
                    std::process::id(),
                    self.dir
                        .parent()
                        .and_then(|d| d.file_name())
                        .and_then(|n| n.to_str())
                        .unwrap_or("x")
                ));
                let _ = std::fs::write(&to, log);
                eprintln!("whole log: {}", to.display());
            }
        }
        self.unmount();
        if is_mounted(&self.dir) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Is a tfsfs FUSE file system mounted at `dir` (a canonical path), per
/// /proc/self/mounts?
pub fn is_mounted(dir: &Path) -> bool {
    let want = dir.to_str().unwrap_or("").replace(' ', "\\040");
    std::fs::read_to_string("/proc/self/mounts")
        .map(|m| {
            m.lines().any(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                f.len() > 2 && f[0] == "tfsfs" && f[1] == want && f[2].starts_with("fuse")
            })
        })
        .unwrap_or(false)
}

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The Prometheus text a server at `base` (`http://host:port`) serves on
/// `/metrics`.
pub async fn metrics_text(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// (VmRSS, VmHWM) of process `pid`, in bytes.
pub fn memory(pid: u32) -> (u64, u64) {
    let s = procfs::process::Process::new(pid as i32)
        .unwrap()
        .status()
        .unwrap();
    (
        s.vmrss.expect("VmRSS") * 1024,
        s.vmhwm.expect("VmHWM") * 1024,
    )
}
