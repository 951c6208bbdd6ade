//! The sidecar API (client-api.md) of a real mount over a real cluster:
//! every route with a success case and failure cases, JSON checked field by
//! field; registration against an SMTP sink; quota, packages and `df`;
//! progress of `cp` on the mount; a 100 MiB background upload.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{assert_ok, bin, code_in, free_port, is_mounted, random_bytes, TestCluster};
use serde_json::{json, Value};
use tfsfs::client::meta::MetaClient;
use tfsfs::codec::crypt::{AccountKey, Derivation, PartitionCipher};
use tfsfs::codec::sha1_hex;
use tfsfs::transfer::content_matches;

// ---- harness: a mount with its sidecar ----

/// The sidecar's answer: HTTP status and body.
struct Reply {
    status: u16,
    body: Value,
}

impl Reply {
    /// The data of a code-0 answer.
    #[track_caller]
    fn data(&self) -> &Value {
        assert_eq!(self.body["code"], json!(0), "not a success: {}", self.body);
        assert_eq!(self.body["errmsg"], json!(""), "{}", self.body);
        assert_eq!(self.status, 200, "{}", self.body);
        assert!(self.body.get("data").is_some(), "no data: {}", self.body);
        &self.body["data"]
    }

    /// The errmsg of a code-1 answer (data null).
    #[track_caller]
    fn err(&self) -> String {
        assert_eq!(self.body["code"], json!(1), "not a failure: {}", self.body);
        assert_eq!(self.body["data"], Value::Null, "{}", self.body);
        let m = self.body["errmsg"].as_str().unwrap_or_default().to_string();
        assert!(!m.is_empty(), "empty errmsg: {}", self.body);
        m
    }

    /// A code-1 answer whose errmsg holds `want`.
    #[track_caller]
    fn err_has(&self, want: &str) -> String {
        let m = self.err();
        assert!(m.contains(want), "errmsg {m:?} lacks {want:?}");
        m
    }
}

#[derive(Clone)]
struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn send(&self, r: reqwest::RequestBuilder) -> Reply {
        let r = r.send().await.expect("sidecar request");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {text:?} (status {status})"));
        Reply { status, body }
    }

    async fn post(&self, route: &str, body: Value) -> Reply {
        self.send(
            self.http
                .post(format!("{}{route}", self.base))
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
        .await
    }

    async fn post_raw(&self, route: &str, body: &str) -> Reply {
        self.send(
            self.http
                .post(format!("{}{route}", self.base))
                .body(body.to_string()),
        )
        .await
    }

    async fn get(&self, route: &str) -> Reply {
        self.send(self.http.get(format!("{}{route}", self.base)))
            .await
    }

    /// A GET on a POST route: 405, with a code-1 body.
    async fn refuses_get(&self, route: &str) -> Reply {
        let r = self.get(route).await;
        assert_eq!(r.status, 405, "GET {route}");
        r
    }

    /// A POST on a GET route: 405, with a code-1 body.
    async fn refuses_post(&self, route: &str) -> Reply {
        let r = self.post(route, json!({})).await;
        assert_eq!(r.status, 405, "POST {route}");
        r
    }

    async fn progress(&self, files: &[&str]) -> serde_json::Map<String, Value> {
        self.post("/store/progress", json!({ "files": files }))
            .await
            .data()
            .as_object()
            .expect("progress is an object")
            .clone()
    }
}

/// `tfsfs mount DIR --foreground ... --sidecar 127.0.0.1:PORT`; unmounted
/// (and the process reaped) on drop.
struct Mount {
    child: Child,
    dir: PathBuf,
    api: Api,
    _tmp: tempfile::TempDir,
}

impl Mount {
    async fn start(c: &TestCluster, config: &Path) -> Mount {
        Self::start_as(c, Some(&c.appkey), config).await
    }

    /// With no appkey, the mount uses the account saved in `config`.
    async fn start_as(c: &TestCluster, appkey: Option<&str>, config: &Path) -> Mount {
        let port = free_port();
        let sidecar = format!("127.0.0.1:{port}");
        Self::spawn(
            c,
            appkey,
            config,
            &["--sidecar", &sidecar],
            Some(port),
            Stdio::inherit(),
        )
        .await
    }

    /// `tfsfs mount` with `args`; waits for the mount and, when given, for
    /// the sidecar's port.
    async fn spawn(
        c: &TestCluster,
        appkey: Option<&str>,
        config: &Path,
        args: &[&str],
        port: Option<u16>,
        stderr: Stdio,
    ) -> Mount {
        let tmp = tempfile::tempdir().unwrap();
        // Canonical, as /proc/self/mounts lists it.
        let dir = std::fs::canonicalize(tmp.path()).unwrap().join("mnt");
        std::fs::create_dir(&dir).unwrap();
        let child = mount_command(c, appkey, config, &dir, args)
            .stderr(stderr)
            .spawn()
            .expect("spawn tfsfs mount");
        let mut m = Mount {
            child,
            dir,
            api: Api {
                base: format!("http://127.0.0.1:{}", port.unwrap_or(0)),
                http: reqwest::Client::new(),
            },
            _tmp: tmp,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = m.child.try_wait().unwrap() {
                panic!("tfsfs mount exited: {st}");
            }
            let listening =
                port.is_none_or(|p| std::net::TcpStream::connect(("127.0.0.1", p)).is_ok());
            if is_mounted(&m.dir) && listening {
                return m;
            }
            assert!(Instant::now() < deadline, "mount never came up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A namespace path's place on the mount.
    fn path(&self, remote: &str) -> PathBuf {
        self.dir.join(remote.trim_start_matches('/'))
    }

    fn df_size(&self) -> u64 {
        let out = Command::new("df")
            .args(["-B1", "--output=size"])
            .arg(&self.dir)
            .output()
            .unwrap();
        assert_ok(&out, "df");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df size")
    }
}

/// `tfsfs mount DIR --foreground` of `c` with `args` (the cache beside DIR).
fn mount_command(
    c: &TestCluster,
    appkey: Option<&str>,
    config: &Path,
    dir: &Path,
    args: &[&str],
) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(["mount", s(dir), "--foreground"])
        .args(["--meta", &c.meta.url])
        .args(appkey.map_or(vec![], |k| vec!["--appkey", k, "--uid", "1"]))
        .args(["--cache-dir", s(&dir.with_file_name("cache"))])
        .args(args)
        .env("XDG_CONFIG_HOME", config)
        .env_remove("TFSFS_META")
        .env_remove("TFSFS_APPKEY")
        .env_remove("TFSFS_UID")
        .stdout(Stdio::null());
    cmd
}

impl Drop for Mount {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The SHA-1 of the stored object of a one-fragment file (its filehash).
async fn object_sha1(c: &TestCluster, path: &str) -> String {
    let l = c.layout(path).await;
    assert_eq!(l.fragments.len(), 1, "{path} is one fragment");
    l.fragments[0].object.sha1.clone()
}

fn write_file(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn config_of(c: &TestCluster) -> PathBuf {
    c.dir.path().join("config")
}

/// `/store/list` of a whole folder by name.
async fn list(api: &Api, path: &str) -> Vec<Value> {
    api.post("/store/list", json!({"path": path, "pagesize": 1000}))
        .await
        .data()
        .as_array()
        .unwrap()
        .clone()
}

fn names(entries: &[Value]) -> Vec<&str> {
    entries
        .iter()
        .map(|e| e["filename"].as_str().unwrap())
        .collect()
}

// ---- a tiny SMTP server that records what it receives ----

#[derive(Clone, Debug)]
struct Mail {
    to: Vec<String>,
    data: String,
}

struct SmtpSink {
    url: String,
    mails: Arc<Mutex<Vec<Mail>>>,
}

impl SmtpSink {
    fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("smtp://{}", listener.local_addr().unwrap());
        let mails = Arc::new(Mutex::new(Vec::new()));
        let store = mails.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let store = store.clone();
                std::thread::spawn(move || {
                    let _ = smtp_session(conn, &store);
                });
            }
        });
        SmtpSink { url, mails }
    }

    fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }

    /// Waits for the `n`th mail (1-based).
    async fn wait_for(&self, n: usize) -> Mail {
        for _ in 0..200 {
            if let Some(m) = self.mails().get(n - 1) {
                return m.clone();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("mail {n} never arrived");
    }
}

fn smtp_session(conn: std::net::TcpStream, store: &Mutex<Vec<Mail>>) -> std::io::Result<()> {
    let mut out = conn.try_clone()?;
    let mut input = BufReader::new(conn);
    out.write_all(b"220 sink ESMTP ready\r\n")?;
    let mut to = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if input.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_string();
        let verb = cmd.split(' ').next().unwrap_or("").to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" | "HELO" => out.write_all(b"250-sink\r\n250 8BITMIME\r\n")?,
            "MAIL" => {
                to.clear();
                out.write_all(b"250 ok\r\n")?
            }
            "RCPT" => {
                let addr = cmd
                    .split_once(':')
                    .map(|(_, a)| a.trim().trim_matches(|c| c == '<' || c == '>').to_string())
                    .unwrap_or_default();
                to.push(addr);
                out.write_all(b"250 ok\r\n")?
            }
            "DATA" => {
                out.write_all(b"354 go on\r\n")?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if input.read_line(&mut line)? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                    data.push_str(&line);
                }
                store.lock().unwrap().push(Mail {
                    to: to.clone(),
                    data,
                });
                out.write_all(b"250 queued\r\n")?
            }
            "QUIT" => {
                out.write_all(b"221 bye\r\n")?;
                return Ok(());
            }
            _ => out.write_all(b"250 ok\r\n")?,
        }
    }
}

fn admin(c: &TestCluster, args: &[&str]) -> Vec<Value> {
    c.admin(args)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

// ---- /store/list ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_sorts_pages_and_hashes() {
    let c = TestCluster::start(6).await;
    let m = Mount::start(&c, &config_of(&c)).await;
    let api = &m.api;
    std::fs::create_dir_all(m.path("/docs/sub")).unwrap();
    for (name, size, mtime) in [
        ("a.txt", 300, 3000),
        ("b.txt", 100, 1000),
        ("c.txt", 200, 2000),
    ] {
        let p = m.path(&format!("/docs/{name}"));
        std::fs::write(&p, random_bytes(size, size as u64)).unwrap();
        let st = Command::new("touch")
            .args(["-m", "-d", &format!("@{mtime}")])
            .arg(&p)
            .status()
            .unwrap();
        assert!(st.success());
    }
    // A plaintext file: its filehash is the SHA-1 of its bytes.
    let tmp = tempfile::tempdir().unwrap();
    let plain = random_bytes(5000, 9);
    write_file(&tmp.path().join("p"), &plain);
    assert_ok(&c.put(&tmp.path().join("p"), "/plain/p.txt", false), "put");
    std::fs::write(m.path("/plain/empty"), b"").unwrap();

    let by = |sort: &str, asc: bool| json!({"path": "/docs", "pagesize": 10, "pagenum": 1, "sorttype": sort, "ascorder": asc});
    let r = api.post("/store/list", by("name", true)).await;
    let e = r.data().as_array().unwrap();
    assert_eq!(
        names(e),
        ["/docs/sub", "/docs/a.txt", "/docs/b.txt", "/docs/c.txt"]
    );
    let sub = &e[0];
    assert!(sub["id"].as_str().unwrap().parse::<i64>().is_ok());
    assert_eq!(sub["folder"], json!(true));
    assert_eq!(sub["filesize"], json!(0));
    assert_eq!(sub["filehash"], json!(""));
    let a = &e[1];
    assert!(a["id"].as_str().unwrap().parse::<i64>().unwrap() > 0);
    assert_ne!(a["id"], sub["id"]);
    assert_eq!(a["filename"], json!("/docs/a.txt"));
    assert_eq!(a["filesize"], json!(300));
    assert_eq!(a["folder"], json!(false));
    assert_eq!(a["modtime"], json!(3000));
    assert_eq!(
        a["filehash"],
        json!(object_sha1(&c, "/docs/a.txt").await),
        "filehash is the stored object's SHA-1"
    );
    let r = api.post("/store/list", by("size", true)).await;
    assert_eq!(
        names(r.data().as_array().unwrap()),
        ["/docs/sub", "/docs/b.txt", "/docs/c.txt", "/docs/a.txt"]
    );
    let r = api.post("/store/list", by("size", false)).await;
    assert_eq!(
        names(r.data().as_array().unwrap()),
        ["/docs/sub", "/docs/a.txt", "/docs/c.txt", "/docs/b.txt"]
    );
    let r = api.post("/store/list", by("modtime", true)).await;
    assert_eq!(
        names(r.data().as_array().unwrap()),
        ["/docs/sub", "/docs/b.txt", "/docs/c.txt", "/docs/a.txt"]
    );
    let page = |n: u64| json!({"path": "/docs", "pagesize": 2, "pagenum": n, "sorttype": "name", "ascorder": true});
    let r = api.post("/store/list", page(2)).await;
    assert_eq!(
        names(r.data().as_array().unwrap()),
        ["/docs/b.txt", "/docs/c.txt"]
    );
    let r = api.post("/store/list", page(3)).await;
    assert_eq!(r.data(), &json!([]));
    // Defaults: only the path is needed.
    let r = api.post("/store/list", json!({"path": "/plain"})).await;
    let e = r.data().as_array().unwrap();
    assert_eq!(names(e), ["/plain/empty", "/plain/p.txt"]);
    assert_eq!(e[0]["filehash"], json!(sha1_hex(b"")));
    assert_eq!(e[0]["filesize"], json!(0));
    assert_eq!(e[1]["filehash"], json!(sha1_hex(&plain)));
    assert_eq!(e[1]["filesize"], json!(5000));

    // Failures.
    api.post("/store/list", json!({"path": "/nope"}))
        .await
        .err_has("no folder /nope");
    api.post("/store/list", json!({"path": "/docs/a.txt"}))
        .await
        .err_has("not a folder");
    api.post("/store/list", json!({"path": "/docs", "sorttype": "color"}))
        .await
        .err_has("sorttype");
    api.post("/store/list", json!({"path": "/docs", "pagenum": 0}))
        .await
        .err_has("pagenum");
    api.post("/store/list", json!({"path": "/docs", "pagesize": "ten"}))
        .await
        .err_has("bad request body");
    api.post("/store/list", json!({"pagesize": 10}))
        .await
        .err_has("missing field `path`");
    api.post_raw("/store/list", "{\"path\":")
        .await
        .err_has("bad request body");
    api.refuses_get("/store/list").await.err_has("takes POST");
}

// ---- routes, envelope, guard ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_web_pages_are_refused() {
    let c = TestCluster::start(3).await;
    let m = Mount::start(&c, &config_of(&c)).await;
    let r = m.api.get("/store/nothing").await;
    assert_eq!(r.status, 404);
    r.err_has("no route /store/nothing");
    let r = m
        .api
        .send(
            m.api
                .http
                .post(format!("{}/store/progress", m.api.base))
                .header("origin", "http://evil.example")
                .body("{}"),
        )
        .await;
    assert_eq!(r.status, 403);
    r.err_has("web pages");
    let r = m
        .api
        .send(
            m.api
                .http
                .get(format!("{}/usage/amount", m.api.base))
                .header("host", "rebound.example:7788"),
        )
        .await;
    assert_eq!(r.status, 403);
    r.err_has("127.0.0.1 or localhost");
    // A page of the machine itself may ask.
    let r = m
        .api
        .send(
            m.api
                .http
                .post(format!("{}/store/progress", m.api.base))
                .header("origin", "http://localhost:3000")
                .body("{}"),
        )
        .await;
    r.data();
}

/// `curl -X POST` of `body` to the sidecar's `route`, as the user `nobody`
/// or as the test's own user (root), exactly as client-api.md shows it.
fn curl(api: &Api, as_nobody: bool, route: &str, body: Value) -> Reply {
    let mut cmd = if as_nobody {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "curl",
        ]);
        c
    } else {
        Command::new("curl")
    };
    let out = cmd
        .args(["-sS", "-X", "POST", &format!("{}{route}", api.base)])
        .args(["-d", &body.to_string(), "-w", "\n%{http_code}"])
        .current_dir("/")
        .output()
        .expect("run curl");
    assert_ok(&out, "curl");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').expect("curl's status line");
    Reply {
        status: status.parse().expect("an HTTP status"),
        body: serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}")),
    }
}

/// A code-1 "forbidden" answer with status 403, and no data.
#[track_caller]
fn forbidden(r: &Reply) {
    assert_eq!(r.status, 403, "{}", r.body);
    r.err_has("forbidden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_is_refused() {
    let c = TestCluster::start(3).await;
    let m = Mount::start(&c, &config_of(&c)).await;
    let api = &m.api;
    // Root's, 0700.
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let secret = base.join("secret.txt");
    write_file(&secret, b"root's secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let private = base.join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let stored = base.join("stored.txt");
    write_file(&stored, b"stored by root");
    let up = api
        .post("/store/upload", json!({ "filename": s(&stored) }))
        .await;
    let hash = up.data()["filehash"].as_str().unwrap().to_string();
    let download = |local: &Path| json!({"filename": s(&stored), "filehash": hash, "filesize": 14, "local": s(local)});

    // Reading root's 0600 file by storing it: refused, nothing stored.
    forbidden(&curl(
        api,
        true,
        "/store/upload",
        json!({ "filename": s(&secret) }),
    ));
    forbidden(&curl(
        api,
        true,
        "/store/uploaddir",
        json!({ "parent": s(base) }),
    ));
    let r = curl(api, true, "/store/list", json!({ "path": s(base) }));
    forbidden(&r);
    assert!(!r.body.to_string().contains("stored.txt"), "{}", r.body);
    // Writing into the 0700 dir by downloading: refused, nothing made.
    forbidden(&curl(
        api,
        true,
        "/store/download",
        download(&private.join("x")),
    ));
    forbidden(&curl(
        api,
        true,
        "/store/downloaddir",
        json!({ "parent": s(base), "local": s(&private.join("tree")) }),
    ));
    assert_eq!(std::fs::read_dir(&private).unwrap().count(), 0);
    forbidden(&curl(
        api,
        true,
        "/store/remove",
        json!({ "target": s(&stored) }),
    ));
    assert_eq!(names(&list(api, s(base)).await), [s(&stored)]);

    // Root's plain curl is served.
    let mine = private.join("mine.txt");
    curl(api, false, "/store/download", download(&mine)).data();
    assert_eq!(std::fs::read(&mine).unwrap(), b"stored by root");
}

// ---- /store/upload ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_stores_a_local_file_at_its_path() {
    let c = TestCluster::start(6).await;
    let m = Mount::start(&c, &config_of(&c)).await;
    let api = &m.api;
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("up").join("a.bin");
    let v1 = random_bytes(300 << 10, 1);
    write_file(&local, &v1);
    let path = s(&local);
    let body =
        |newversion: bool| json!({"filename": path, "interactive": true, "newversion": newversion});

    let r = api.post("/store/upload", body(false)).await;
    let d = r.data();
    assert_eq!(d["filename"], json!(path));
    assert_eq!(d["filesize"], json!(300 << 10));
    assert_eq!(d["folder"], json!(false));
    assert_eq!(d["unchanged"], json!(false));
    assert_eq!(d["version"], json!(1));
    assert!(d["id"].as_str().unwrap().parse::<i64>().is_ok());
    assert_eq!(d["filehash"], json!(object_sha1(&c, path).await));
    // The mount shows it at the same path.
    assert_eq!(std::fs::read(m.path(path)).unwrap(), v1);
    assert_eq!(api.progress(&[path]).await[path], json!(1.0));

    // The same content again: nothing to do.
    let r = api.post("/store/upload", body(false)).await;
    assert_eq!(r.data()["unchanged"], json!(true));
    assert_eq!(r.data()["filehash"], d["filehash"]);
    // Other content: refused without newversion, a new version with it.
    let v2 = random_bytes(300 << 10, 2);
    std::fs::write(&local, &v2).unwrap();
    api.post("/store/upload", body(false))
        .await
        .err_has("newversion");
    let r = api.post("/store/upload", body(true)).await;
    assert_eq!(r.data()["version"], json!(2));
    assert_eq!(r.data()["unchanged"], json!(false));
    assert_ne!(r.data()["filehash"], d["filehash"]);
    let back = tmp.path().join("back");
    assert_ok(&c.get(path, &back, true), "get");
    assert_eq!(std::fs::read(&back).unwrap(), v2);
    // Defaults: interactive, no new version.
    let r = api.post("/store/upload", json!({ "filename": path })).await;
    assert_eq!(r.data()["unchanged"], json!(true));

    // Failures.
    let missing = tmp.path().join("missing");
    api.post("/store/upload", json!({"filename": s(&missing)}))
        .await
        .err_has("cannot read");
    api.post("/store/upload", json!({"filename": "rel/a.bin"}))
        .await
        .err_has("not an absolute path");
    api.post("/store/upload", json!({"filename": s(tmp.path())}))
        .await
        .err_has("/store/uploaddir");
    api.post("/store/upload", json!({"interactive": true}))
        .await
        .err_has("missing field `filename`");
    api.post(
        "/store/upload",
        json!({"filename": path, "newversion": "yes"}),
    )
    .await
    .err_has("bad request body");
    // A folder in the store where the file would go.
    let clash = tmp.path().join("clash");
    write_file(&clash, b"x");
    std::fs::create_dir_all(m.path(s(&clash))).unwrap();
    api.post("/store/upload", json!({"filename": s(&clash)}))
        .await
        .err_has("is a folder");
    api.refuses_get("/store/upload").await.err_has("takes POST");
}

/// A file of several partitions lists the SHA-1 of its stored bytes, the
/// same however it was written: through the sidecar, or through the mount,
/// which uploads partitions as they fill; unencrypted, that is the SHA-1 of
/// its bytes. An edit in place that leaves partitions unread lists another
/// hash (of its partition list) until the file is written whole again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filehash_of_a_file_of_partitions_is_the_sha1_of_its_stored_bytes() {
    let c = TestCluster::start(6).await;
    let m = Mount::start(&c, &config_of(&c)).await;
    let api = &m.api;
    let tmp = tempfile::tempdir().unwrap();
    let mut data = random_bytes((10 << 20) + 12345, 31);
    let local = tmp.path().join("big.bin");
    write_file(&local, &data);
    let path = s(&local);
    let hash_of = |e: &Value| e["filehash"].as_str().unwrap().to_string();
    let listed = |dir: &'static str| async move { hash_of(&list(api, dir).await[0]) };

    // Unencrypted (`tfsfs put`): the SHA-1 of the bytes, over 3 partitions.
    assert_ok(&c.put(&local, "/plain/big.bin", false), "put");
    assert_eq!(listed("/plain").await, sha1_hex(&data));
    assert_eq!(c.layout("/plain/big.bin").await.fragments.len(), 3);

    // Encrypted, through the sidecar and through the mount: one hash.
    let r = api.post("/store/upload", json!({ "filename": path })).await;
    let by_sidecar = hash_of(r.data());
    assert_ne!(by_sidecar, sha1_hex(&data), "stored bytes are ciphertext");
    assert_eq!(c.layout(path).await.fragments.len(), 3);
    let on_mount = m.path("/copy/big.bin");
    std::fs::create_dir_all(on_mount.parent().unwrap()).unwrap();
    let cp = |from: &Path, to: &Path| {
        let st = Command::new("cp").arg(from).arg(to).status().unwrap();
        assert!(st.success(), "cp");
    };
    cp(&local, &on_mount);
    assert_eq!(listed("/copy").await, by_sidecar);
    let r = api.post("/store/upload", json!({ "filename": path })).await;
    assert_eq!(
        r.data()["unchanged"],
        json!(true),
        "the sidecar sees it stored"
    );

    // One byte changed in place: partitions 0 and 2 are never read.
    let at = 5 << 20;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&on_mount)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"!", at).unwrap();
    drop(f);
    data[at as usize] = b'!';
    assert_eq!(std::fs::read(&on_mount).unwrap(), data);
    let edited = listed("/copy").await;
    assert_ne!(edited, by_sidecar);

    // Written whole again, it lists the SHA-1 of its stored bytes.
    write_file(&local, &data);
    cp(&local, &on_mount);
    let rewritten = listed("/copy").await;
    assert_ne!(rewritten, edited);
    let r = api
        .post(
            "/store/upload",
            json!({"filename": path, "newversion": true}),
        )
        .await;
    assert_eq!(hash_of(r.data()), rewritten);
}

/// The stored bytes of `plain` cut into partitions of `ps`, each encrypted
/// as a client does: under one key over the whole file, nonce = its index
/// (`per_file`, how a file of several partitions was stored as one object),
/// or each under its own key, nonce 0 (partition objects).
fn sealed_as(acct: &AccountKey, d: Derivation, plain: &[u8], ps: usize, per_file: bool) -> Vec<u8> {
    let key = |bytes: &[u8]| {
        let mut h = acct.key_hasher(ps as u64, d);
        h.update(bytes);
        PartitionCipher::new(&h.finish())
    };
    let whole = key(plain);
    let mut out = Vec::new();
    for (i, part) in plain.chunks(ps).enumerate() {
        let mut buf = part.to_vec();
        if per_file {
            whole.encrypt_in_place(i as u64, &mut buf);
        } else {
            key(part).encrypt_in_place(0, &mut buf);
        }
        out.extend_from_slice(&buf);
    }
    out
}

/// The sidecar's "unchanged?" (`content_matches`) knows a file by the hash
/// of what this client stores (partition keys by keyed BLAKE3) and by what
/// clients stored before it: partition keys by HMAC-SHA256, and a file of
/// several partitions stored as one object under one HMAC-SHA256 key. A
/// byte changed, or a layout never stored (one object under a BLAKE3 key),
/// matches none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_matches_knows_files_stored_by_either_key_derivation() {
    let c = TestCluster::start(1).await;
    let meta = MetaClient::connect(&c.meta.url, &c.appkey, c.uid)
        .await
        .unwrap();
    let ps = meta.policy().await.unwrap().partition_size as usize;
    let acct = AccountKey::derive(&[42u8; 32], c.appid, c.uid);
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("f");
    for len in [100 << 10, 2 * ps + 1000] {
        let plain = random_bytes(len, len as u64);
        write_file(&local, &plain);
        let matches = |hash: String| {
            let (meta, acct, local) = (&meta, &acct, &local);
            async move {
                content_matches(meta, Some(acct), local, &hash)
                    .await
                    .unwrap()
            }
        };
        let hash = |d, per_file| sha1_hex(&sealed_as(&acct, d, &plain, ps, per_file));
        let new = hash(Derivation::Blake3, false);
        let old = hash(Derivation::HmacSha256, false);
        assert_ne!(new, old, "the derivations encrypt differently");
        assert!(matches(new.clone()).await, "{len}: as stored now");
        assert!(matches(old.clone()).await, "{len}: as stored before");
        if len > ps {
            assert!(
                matches(hash(Derivation::HmacSha256, true)).await,
                "old whole object"
            );
            assert!(
                !matches(hash(Derivation::Blake3, true)).await,
                "never stored so"
            );
        }
        let plain_hash = sha1_hex(&plain);
        assert!(content_matches(&meta, None, &local, &plain_hash)
            .await
            .unwrap());
        assert!(
            !matches(plain_hash).await,
            "encrypted, the plaintext's hash is not"
        );

        let mut changed = plain.clone();
        changed[len / 2] ^= 1;
        write_file(&local, &changed);
        assert!(!matches(new).await, "{len}: changed");
        assert!(!matches(old).await, "{len}: changed");
    }
}

/// The acceptance run: a 100 MiB upload in the background, its progress,
/// the listing with the right hash, and a download compared with `cmp`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_upload_of_100_mib_then_list_and_download() {
    let c = TestCluster::start(6).await;
    let m = Mount::start(&c, &config_of(&c)).await;
    let api = &m.api;
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("big").join("hundred.bin");
    write_file(&local, &random_bytes(100 << 20, 100));
    let path = s(&local);

    let t0 = Instant::now();
    let r = api
        .post(
            "/store/upload",
            json!({"filename": path, "interactive": false, "newversion": false}),
        )
        .await;
    let d = r.data();
    assert_eq!(d["filename"], json!(path));
    assert_eq!(d["filesize"], json!(100 << 20));
    assert_eq!(d["started"], json!(true));
    let answered = t0.elapsed();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let p = api.progress(&[path]).await;
        let f = p
            .get(path)
            .and_then(Value::as_f64)
            .expect("a background upload shows in progress at once");
        assert!((0.0..=1.0).contains(&f), "fraction {f}");
        if let Some(last) = seen.last() {
            assert!(f >= *last, "progress went back: {seen:?} then {f}");
        }
        seen.push(f);
        if f >= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "upload never finished: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen[0] < 1.0, "answered after the upload ({answered:?})");
    assert!(seen.len() > 2, "{seen:?}");
    eprintln!(
        "100 MiB: answered in {answered:?}, done after {:?}, {} polls",
        t0.elapsed(),
        seen.len()
    );

    // Listed with the hash of what is stored.
    let parent = s(local.parent().unwrap());
    let e = list(api, parent).await;
    assert_eq!(e.len(), 1);
    assert_eq!(e[0]["filename"], json!(path));
    assert_eq!(e[0]["filesize"], json!(100 << 20));
    assert_eq!(e[0]["folder"], json!(false));
    // The hash of what is stored is the one the sidecar computes for the
    // local file.
    let hash = e[0]["filehash"].as_str().unwrap().to_string();
    let again = api.post("/store/upload", json!({ "filename": path })).await;
    assert_eq!(again.data()["unchanged"], json!(true));
    assert_eq!(again.data()["filehash"], json!(hash));

    // Downloaded elsewhere: the same bytes.
    let other = tmp.path().join("elsewhere").join("copy.bin");
    let r = api
        .post(
            "/store/download",
            json!({"filehash": hash, "filesize": 100 << 20, "filename": path, "local": s(&other)}),
        )
        .await;
    let d = r.data();
    assert_eq!(d["filename"], json!(path));
    assert_eq!(d["local"], json!(s(&other)));
    assert_eq!(d["filesize"], json!(100 << 20));
    assert_eq!(d["filehash"], json!(hash));
    let cmp = Command::new("cmp")
        .arg(&local)
        .arg(&other)
        .status()
        .unwrap();
    assert!(cmp.success(), "cmp differs");
}

// ---- /store/uploaddir ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploaddir_stores_a_local_tree() {
    let c = TestCluster::start(6).await;
    let m = Mount::start(&c, &config_of(&c)).await;
    let api = &m.api;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tree");
    write_file(&root.join("a.txt"), b"alpha");
    write_file(&root.join("sub/b.bin"), &random_bytes(2 << 20, 2));
    write_file(&root.join("sub/deeper/c.txt"), b"gamma");
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::os::unix::fs::symlink("a.txt", root.join("link")).unwrap();
    let rs = s(&root);

    let r = api.post("/store/uploaddir", json!({ "parent": rs })).await;
    let d = r.data();
    assert_eq!(d["parent"], json!(rs));
    assert_eq!(d["folders"], json!(4), "{d}");
    assert_eq!(d["files"], json!(3));
    assert_eq!(d["unchanged"], json!(0));
    assert_eq!(d["bytes"], json!(5 + (2 << 20) + 5));
    assert_eq!(d["skipped"], json!(1));
    assert_eq!(d["failed"], json!(0));
    let e = list(api, rs).await;
    assert_eq!(
        names(&e),
        [
            format!("{rs}/empty"),
            format!("{rs}/sub"),
            format!("{rs}/a.txt")
        ]
    );
    assert_eq!(
        std::fs::read(m.path(&format!("{rs}/sub/deeper/c.txt"))).unwrap(),
        b"gamma"
    );
    let b = format!("{rs}/sub/b.bin");
    let sub = list(api, &format!("{rs}/sub")).await;
    assert_eq!(sub[1]["filename"], json!(b));
    assert_eq!(sub[1]["filehash"], json!(object_sha1(&c, &b).await));

    // Again: all unchanged. Changed content is refused without newversion.
    let r = api.post("/store/uploaddir", json!({ "parent": rs })).await;
    assert_eq!(r.data()["files"], json!(0));
    assert_eq!(r.data()["unchanged"], json!(3));
    std::fs::write(root.join("a.txt"), b"ALPHA!").unwrap();
    api.post("/store/uploaddir", json!({ "parent": rs }))
        .await
        .err_has("1 of 7 entries failed");
    let r = api
        .post(
            "/store/uploaddir",
            json!({ "parent": rs, "newversion": true }),
        )
        .await;
    assert_eq!(r.data()["files"], json!(3));

    // In the background: every file shows in progress and reaches 1.
    let bg = tmp.path().join("bg");
    for i in 0..3 {
        write_file(&bg.join(format!("f{i}")), &random_bytes(1 << 20, i));
    }
    let r = api
        .post(
            "/store/uploaddir",
            json!({ "parent": s(&bg), "interactive": false }),
        )
        .await;
    assert_eq!(r.data()["started"], json!(true));
    assert_eq!(r.data()["files"], json!(3));
    let files: Vec<String> = (0..3).map(|i| format!("{}/f{i}", s(&bg))).collect();
    let want: Vec<&str> = files.iter().map(String::as_str).collect();
    for _ in 0..600 {
        let p = api.progress(&want).await;
        assert_eq!(p.len(), 3, "{p:?}");
        if p.values().all(|f| f.as_f64() == Some(1.0)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(list(api, s(&bg)).await.len(), 3);

    // Failures.
    api.post(
        "/store/uploaddir",
        json!({ "parent": s(&root.join("a.txt")) }),
    )
    .await
    .err_has("not a directory");
    api.post(
        "/store/uploaddir",
        json!({ "parent": s(&tmp.path().join("none")) }),
    )
    .await
    .err_has("cannot read");
    api.post("/store/uploaddir", json!({}))
        .await
        .err_has("missing field `parent`");
    api.refuses_get("/store/uploaddir").await.err();
}

// ---- /store/download ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_checks_hash_and_size() {
    let c = TestCluster::start(6).await;
    let m = Mount::start(&c, &config_of(&c)).await;
    let api = &m.api;
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("dl").join("f.bin");
    let data = random_bytes(6 << 20, 6);
    write_file(&local, &data);
    let path = s(&local);
    let up = api.post("/store/upload", json!({ "filename": path })).await;
    let hash = up.data()["filehash"].as_str().unwrap().to_string();
    std::fs::remove_file(&local).unwrap();

    // To the same path by default.
    let r = api
        .post(
            "/store/download",
            json!({"filehash": hash, "filesize": 6 << 20, "filename": path}),
        )
        .await;
    let d = r.data();
    assert_eq!(d["filename"], json!(path));
    assert_eq!(d["local"], json!(path));
    assert_eq!(d["filesize"], json!(6 << 20));
    assert_eq!(d["filehash"], json!(hash));
    assert_eq!(std::fs::read(&local).unwrap(), data);
    assert_eq!(api.progress(&[path]).await[path], json!(1.0));
    // Upper-case hashes are the same hash.
    let other = tmp.path().join("o.bin");
    let r = api
        .post(
            "/store/download",
            json!({"filehash": hash.to_uppercase(), "filesize": 6 << 20, "filename": path, "local": s(&other)}),
        )
        .await;
    r.data();
    assert_eq!(std::fs::read(&other).unwrap(), data);
    // "parent" without a filename downloads a folder.
    let r = api
        .post(
            "/store/download",
            json!({"parent": s(local.parent().unwrap()), "local": s(&tmp.path().join("asdir"))}),
        )
        .await;
    assert_eq!(r.data()["files"], json!(1));
    assert_eq!(std::fs::read(tmp.path().join("asdir/f.bin")).unwrap(), data);

    // Failures, and nothing is written by them.
    let bad = tmp.path().join("bad.bin");
    api.post(
        "/store/download",
        json!({"filehash": sha1_hex(b"other"), "filesize": 6 << 20, "filename": path, "local": s(&bad)}),
    )
    .await
    .err_has("filehash");
    api.post(
        "/store/download",
        json!({"filehash": hash, "filesize": 5, "filename": path, "local": s(&bad)}),
    )
    .await
    .err_has("filesize");
    assert!(!bad.exists());
    api.post(
        "/store/download",
        json!({"filehash": hash, "filesize": 1, "filename": format!("{path}.none")}),
    )
    .await
    .err_has("no such file");
    api.post(
        "/store/download",
        json!({"filehash": "", "filesize": 0, "filename": s(local.parent().unwrap())}),
    )
    .await
    .err_has("is a folder");
    api.post("/store/download", json!({"filehash": hash, "filesize": 1}))
        .await
        .err_has("missing field `filename`");
    api.post("/store/download", json!({"filename": path, "filesize": 1}))
        .await
        .err_has("missing field `filehash`");
    api.refuses_get("/store/download").await.err();
}

// ---- /store/downloaddir ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloaddir_recreates_a_tree() {
    let c = TestCluster::start(6).await;
    let m = Mount::start(&c, &config_of(&c)).await;
    let api = &m.api;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("src");
    let files = [
        ("x.txt", random_bytes(10, 1)),
        ("d1/y.bin", random_bytes(3 << 20, 2)),
        ("d1/d2/z.txt", random_bytes(1000, 3)),
    ];
    for (rel, data) in &files {
        write_file(&root.join(rel), data);
    }
    std::fs::create_dir_all(root.join("hollow")).unwrap();
    api.post("/store/uploaddir", json!({ "parent": s(&root) }))
        .await
        .data();
    std::fs::remove_dir_all(&root).unwrap();

    let r = api
        .post("/store/downloaddir", json!({ "parent": s(&root) }))
        .await;
    let d = r.data();
    assert_eq!(d["parent"], json!(s(&root)));
    assert_eq!(d["local"], json!(s(&root)));
    assert_eq!(d["files"], json!(3));
    assert_eq!(d["folders"], json!(3));
    assert_eq!(d["bytes"], json!(10 + (3 << 20) + 1000));
    assert_eq!(d["failed"], json!(0));
    for (rel, data) in &files {
        assert_eq!(&std::fs::read(root.join(rel)).unwrap(), data, "{rel}");
    }
    assert!(root.join("hollow").is_dir());
    // Elsewhere.
    let other = tmp.path().join("other");
    let r = api
        .post(
            "/store/downloaddir",
            json!({ "parent": s(&root.join("d1")), "local": s(&other) }),
        )
        .await;
    assert_eq!(r.data()["files"], json!(2));
    assert_eq!(std::fs::read(other.join("d2/z.txt")).unwrap(), files[2].1);

    // Failures.
    api.post(
        "/store/downloaddir",
        json!({ "parent": s(&root.join("x.txt")) }),
    )
    .await
    .err_has("is a file");
    api.post("/store/downloaddir", json!({ "parent": "/no/such/dir" }))
        .await
        .err_has("no such file or folder");
    api.post("/store/downloaddir", json!({ "local": "/tmp" }))
        .await
        .err_has("missing field `parent`");
    api.refuses_get("/store/downloaddir").await.err();
}

// ---- /store/remove ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_files_and_folders() {
    let c = TestCluster::start(3).await;
    let m = Mount::start(&c, &config_of(&c)).await;
    let api = &m.api;
    std::fs::create_dir_all(m.path("/r/empty")).unwrap();
    std::fs::create_dir_all(m.path("/r/full/sub")).unwrap();
    std::fs::write(m.path("/r/f.txt"), b"f").unwrap();
    std::fs::write(m.path("/r/f2.txt"), b"f2").unwrap();
    std::fs::write(m.path("/r/full/x.txt"), b"x").unwrap();
    std::fs::write(m.path("/r/full/sub/y.txt"), b"y").unwrap();

    let r = api
        .post("/store/remove", json!({"target": "/r/f.txt"}))
        .await;
    assert_eq!(
        r.data(),
        &json!({"target": "/r/f.txt", "folder": false, "removed": 1})
    );
    api.post("/store/remove", json!({"target": "/r/empty"}))
        .await
        .err_has("set folder:true");
    api.post(
        "/store/remove",
        json!({"target": "/r/f2.txt", "folder": true}),
    )
    .await
    .err_has("is a file");
    api.post(
        "/store/remove",
        json!({"target": "/r/full", "folder": true}),
    )
    .await
    .err_has("not empty");
    api.post(
        "/store/remove",
        json!({"target": "/r/full", "folder": true, "recursion": false}),
    )
    .await
    .err_has("recursion:true");
    let r = api
        .post(
            "/store/remove",
            json!({"target": "/r/empty", "folder": true}),
        )
        .await;
    assert_eq!(
        r.data(),
        &json!({"target": "/r/empty", "folder": true, "removed": 1})
    );
    let r = api
        .post(
            "/store/remove",
            json!({"target": "/r/full", "folder": true, "recursion": true}),
        )
        .await;
    assert_eq!(
        r.data(),
        &json!({"target": "/r/full", "folder": true, "removed": 4})
    );
    assert_eq!(names(&list(api, "/r").await), ["/r/f2.txt"]);
    let usage = api.get("/usage/amount").await;
    assert_eq!(usage.data()["files"], json!(1));

    // Failures.
    api.post("/store/remove", json!({"target": "/r/none"}))
        .await
        .err_has("no such file or folder");
    api.post(
        "/store/remove",
        json!({"target": "/", "folder": true, "recursion": true}),
    )
    .await
    .err_has("root");
    api.post("/store/remove", json!({"folder": true}))
        .await
        .err_has("missing field `target`");
    api.refuses_get("/store/remove").await.err();
}

// ---- /store/folder/add ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folder_add_makes_folders() {
    let c = TestCluster::start(3).await;
    let m = Mount::start(&c, &config_of(&c)).await;
    let api = &m.api;
    let r = api
        .post(
            "/store/folder/add",
            json!({"parent": "/", "": ["abc", "tmp"], "interactive": true}),
        )
        .await;
    assert_eq!(r.data(), &json!(["/abc", "/tmp"]));
    assert!(m.path("/abc").is_dir());
    assert!(m.path("/tmp").is_dir());
    // Parents are made too, and existing folders are fine.
    let r = api
        .post(
            "/store/folder/add",
            json!({"parent": "/deep/er", "folders": ["x"]}),
        )
        .await;
    assert_eq!(r.data(), &json!(["/deep/er/x"]));
    let r = api
        .post("/store/folder/add", json!({"parent": "/", "": ["abc"]}))
        .await;
    assert_eq!(r.data(), &json!(["/abc"]));
    let e = list(api, "/").await;
    assert_eq!(names(&e), ["/abc", "/deep", "/tmp"]);
    assert!(e.iter().all(|e| e["folder"] == json!(true)));

    // Failures.
    std::fs::write(m.path("/file.txt"), b"f").unwrap();
    api.post(
        "/store/folder/add",
        json!({"parent": "/file.txt", "": ["x"]}),
    )
    .await
    .err();
    api.post(
        "/store/folder/add",
        json!({"parent": "/", "": ["tmp", "file.txt"]}),
    )
    .await
    .err_has("is a file");
    api.post("/store/folder/add", json!({"parent": "/", "": ["a/b"]}))
        .await
        .err_has("not a folder name");
    api.post("/store/folder/add", json!({"parent": "/", "": [".."]}))
        .await
        .err_has("not a folder name");
    api.post("/store/folder/add", json!({"parent": "/", "": []}))
        .await
        .err_has("no folder names");
    api.post("/store/folder/add", json!({"parent": "/"}))
        .await
        .err_has("missing field");
    api.post("/store/folder/add", json!({"": ["x"]}))
        .await
        .err_has("missing field `parent`");
    api.refuses_get("/store/folder/add").await.err();
}

// ---- /store/progress ----

/// The acceptance run: `cp` of 200 MiB into the mount while polling
/// `/store/progress`: the fractions rise monotonically to 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_follows_cp_on_the_mount() {
    let c = TestCluster::start(6).await;
    let m = Mount::start(&c, &config_of(&c)).await;
    let api = &m.api;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("big.bin");
    write_file(&src, &random_bytes(200 << 20, 200));
    assert!(api.progress(&[]).await.is_empty());

    let t0 = Instant::now();
    let mut cp = Command::new("cp")
        .arg(&src)
        .arg(m.path("/big.bin"))
        .spawn()
        .unwrap();
    let mut seen: Vec<f64> = Vec::new();
    let status = loop {
        let all = api.progress(&[]).await;
        if let Some(f) = all.get("/big.bin").and_then(Value::as_f64) {
            assert!((0.0..=1.0).contains(&f), "fraction {f}");
            if let Some(last) = seen.last() {
                assert!(f >= *last, "progress went back: {seen:?} then {f}");
            }
            seen.push(f);
        }
        if let Some(st) = cp.try_wait().unwrap() {
            break st;
        }
        assert!(t0.elapsed() < Duration::from_secs(600), "cp hangs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "cp failed");
    let last = api.progress(&["/big.bin"]).await;
    assert_eq!(last.len(), 1);
    assert_eq!(last["/big.bin"], json!(1.0));
    let between = seen.iter().filter(|f| **f > 0.0 && **f < 1.0).count();
    assert!(between >= 2, "too few samples in flight: {seen:?}");
    eprintln!(
        "cp 200 MiB: {:?}, {} samples, {between} in flight",
        t0.elapsed(),
        seen.len()
    );
    let cmp = Command::new("cmp")
        .arg(&src)
        .arg(m.path("/big.bin"))
        .status()
        .unwrap();
    assert!(cmp.success());

    // A background upload that fails shows as -1.
    let clash = tmp.path().join("clash.txt");
    write_file(&clash, b"one");
    api.post("/store/upload", json!({"filename": s(&clash)}))
        .await
        .data();
    std::fs::write(&clash, b"two").unwrap();
    let r = api
        .post(
            "/store/upload",
            json!({"filename": s(&clash), "interactive": false}),
        )
        .await;
    assert_eq!(r.data()["started"], json!(true));
    let mut failed = false;
    for _ in 0..200 {
        if api.progress(&[s(&clash)]).await[s(&clash)] == json!(-1.0) {
            failed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(failed, "a failed background upload shows -1");
    // Every transfer, or those asked for; unknown ones are left out.
    let all = api.progress(&[]).await;
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all["/big.bin"], json!(1.0));
    assert!(api.progress(&["/none"]).await.is_empty());
    // An empty body is {"files": []}.
    assert_eq!(
        api.post_raw("/store/progress", "")
            .await
            .data()
            .as_object()
            .unwrap()
            .len(),
        2
    );

    // Failures.
    api.post("/store/progress", json!({"files": "/big.bin"}))
        .await
        .err_has("bad request body");
    api.post_raw("/store/progress", "files=[]")
        .await
        .err_has("bad request body");
    api.refuses_get("/store/progress")
        .await
        .err_has("takes POST");
}

// ---- /store/register, /store/verifyemail, /store/resendemail ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_verify_and_resend_over_smtp() {
    let sink = SmtpSink::start();
    let c = TestCluster::start_with(
        3,
        &[
            "--smtp",
            &sink.url,
            "--resend-interval-secs",
            "2",
            "--code-attempts",
            "3",
        ],
    )
    .await;
    let config = tempfile::tempdir().unwrap();
    let m = Mount::start(&c, config.path()).await;
    let api = &m.api;
    let email = "Alice@Example.com";

    let r = api.post("/store/register", json!({ "email": email })).await;
    assert_eq!(
        r.data(),
        &json!({"email": "alice@example.com", "code_ttl_secs": 900, "resend_after_secs": 2})
    );
    let first = sink.wait_for(1).await;
    assert_eq!(first.to, ["alice@example.com"]);
    assert!(
        first.data.contains("Subject: tfsfs verification code"),
        "{}",
        first.data
    );
    let code1 = code_in(&first.data);
    // Too soon for another code.
    api.post("/store/resendemail", json!({}))
        .await
        .err_has("ask for another in");
    // A wrong code is counted.
    let wrong = if code1 == "000000" {
        "000001"
    } else {
        "000000"
    };
    api.post("/store/verifyemail", json!({ "code": wrong }))
        .await
        .err_has("wrong code: 2 attempts left");
    api.post("/store/verifyemail", json!({ "code": "12ab" }))
        .await
        .err_has("6 digits");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = api.post("/store/resendemail", json!({})).await;
    assert_eq!(r.data()["email"], json!("alice@example.com"));
    let second = sink.wait_for(2).await;
    let code2 = code_in(&second.data);
    if code2 != code1 {
        // The first code no longer works.
        api.post("/store/verifyemail", json!({ "code": code1 }))
            .await
            .err_has("wrong code");
    }
    let r = api
        .post("/store/verifyemail", json!({ "code": code2 }))
        .await;
    let d = r.data();
    assert_eq!(d["email"], json!("alice@example.com"));
    assert_eq!(d["uid"], json!(1));
    let appid = d["appid"].as_u64().unwrap();
    assert_ne!(appid, c.appid, "an account is an app of its own");
    let appkey = d["appkey"].as_str().unwrap().to_string();
    assert_eq!(appkey.len(), 48);
    let saved = config.path().join("tfsfs/account.json");
    assert_eq!(d["saved"], json!(s(&saved)));
    let acct: Value = serde_json::from_slice(&std::fs::read(&saved).unwrap()).unwrap();
    assert_eq!(
        acct,
        json!({"meta_url": c.meta.url, "email": "alice@example.com", "appkey": appkey, "appid": appid, "uid": 1})
    );
    assert_eq!(
        std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The CLI uses the saved account when given none.
    let tmp = tempfile::tempdir().unwrap();
    write_file(&tmp.path().join("n.txt"), b"new account");
    let cli = |args: &[&str]| {
        Command::new(bin())
            .args(args)
            .env("XDG_CONFIG_HOME", config.path())
            .env_remove("TFSFS_META")
            .env_remove("TFSFS_APPKEY")
            .env_remove("TFSFS_UID")
            .output()
            .unwrap()
    };
    assert_ok(
        &cli(&["put", s(&tmp.path().join("n.txt")), "/n.txt"]),
        "put",
    );
    let out = cli(&["ls", "/"]);
    assert_ok(&out, "ls");
    assert!(String::from_utf8_lossy(&out.stdout).contains("n.txt"));
    let listing: Value = reqwest::get(format!(
        "{}/v2/{appkey}/metadata/{appid}/1/dir/",
        c.meta.url
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(listing[0]["NAME"], json!("n.txt"), "{listing}");
    // So does a mount.
    drop(m);
    let m2 = Mount::start_as(&c, None, config.path()).await;
    assert_eq!(std::fs::read(m2.path("/n.txt")).unwrap(), b"new account");
    drop(m2);

    // Failures.
    let m = Mount::start(&c, config.path()).await;
    let api = &m.api;
    api.post("/store/register", json!({ "email": "alice@example.com" }))
        .await
        .err_has("already registered");
    api.post("/store/register", json!({ "email": "not-an-address" }))
        .await
        .err_has("not an e-mail address");
    api.post("/store/register", json!({}))
        .await
        .err_has("missing field `email`");
    api.post("/store/verifyemail", json!({ "code": "123456" }))
        .await
        .err_has("call /store/register first");
    api.post(
        "/store/verifyemail",
        json!({ "code": "123456", "email": "bob@example.com" }),
    )
    .await
    .err_has("no registration is pending for bob@example.com");
    api.post("/store/verifyemail", json!({}))
        .await
        .err_has("missing field `code`");
    api.post(
        "/store/resendemail",
        json!({ "email": "carol@example.com" }),
    )
    .await
    .err_has("register first");
    api.post(
        "/store/register",
        json!({ "email": "dave@example.com", "resend": true }),
    )
    .await
    .err_has("register first");
    for route in [
        "/store/register",
        "/store/verifyemail",
        "/store/resendemail",
    ] {
        api.refuses_get(route).await.err_has("takes POST");
    }
    assert_eq!(sink.mails().len(), 2, "failures send no mail");
}

/// Without --smtp the code lands in the outbox; codes expire, and wrong
/// codes use up a code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_codes_expire_and_wrong_ones_are_limited() {
    let c = TestCluster::start_with(
        3,
        &[
            "--code-ttl-secs",
            "2",
            "--code-attempts",
            "2",
            "--resend-interval-secs",
            "0",
        ],
    )
    .await;
    let config = tempfile::tempdir().unwrap();
    let m = Mount::start(&c, config.path()).await;
    let api = &m.api;
    let outbox = c.dir.path().join("meta/outbox");
    let read_code = |n: usize| {
        let mut files: Vec<_> = std::fs::read_dir(&outbox)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert_eq!(files.len(), n, "{files:?}");
        code_in(&std::fs::read_to_string(&files[n - 1]).unwrap())
    };
    api.post("/store/register", json!({ "email": "erin@example.com" }))
        .await
        .data();
    let code = read_code(1);
    let wrong = if code == "999999" { "999998" } else { "999999" };
    api.post("/store/verifyemail", json!({ "code": wrong }))
        .await
        .err_has("1 attempts left");
    api.post("/store/verifyemail", json!({ "code": wrong }))
        .await
        .err_has("no attempts left");
    // The right code no longer helps.
    api.post("/store/verifyemail", json!({ "code": code }))
        .await
        .err_has("wrong codes were entered");
    // A new code, left to expire.
    api.post(
        "/store/register",
        json!({ "email": "erin@example.com", "resend": true }),
    )
    .await
    .data();
    let code = read_code(2);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    api.post("/store/verifyemail", json!({ "code": code }))
        .await
        .err_has("expired");
    // A fresh one in time works.
    api.post("/store/resendemail", json!({ "email": "erin@example.com" }))
        .await
        .data();
    let code = read_code(3);
    let r = api
        .post("/store/verifyemail", json!({ "code": code }))
        .await;
    assert_eq!(r.data()["email"], json!("erin@example.com"));
    api.post(
        "/store/verifyemail",
        json!({ "code": code, "email": "erin@example.com" }),
    )
    .await
    .err_has("already registered");
}

// ---- /order/* ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packages_list_and_get() {
    let c = TestCluster::start(3).await;
    let added = admin(
        &c,
        &[
            "package",
            "add",
            "--name",
            "tiny",
            "--capacity",
            "64M",
            "--days",
            "7",
            "--price",
            "50",
        ],
    );
    assert_eq!(added.len(), 1);
    let tiny_id = added[0]["id"].as_i64().unwrap();
    let m = Mount::start(&c, &config_of(&c)).await;
    let api = &m.api;

    let r = api.get("/order/packages").await;
    let p = r.data().as_array().unwrap();
    assert_eq!(p.len(), 5, "{p:?}");
    assert_eq!(
        p[0],
        json!({"id": 1, "name": "basic 200 GiB / 30 days", "capacity": 200u64 << 30,
               "duration_days": 30, "price_cents": 299, "active": true})
    );
    assert_eq!(
        p[4],
        json!({"id": tiny_id, "name": "tiny", "capacity": 64 << 20,
               "duration_days": 7, "price_cents": 50, "active": true})
    );
    let r = api.get(&format!("/order/package/get?id={tiny_id}")).await;
    assert_eq!(r.data(), &p[4]);
    // A retired package is no longer listed, but can still be looked at.
    admin(&c, &["package", "remove", &tiny_id.to_string()]);
    let r = api.get("/order/packages").await;
    assert_eq!(r.data().as_array().unwrap().len(), 4);
    let r = api.get(&format!("/order/package/get?id={tiny_id}")).await;
    assert_eq!(r.data()["active"], json!(false));
    let listed = admin(&c, &["package", "list", "--all"]);
    assert_eq!(listed.len(), 5);
    let changed = admin(&c, &["package", "set", "1", "--price", "199"]);
    assert_eq!(changed[0]["price_cents"], json!(199));
    assert_eq!(
        api.get("/order/package/get?id=1").await.data()["price_cents"],
        json!(199)
    );

    // Failures.
    api.get("/order/package/get?id=999")
        .await
        .err_has("no package 999");
    api.get("/order/package/get?id=abc")
        .await
        .err_has("bad query");
    api.get("/order/package/get")
        .await
        .err_has("missing field `id`");
    for route in ["/order/packages", "/order/package/get?id=1"] {
        api.refuses_post(route).await.err_has("takes GET");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buy_cancel_and_look_up_orders() {
    let c = TestCluster::start(3).await;
    let m = Mount::start(&c, &config_of(&c)).await;
    let api = &m.api;
    assert_eq!(api.get("/order/all").await.data(), &json!([]));

    let r = api
        .post("/order/package/buy", json!({"id": 2, "quanlity": 3}))
        .await;
    let o = r.data().clone();
    let orderid = o["orderid"].as_str().unwrap().to_string();
    assert_eq!(orderid.len(), 36);
    assert_eq!(o["package"], json!(2));
    assert_eq!(o["name"], json!("standard 1 TiB / 30 days"));
    assert_eq!(o["quantity"], json!(3));
    assert_eq!(o["capacity"], json!(3u64 << 40));
    assert_eq!(o["price_cents"], json!(3 * 999));
    assert_eq!(o["status"], json!("paid"));
    assert_eq!(o["active"], json!(true));
    assert_eq!(o["canceled"], Value::Null);
    let created = o["created"].as_i64().unwrap();
    assert!((created - chrono::Utc::now().timestamp()).abs() < 60);
    assert_eq!(o["expires"], json!(created + 30 * 86_400));
    let r = api
        .post(
            "/order/package/buy",
            json!({"id": 1, "quantity": 1, "canceled": false}),
        )
        .await;
    let o1 = r.data().clone();
    assert_eq!(o1["quantity"], json!(1));

    let r = api.get("/order/all").await;
    assert_eq!(r.data(), &json!([o, o1]));
    let r = api.get(&format!("/order/getinfo?orderid={orderid}")).await;
    assert_eq!(r.data(), &o);
    let u = api.get("/usage/amount").await;
    assert_eq!(u.data()["active_orders"], json!(2));
    assert_eq!(
        u.data()["ordered_capacity"],
        json!((3u64 << 40) + (200u64 << 30))
    );

    // Cancel: every active order of that package ends.
    let r = api
        .post("/order/package/buy", json!({"id": 2, "canceled": true}))
        .await;
    let ended = r.data().as_array().unwrap();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0]["orderid"], json!(orderid));
    assert_eq!(ended[0]["status"], json!("canceled"));
    assert_eq!(ended[0]["active"], json!(false));
    assert!(ended[0]["canceled"].as_i64().unwrap() >= created);
    let r = api.get(&format!("/order/getinfo?orderid={orderid}")).await;
    assert_eq!(r.data(), &ended[0]);
    let u = api.get("/usage/amount").await;
    assert_eq!(u.data()["active_orders"], json!(1));
    assert_eq!(u.data()["ordered_capacity"], json!(200u64 << 30));

    // Failures.
    api.post("/order/package/buy", json!({"id": 2, "canceled": true}))
        .await
        .err_has("no active order of package 2");
    api.post("/order/package/buy", json!({"id": 999}))
        .await
        .err_has("no package 999");
    api.post("/order/package/buy", json!({"id": 1, "quantity": 0}))
        .await
        .err_has("quantity");
    api.post("/order/package/buy", json!({"quantity": 1}))
        .await
        .err_has("missing field `id`");
    api.post_raw("/order/package/buy", "{\"id\": ")
        .await
        .err_has("bad request body");
    api.get("/order/getinfo?orderid=00000000-0000-4000-8000-000000000000")
        .await
        .err_has("no order");
    api.get("/order/getinfo")
        .await
        .err_has("missing field `orderid`");
    api.refuses_get("/order/package/buy")
        .await
        .err_has("takes POST");
    for route in ["/order/all", "/order/getinfo?orderid=x"] {
        api.refuses_post(route).await.err_has("takes GET");
    }
    // Another app may not see or make this account's orders.
    let other = c.admin_command().args(["app", "create"]).output().unwrap();
    let other: Value = serde_json::from_slice(&other.stdout).unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/api/ns/{}/1/orders", c.meta.url, c.appid);
    for key in [other["appkey"].as_str().unwrap(), "nonsense", ""] {
        let r = http
            .get(&url)
            .header(tfsfs::proto::APPKEY_HEADER, key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "orders with appkey {key:?}");
        let r = http
            .post(&url)
            .header(tfsfs::proto::APPKEY_HEADER, key)
            .json(&json!({"id": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let r = http
        .get(format!("{}/api/ns/{}/1/usage", c.meta.url, c.appid))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

// ---- /usage/amount and quota ----

/// The acceptance run: an upload over quota fails with EDQUOT; buying a
/// package raises the capacity in /usage/amount and `df`; the upload then
/// succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_quota_and_df_follow_orders() {
    let c = TestCluster::start_with(6, &["--free-capacity", "8388608"]).await;
    admin(
        &c,
        &[
            "package",
            "add",
            "--name",
            "small",
            "--capacity",
            "64M",
            "--days",
            "30",
            "--price",
            "100",
        ],
    );
    let m = Mount::start(&c, &config_of(&c)).await;
    let api = &m.api;
    let r = api.get("/usage/amount").await;
    assert_eq!(
        r.data(),
        &json!({"used": 0, "files": 0, "capacity": 8 << 20, "free_capacity": 8 << 20,
                "ordered_capacity": 0, "active_orders": 0, "available": 8 << 20})
    );
    assert_eq!(m.df_size(), 8 << 20);

    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("twelve.bin");
    write_file(&src, &random_bytes(12 << 20, 12));
    let out = Command::new("cp")
        .arg(&src)
        .arg(m.path("/twelve.bin"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "12 MiB fit in 8 MiB");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("quota"), "cp said {err:?}");
    // So is the sidecar's upload.
    api.post("/store/upload", json!({ "filename": s(&src) }))
        .await
        .err_has("quota exceeded");

    let pkg = api
        .get("/order/packages")
        .await
        .data()
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == json!("small"))
        .unwrap()
        .clone();
    api.post(
        "/order/package/buy",
        json!({"id": pkg["id"], "quantity": 1}),
    )
    .await
    .data();
    let r = api.get("/usage/amount").await;
    let u = r.data();
    assert_eq!(u["capacity"], json!(72 << 20));
    assert_eq!(u["ordered_capacity"], json!(64 << 20));
    assert_eq!(u["active_orders"], json!(1));
    assert_eq!(m.df_size(), 72 << 20);

    let out = Command::new("cp")
        .arg(&src)
        .arg(m.path("/twelve.bin"))
        .output()
        .unwrap();
    assert_ok(&out, "cp after buying");
    let cmp = Command::new("cmp")
        .arg(&src)
        .arg(m.path("/twelve.bin"))
        .status()
        .unwrap();
    assert!(cmp.success());
    let r = api.get("/usage/amount").await;
    let used = r.data()["used"].as_u64().unwrap();
    assert!((12 << 20..13 << 20).contains(&used), "used {used}");
    assert_eq!(r.data()["files"], json!(1));
    assert_eq!(r.data()["available"], json!((72 << 20) - used));
    // The same bytes again are counted once.
    std::fs::copy(m.path("/twelve.bin"), m.path("/again.bin")).unwrap();
    let r = api.get("/usage/amount").await;
    assert_eq!(r.data()["used"], json!(used));
    assert_eq!(r.data()["files"], json!(2));
    // Canceling gives the capacity back up.
    api.post(
        "/order/package/buy",
        json!({"id": pkg["id"], "canceled": true}),
    )
    .await
    .data();
    assert_eq!(
        api.get("/usage/amount").await.data()["capacity"],
        json!(8 << 20)
    );
    assert_eq!(m.df_size(), 8 << 20);

    // Failures.
    api.refuses_post("/usage/amount").await.err_has("takes GET");
}

// ---- flags, and the CLI's registration ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_flags_need_a_token_off_loopback_and_turn_it_off() {
    let c = TestCluster::start(3).await;
    let config = config_of(&c);
    let tmp = tempfile::tempdir().unwrap();
    // Off loopback without a token: the mount refuses to start.
    let port = free_port();
    let dir = tmp.path().join("refused");
    std::fs::create_dir(&dir).unwrap();
    let mut child = mount_command(
        &c,
        Some(&c.appkey),
        &config,
        &dir,
        &["--sidecar", &format!("0.0.0.0:{port}")],
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = Command::new("umount").arg("-l").arg(&dir).status();
            panic!("the mount started with an open sidecar");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("give --sidecar-token-file"), "{said}");
    assert!(!is_mounted(&std::fs::canonicalize(&dir).unwrap()));

    // With a token: only requests that carry it are served.
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let port = free_port();
    let log = tmp.path().join("stderr");
    let mut m = Mount::spawn(
        &c,
        Some(&c.appkey),
        &config,
        &[
            "--sidecar",
            &format!("0.0.0.0:{port}"),
            "--sidecar-token-file",
            s(&token_file),
        ],
        Some(port),
        Stdio::from(std::fs::File::create(&log).unwrap()),
    )
    .await;
    let unauthorized = |r: Reply| {
        assert_eq!(r.status, 401, "{}", r.body);
        r.err_has("forbidden");
    };
    unauthorized(m.api.get("/usage/amount").await);
    for wrong in ["Bearer s3cret-toke", "Bearer s3cret-token2", "s3cret-token"] {
        let req = m
            .api
            .http
            .get(format!("{}/usage/amount", m.api.base))
            .header("authorization", wrong);
        unauthorized(m.api.send(req).await);
    }
    let mut with_token = reqwest::header::HeaderMap::new();
    with_token.insert("authorization", "Bearer s3cret-token".parse().unwrap());
    m.api.http = reqwest::Client::builder()
        .default_headers(with_token)
        .build()
        .unwrap();
    m.api.get("/usage/amount").await.data();
    // Any Host is fine there (it is meant to be reached by other names).
    let r = m
        .api
        .send(
            m.api
                .http
                .get(format!("{}/order/all", m.api.base))
                .header("host", "nas.example:7788"),
        )
        .await;
    r.data();
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        said.contains(&format!(
            "sidecar listening on http://0.0.0.0:{port} (for requests with the token)"
        )),
        "{said}"
    );
    drop(m);
    // --no-sidecar: nothing listens.
    let port = free_port();
    let m = Mount::spawn(
        &c,
        Some(&c.appkey),
        &config,
        &["--no-sidecar", "--sidecar", &format!("127.0.0.1:{port}")],
        None,
        Stdio::inherit(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    drop(m);
    // A taken port: the drive still mounts, without a sidecar, and says why.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let log = tmp.path().join("stderr2");
    let m = Mount::spawn(
        &c,
        Some(&c.appkey),
        &config,
        &["--sidecar", &format!("127.0.0.1:{port}")],
        None,
        Stdio::from(std::fs::File::create(&log).unwrap()),
    )
    .await;
    assert!(m.path("/").is_dir());
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(said.contains("cannot listen on"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_registers_and_verifies_too() {
    let c = TestCluster::start(3).await;
    let config = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| {
        Command::new(bin())
            .args(args)
            .env("XDG_CONFIG_HOME", config.path())
            .env("TFSFS_META", &c.meta.url)
            .env_remove("TFSFS_APPKEY")
            .env_remove("TFSFS_UID")
            .output()
            .unwrap()
    };
    let out = cli(&["register", "frank@example.com"]);
    assert_ok(&out, "register");
    let sent: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sent["email"], json!("frank@example.com"));
    let outbox = c.dir.path().join("meta/outbox");
    let mail = std::fs::read_dir(&outbox)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let code = code_in(&std::fs::read_to_string(mail).unwrap());
    let out = cli(&["verify", "frank@example.com", "000000x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("6 digits"));
    let out = cli(&["verify", "frank@example.com", &code]);
    assert_ok(&out, "verify");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["uid"], json!(1));
    assert!(config.path().join("tfsfs/account.json").exists());
    // Without --appkey the saved account is used.
    let out = cli(&["ls", "/"]);
    assert_ok(&out, "ls with the saved account");
    let out = cli(&["register", "frank@example.com"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already registered"));
}
