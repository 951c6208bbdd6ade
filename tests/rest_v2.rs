//! TFS v2 REST conformance and garbage input, against real `tfsfs meta` (and,
//! where data must reach them, `tfsfs provider`) processes on loopback.
//!
//! One test per status-code row of every v2 route of `tfs-rest-api.md`
//! (500 aside), plus the nginx-tfs rules of `shared/README.md` and the
//! decisions documented in `src/meta/rest_v2.rs`.

mod common;

use std::time::Duration;

use common::*;
use reqwest::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Client, Method};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEYS: [&str; 8] = [
    "CREATE_TIME",
    "ID",
    "IS_FILE",
    "MODIFY_TIME",
    "NAME",
    "PID",
    "SIZE",
    "VER_NO",
];

/// A running cluster and an HTTP client for its v2 routes.
struct Api {
    c: TestCluster,
    h: Client,
}

impl Api {
    /// A metadata server alone: enough for everything that stays inline
    /// (writes of at most 8 KiB).
    async fn meta_only() -> Api {
        Self::with(0, &[]).await
    }

    async fn with(providers: usize, meta_args: &[&str]) -> Api {
        let c = TestCluster::start_with(providers, meta_args).await;
        Api {
            c,
            h: Client::new(),
        }
    }

    fn d(&self, p: &str) -> String {
        format!("{}/dir{p}", self.c.v2())
    }

    fn f(&self, p: &str) -> String {
        format!("{}/file{p}", self.c.v2())
    }

    fn md(&self, p: &str) -> String {
        format!("{}/dir{p}", self.c.v2_meta())
    }

    fn mf(&self, p: &str) -> String {
        format!("{}/file{p}", self.c.v2_meta())
    }

    /// `{meta}/v2/{appkey}/{appid}/{uid}` with other parts.
    fn base(&self, appkey: &str, appid: &str, uid: &str) -> String {
        format!("{}/v2/{appkey}/{appid}/{uid}", self.c.meta.url)
    }

    fn meta_base(&self, appkey: &str, appid: &str, uid: &str) -> String {
        format!("{}/v2/{appkey}/metadata/{appid}/{uid}", self.c.meta.url)
    }

    async fn call(
        &self,
        m: Method,
        url: &str,
        move_src: Option<&[u8]>,
        body: Option<Vec<u8>>,
    ) -> (u16, Vec<u8>) {
        let mut r = self.h.request(m.clone(), url);
        if let Some(src) = move_src {
            r = r.header("x-ali-move-source", HeaderValue::from_bytes(src).unwrap());
        }
        if let Some(b) = body {
            r = r.body(b);
        }
        let resp = r.send().await.unwrap_or_else(|e| panic!("{m} {url}: {e}"));
        let code = resp.status().as_u16();
        (code, resp.bytes().await.unwrap().to_vec())
    }

    async fn st(&self, m: Method, url: &str) -> u16 {
        self.call(m, url, None, None).await.0
    }

    async fn post(&self, url: &str) -> u16 {
        self.st(Method::POST, url).await
    }

    async fn del(&self, url: &str) -> u16 {
        self.st(Method::DELETE, url).await
    }

    async fn head(&self, url: &str) -> u16 {
        self.st(Method::HEAD, url).await
    }

    async fn put(&self, url: &str, body: &[u8]) -> u16 {
        self.call(Method::PUT, url, None, Some(body.to_vec()))
            .await
            .0
    }

    async fn get(&self, url: &str) -> (u16, Vec<u8>) {
        self.call(Method::GET, url, None, None).await
    }

    /// The bytes of a read that must succeed.
    async fn read(&self, url: &str) -> Vec<u8> {
        let (code, body) = self.get(url).await;
        assert_eq!(code, 200, "GET {url}: {}", String::from_utf8_lossy(&body));
        body
    }

    async fn mv(&self, url: &str, src: &str) -> u16 {
        self.call(Method::POST, url, Some(src.as_bytes()), None)
            .await
            .0
    }

    async fn mv_raw(&self, url: &str, src: &[u8]) -> u16 {
        self.call(Method::POST, url, Some(src), None).await.0
    }

    /// A JSON answer that must be 200 with `Content-Type: application/json`.
    async fn json(&self, url: &str) -> Value {
        let resp = self.h.get(url).send().await.unwrap();
        let code = resp.status().as_u16();
        let ct = resp
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string());
        let body = resp.bytes().await.unwrap();
        assert_eq!(code, 200, "GET {url}: {}", String::from_utf8_lossy(&body));
        assert_eq!(ct.as_deref(), Some("application/json"), "GET {url}");
        serde_json::from_slice(&body).unwrap()
    }

    async fn ls(&self, p: &str) -> Vec<Value> {
        match self.json(&self.md(p)).await {
            Value::Array(v) => v,
            other => panic!("ls {p} gave {other}"),
        }
    }

    async fn names(&self, p: &str) -> Vec<String> {
        self.ls(p)
            .await
            .iter()
            .map(|e| e["NAME"].as_str().unwrap().to_string())
            .collect()
    }

    async fn stat(&self, p: &str) -> Value {
        self.json(&self.mf(p)).await
    }

    /// The server still answers normal requests.
    async fn alive(&self) {
        let v = self
            .json(&format!("{}/v2/{}/appid", self.c.meta.url, self.c.appkey))
            .await;
        assert_eq!(v, serde_json::json!({ "APP_ID": self.c.appid.to_string() }));
        assert_eq!(self.head(&self.d("/")).await, 200);
    }

    /// A raw HTTP/1.1 request (for what reqwest would normalise or refuse);
    /// gives the status code.
    async fn raw(&self, req: &[u8]) -> u16 {
        let addr = self.c.meta.url.strip_prefix("http://").unwrap();
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(req).await.unwrap();
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
            .await
            .expect("server answered a raw request in time")
            .unwrap();
        let text = String::from_utf8_lossy(&buf);
        let code = text
            .strip_prefix("HTTP/1.1 ")
            .and_then(|t| t.get(..3))
            .unwrap_or_else(|| panic!("no status line in {text:?}"));
        code.parse().unwrap()
    }

    /// `METHOD target` with this cluster's v2 prefix, raw.
    async fn raw_v2(&self, method: &str, tail: &str, extra_headers: &str) -> u16 {
        let req = format!(
            "{method} /v2/{}/{}/{}{tail} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n{extra_headers}\r\n",
            self.c.appkey, self.c.appid, self.c.uid
        );
        self.raw(req.as_bytes()).await
    }

    /// Another app of the same server: (appkey, appid).
    fn second_app(&self) -> (String, u64) {
        let out = self
            .c
            .admin_command()
            .args(["app", "create"])
            .output()
            .unwrap();
        assert!(out.status.success(), "admin app create: {out:?}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            v["appkey"].as_str().unwrap().to_string(),
            v["appid"].as_u64().unwrap(),
        )
    }
}

fn assert_keys(v: &Value) {
    let mut keys: Vec<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("{v} is not an object"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, KEYS, "keys of {v}");
}

/// `Wed, 27 Jun 2012 10:32:04 UTC+0800`, and within a few minutes of now.
fn assert_tfs_time(v: &Value) {
    let s = v.as_str().unwrap_or_else(|| panic!("{v} is not a string"));
    let fmt = "%a, %d %b %Y %H:%M:%S UTC%z";
    let t = chrono::DateTime::parse_from_str(s, fmt)
        .unwrap_or_else(|e| panic!("{s:?} is not a TFS time: {e}"));
    assert_eq!(t.format(fmt).to_string(), s);
    let age = chrono::Utc::now().timestamp() - t.timestamp();
    assert!((-300..300).contains(&age), "{s} is not now");
}

fn long_name(n: usize) -> String {
    "n".repeat(n)
}

/// A path of exactly `len` bytes: `/aaaa…/bbbb…` with segments under 246.
fn path_of_len(len: usize) -> String {
    let mut p = String::new();
    let mut c = b'a';
    while p.len() < len {
        let room = len - p.len() - 1;
        p.push('/');
        p.push_str(&(c as char).to_string().repeat(room.min(200)));
        c += 1;
    }
    assert_eq!(p.len(), len);
    p
}

// ---------------------------------------------------------------- appid

#[tokio::test]
async fn appid_200_is_the_app_id_as_a_string() {
    let a = Api::meta_only().await;
    let url = format!("{}/v2/{}/appid", a.c.meta.url, a.c.appkey);
    let v = a.json(&url).await;
    assert_eq!(v, serde_json::json!({ "APP_ID": a.c.appid.to_string() }));
    assert!(v["APP_ID"].is_string());
    // A second app gets its own, different appid.
    let (key2, id2) = a.second_app();
    assert_ne!(id2, a.c.appid);
    let v2 = a.json(&format!("{}/v2/{key2}/appid", a.c.meta.url)).await;
    assert_eq!(v2, serde_json::json!({ "APP_ID": id2.to_string() }));
}

#[tokio::test]
async fn appid_400_for_other_methods() {
    let a = Api::meta_only().await;
    let url = format!("{}/v2/{}/appid", a.c.meta.url, a.c.appkey);
    for m in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
        assert_eq!(a.st(m.clone(), &url).await, 400, "{m} appid");
    }
    a.alive().await;
}

#[tokio::test]
async fn unknown_appkey_is_401_on_every_route_but_appid() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.d("/known")).await, 201);
    let bad = "no-such-appkey";
    let appid = a.c.appid.to_string();
    let url = format!("{}/v2/{bad}/appid", a.c.meta.url);
    // The document's table: 500 "login failed" (tests/rest_compat.rs).
    assert_eq!(a.get(&url).await.0, 500, "appid");
    let b = a.base(bad, &appid, "1");
    let mb = a.meta_base(bad, &appid, "1");
    assert_eq!(a.post(&format!("{b}/dir/x")).await, 401, "create_dir");
    assert_eq!(a.del(&format!("{b}/dir/known")).await, 401, "rm_dir");
    assert_eq!(a.head(&format!("{b}/dir/known")).await, 401, "head dir");
    assert_eq!(a.get(&format!("{mb}/dir/")).await.0, 401, "ls_dir");
    assert_eq!(a.post(&format!("{b}/file/f")).await, 401, "create_file");
    assert_eq!(a.put(&format!("{b}/file/f"), b"x").await, 401, "write_file");
    assert_eq!(a.get(&format!("{b}/file/f")).await.0, 401, "read_file");
    assert_eq!(a.get(&format!("{mb}/file/f")).await.0, 401, "ls_file");
    // Nothing was created and the known dir is still there.
    assert_eq!(a.names("/").await, ["known"]);
}

// ---------------------------------------------------------------- create_dir

#[tokio::test]
async fn create_dir_201_then_409() {
    let a = Api::meta_only().await;
    let (code, body) = a.call(Method::POST, &a.d("/dir_1"), None, None).await;
    assert_eq!(code, 201);
    assert!(body.is_empty());
    assert_eq!(a.head(&a.d("/dir_1")).await, 200);
    assert_eq!(a.post(&a.d("/dir_1")).await, 409, "dir exists");
    assert_eq!(a.post(&a.d("/dir_1/sub")).await, 201);
    assert_eq!(a.post(&a.d("/dir_1/sub")).await, 409);
    // A file of that name makes the dir name taken too.
    assert_eq!(a.post(&a.f("/taken")).await, 201);
    assert_eq!(a.post(&a.d("/taken")).await, 409, "name held by a file");
    // The root always exists.
    assert_eq!(a.post(&a.d("/")).await, 409);
    assert_eq!(a.names("/").await, ["dir_1", "taken"]);
}

#[tokio::test]
async fn create_dir_recursive_creates_parents() {
    let a = Api::meta_only().await;
    assert_eq!(
        a.post(&a.d("/p/q/r")).await,
        404,
        "no parents, not recursive"
    );
    assert_eq!(a.post(&a.d("/p/q/r?recursive=0")).await, 404);
    assert_eq!(
        a.head(&a.d("/p")).await,
        404,
        "a failed create leaves nothing"
    );
    assert_eq!(a.post(&a.d("/p/q/r?recursive=1")).await, 201);
    for p in ["/p", "/p/q", "/p/q/r"] {
        assert_eq!(a.head(&a.d(p)).await, 200, "{p}");
    }
    assert_eq!(
        a.post(&a.d("/p/q/r?recursive=1")).await,
        409,
        "exists even recursive"
    );
    // Recursive over existing parents adds only the missing ones.
    assert_eq!(a.post(&a.d("/p/q/s/t?recursive=1")).await, 201);
    assert_eq!(a.names("/p/q").await, ["r", "s"]);
}

#[tokio::test]
async fn create_dir_folds_empty_segments() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.d("//a")).await, 201);
    assert_eq!(a.post(&a.d("//a//b/")).await, 201);
    assert_eq!(a.head(&a.d("/a/b")).await, 200);
    assert_eq!(a.post(&a.d("/a/b")).await, 409, "//a//b/ is /a/b");
    assert_eq!(a.post(&a.d("/a///b//")).await, 409);
    assert_eq!(a.names("/").await, ["a"]);
    assert_eq!(a.names("/a").await, ["b"]);
    assert_eq!(a.names("//a//").await, ["b"]);
}

#[tokio::test]
async fn create_dir_400_bad_names_and_args() {
    let a = Api::meta_only().await;
    let v2 = a.c.v2();
    let cases: Vec<(String, &str)> = vec![
        (format!("{v2}/dir"), "empty path"),
        (a.d(&path_of_len(300)), "300-byte path"),
        (a.d(&path_of_len(257)), "257-byte path"),
        (a.d(&format!("/{}", long_name(247))), "247-byte name"),
        (a.d("/bad%00name"), "NUL"),
        (a.d("/bad%FFname"), "not UTF-8"),
        (a.d("/x?recursive=2"), "recursive=2"),
        (a.d("/x?recursive=yes"), "recursive=yes"),
        (a.d("/x?recursive="), "recursive empty"),
        (a.d("/x?recursive"), "recursive no value"),
    ];
    for (url, what) in &cases {
        assert_eq!(a.post(url).await, 400, "{what}");
    }
    for (appid, uid, what) in [
        ("0", "1", "appid 0"),
        ("12345678901234567890", "1", "appid of 20 digits"),
        ("abc", "1", "appid abc"),
        ("-1", "1", "appid -1"),
        ("", "1", "appid empty"),
        ("1", "0", "uid 0"),
        ("1", "12345678901234567890", "uid of 20 digits"),
        ("1", "u1", "uid u1"),
    ] {
        let url = format!("{}/dir/x", a.base(&a.c.appkey, appid, uid));
        assert_eq!(a.post(&url).await, 400, "{what}");
    }
    // Nothing of that was created; the boundaries themselves are fine.
    assert_eq!(a.names("/").await, Vec::<String>::new());
    assert_eq!(
        a.post(&a.d(&format!("/{}", long_name(246)))).await,
        201,
        "246-byte name"
    );
    assert_eq!(
        a.post(&a.d(&path_of_len(256))).await,
        404,
        "256 bytes: parent missing"
    );
    assert_eq!(
        a.post(&format!("{}?recursive=1", a.d(&path_of_len(256))))
            .await,
        201,
        "256-byte path"
    );
    a.alive().await;
}

#[tokio::test]
async fn create_dir_400_dot_segments() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.d("/a")).await, 201);
    for tail in [
        "/dir/a/../b",
        "/dir/../b",
        "/dir/a/%2e%2e/b",
        "/dir/a/%2E%2E",
        "/dir/./b",
        "/dir/a/.",
    ] {
        assert_eq!(a.raw_v2("POST", tail, "").await, 400, "{tail}");
    }
    assert_eq!(a.names("/").await, ["a"]);
    assert_eq!(a.names("/a").await, Vec::<String>::new());
    // A name that merely holds dots is a name.
    assert_eq!(a.post(&a.d("/a/..b")).await, 201);
    assert_eq!(a.post(&a.d("/a/...")).await, 201);
    assert_eq!(a.names("/a").await, ["...", "..b"]);
}

#[tokio::test]
async fn create_dir_401_in_another_apps_appid() {
    let a = Api::meta_only().await;
    let (key2, id2) = a.second_app();
    let foreign = a.base(&key2, &a.c.appid.to_string(), "1");
    assert_eq!(a.post(&format!("{foreign}/dir/x")).await, 401);
    assert_eq!(a.post(&format!("{foreign}/dir/y/z?recursive=1")).await, 401);
    assert_eq!(a.head(&a.d("/x")).await, 404, "nothing created");
    assert_eq!(a.head(&a.d("/y")).await, 404);
    // The other app writes its own appid, a namespace of its own.
    let own = a.base(&key2, &id2.to_string(), "1");
    assert_eq!(a.post(&format!("{own}/dir/x")).await, 201);
    assert_eq!(a.head(&format!("{own}/dir/x")).await, 200);
    assert_eq!(a.head(&a.d("/x")).await, 404);
    // And the first app may not write there either.
    let back = a.base(&a.c.appkey, &id2.to_string(), "1");
    assert_eq!(a.post(&format!("{back}/dir/w")).await, 401);
}

#[tokio::test]
async fn create_dir_403_past_8_levels() {
    let a = Api::meta_only().await;
    assert_eq!(
        a.post(&a.d("/1/2/3/4/5/6/7/8?recursive=1")).await,
        201,
        "8 levels"
    );
    assert_eq!(a.post(&a.d("/1/2/3/4/5/6/7/8/9")).await, 403, "9 levels");
    assert_eq!(a.post(&a.d("/1/2/3/4/5/6/7/8/9?recursive=1")).await, 403);
    assert_eq!(a.post(&a.d("/x/2/3/4/5/6/7/8/9?recursive=1")).await, 403);
    assert_eq!(
        a.head(&a.d("/x")).await,
        404,
        "refused without side effects"
    );
    assert_eq!(a.names("/1/2/3/4/5/6/7/8").await, Vec::<String>::new());
}

#[tokio::test]
async fn create_dir_403_past_the_subdir_limit() {
    let a = Api::with(0, &["--max-subdirs", "2"]).await;
    assert_eq!(a.post(&a.d("/d")).await, 201);
    assert_eq!(a.post(&a.d("/d/a")).await, 201);
    assert_eq!(a.post(&a.d("/d/b")).await, 201);
    assert_eq!(a.post(&a.d("/d/c")).await, 403, "third subdir");
    assert_eq!(
        a.post(&a.d("/d/c/x?recursive=1")).await,
        403,
        "recursive too"
    );
    assert_eq!(a.names("/d").await, ["a", "b"]);
    // Files do not count against the subdir limit.
    assert_eq!(a.post(&a.f("/d/f")).await, 201);
    // Freeing one makes room.
    assert_eq!(a.del(&a.d("/d/a")).await, 200);
    assert_eq!(a.post(&a.d("/d/c")).await, 201);
}

#[tokio::test]
async fn create_dir_404_parent_missing() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.d("/missing/x")).await, 404);
    assert_eq!(a.post(&a.f("/file")).await, 201);
    assert_eq!(a.post(&a.d("/file/x")).await, 404, "parent is a file");
    assert_eq!(
        a.post(&a.d("/file/x?recursive=1")).await,
        404,
        "parent is a file"
    );
    assert_eq!(a.names("/").await, ["file"]);
}

// ---------------------------------------------------------------- rm_dir

#[tokio::test]
async fn rm_dir_200() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.d("/a/b?recursive=1")).await, 201);
    let (code, body) = a.call(Method::DELETE, &a.d("/a/b"), None, None).await;
    assert_eq!(code, 200);
    assert!(body.is_empty());
    assert_eq!(a.head(&a.d("/a/b")).await, 404);
    assert_eq!(a.names("/a").await, Vec::<String>::new());
    assert_eq!(a.del(&a.d("//a/")).await, 200, "folded path");
    assert_eq!(a.names("/").await, Vec::<String>::new());
    // The name can be used again.
    assert_eq!(a.post(&a.d("/a")).await, 201);
}

#[tokio::test]
async fn rm_dir_400() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.d("/a")).await, 201);
    assert_eq!(a.del(&a.d("/")).await, 400, "the root");
    assert_eq!(a.del(&format!("{}/dir", a.c.v2())).await, 400, "empty path");
    assert_eq!(a.del(&a.d(&path_of_len(300))).await, 400, "300 bytes");
    assert_eq!(a.del(&a.d(&format!("/{}", long_name(247)))).await, 400);
    assert_eq!(a.raw_v2("DELETE", "/dir/a/..", "").await, 400, "..");
    assert_eq!(a.raw_v2("DELETE", "/dir/a/%2e%2e", "").await, 400, "%2e%2e");
    let bad_appid = format!("{}/dir/a", a.base(&a.c.appkey, "0", "1"));
    assert_eq!(a.del(&bad_appid).await, 400, "appid 0");
    assert_eq!(a.head(&a.d("/a")).await, 200, "still there");
}

#[tokio::test]
async fn rm_dir_401() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.d("/a")).await, 201);
    let (key2, _) = a.second_app();
    let foreign = a.base(&key2, &a.c.appid.to_string(), "1");
    assert_eq!(a.del(&format!("{foreign}/dir/a")).await, 401);
    assert_eq!(a.head(&a.d("/a")).await, 200, "still there");
}

#[tokio::test]
async fn rm_dir_403_not_empty() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.d("/a/sub?recursive=1")).await, 201);
    assert_eq!(a.post(&a.f("/b/file?recursive=1")).await, 201);
    assert_eq!(a.del(&a.d("/a")).await, 403, "holds a dir");
    assert_eq!(a.del(&a.d("/b")).await, 403, "holds a file");
    assert_eq!(a.names("/a").await, ["sub"]);
    assert_eq!(a.del(&a.d("/a/sub")).await, 200);
    assert_eq!(a.del(&a.d("/a")).await, 200, "now empty");
    assert_eq!(a.del(&a.f("/b/file")).await, 200);
    assert_eq!(a.del(&a.d("/b")).await, 200);
}

#[tokio::test]
async fn rm_dir_404() {
    let a = Api::meta_only().await;
    assert_eq!(a.del(&a.d("/nope")).await, 404, "missing");
    assert_eq!(a.del(&a.d("/nope/x")).await, 404, "parent missing");
    assert_eq!(a.post(&a.f("/file")).await, 201);
    assert_eq!(a.del(&a.d("/file")).await, 404, "a file is not a dir");
    assert_eq!(a.head(&a.f("/file")).await, 200, "file untouched");
    assert_eq!(a.post(&a.d("/gone")).await, 201);
    assert_eq!(a.del(&a.d("/gone")).await, 200);
    assert_eq!(a.del(&a.d("/gone")).await, 404, "twice");
}

// ---------------------------------------------------------------- mv_dir

#[tokio::test]
async fn mv_dir_200_moves_the_subtree() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.d("/dir_src/inner?recursive=1")).await, 201);
    assert_eq!(a.post(&a.f("/dir_src/inner/f")).await, 201);
    assert_eq!(a.put(&a.f("/dir_src/inner/f"), b"payload").await, 200);
    assert_eq!(a.post(&a.d("/other")).await, 201);
    let (code, body) = a
        .call(Method::POST, &a.d("/dir_dest"), Some(b"/dir_src"), None)
        .await;
    assert_eq!(code, 200, "rename");
    assert!(body.is_empty());
    assert_eq!(a.head(&a.d("/dir_src")).await, 404);
    assert_eq!(a.read(&a.f("/dir_dest/inner/f")).await, b"payload");
    assert_eq!(
        a.mv(&a.d("/other/moved"), "/dir_dest").await,
        200,
        "into another dir"
    );
    assert_eq!(a.names("/").await, ["other"]);
    assert_eq!(a.names("/other/moved").await, ["inner"]);
    assert_eq!(a.read(&a.f("/other/moved/inner/f")).await, b"payload");
    // Folded and percent-encoded source paths.
    assert_eq!(a.mv(&a.d("/back"), "//other//moved/").await, 200);
    assert_eq!(a.post(&a.d("/with%20space")).await, 201);
    assert_eq!(a.mv(&a.d("/nospace"), "/with%20space").await, 200);
    assert_eq!(a.names("/").await, ["back", "nospace", "other"]);
}

#[tokio::test]
async fn mv_dir_400_onto_itself_and_bad_header() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.d("/a/b?recursive=1")).await, 201);
    assert_eq!(a.mv(&a.d("/a"), "/a").await, 400, "onto itself");
    assert_eq!(
        a.mv(&a.d("/a/b"), "//a//b/").await,
        400,
        "onto itself, folded"
    );
    let long = path_of_len(300);
    let bad: Vec<(&[u8], &str)> = vec![
        (b"", "empty"),
        (b"a", "relative"),
        (b"a/b", "relative"),
        (b"/", "the root"),
        (b"/a/../a", ".."),
        (b"/a/%2e%2e", "encoded .."),
        (b"/a%00", "NUL"),
        (b"/\xff\xfe", "not visible ASCII"),
        (long.as_bytes(), "300 bytes"),
    ];
    for (src, what) in bad {
        assert_eq!(a.mv_raw(&a.d("/dest"), src).await, 400, "source {what}");
    }
    assert_eq!(a.mv(&a.d("/"), "/a").await, 400, "onto the root");
    assert_eq!(
        a.mv(&a.d("/dest?recursive=2"), "/a").await,
        400,
        "recursive=2"
    );
    assert_eq!(
        a.mv(&a.d(&path_of_len(300)), "/a").await,
        400,
        "300-byte dest"
    );
    assert_eq!(
        a.raw_v2("POST", "/dir/x/../y", "x-ali-move-source: /a\r\n")
            .await,
        400
    );
    assert_eq!(a.names("/").await, ["a"], "nothing moved");
    assert_eq!(a.names("/a").await, ["b"]);
}

#[tokio::test]
async fn mv_dir_401() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.d("/a")).await, 201);
    let (key2, _) = a.second_app();
    let foreign = a.base(&key2, &a.c.appid.to_string(), "1");
    assert_eq!(a.mv(&format!("{foreign}/dir/b"), "/a").await, 401);
    assert_eq!(a.names("/").await, ["a"]);
}

#[tokio::test]
async fn mv_dir_403_into_its_own_subtree() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.d("/a/b/c?recursive=1")).await, 201);
    assert_eq!(a.mv(&a.d("/a/x"), "/a").await, 403, "into itself");
    assert_eq!(a.mv(&a.d("/a/b/c/x"), "/a").await, 403, "deeper");
    assert_eq!(a.mv(&a.d("/a/b/new/x?recursive=1"), "/a/b").await, 403);
    assert_eq!(a.names("/a/b").await, ["c"], "nothing made");
    // A sibling with a common prefix is not the subtree.
    assert_eq!(a.post(&a.d("/ab")).await, 201);
    assert_eq!(a.mv(&a.d("/ab/a"), "/a").await, 200);
}

#[tokio::test]
async fn mv_dir_403_past_8_levels() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.d("/1/2/3/4/5/6/7/8?recursive=1")).await, 201);
    assert_eq!(a.post(&a.d("/s/t/u?recursive=1")).await, 201);
    assert_eq!(
        a.mv(&a.d("/1/2/3/4/5/6/7/8/s"), "/s").await,
        403,
        "dest at level 9"
    );
    // The moved subtree would reach level 9.
    assert_eq!(
        a.mv(&a.d("/1/2/3/4/5/6/s"), "/s").await,
        403,
        "subtree at level 9"
    );
    assert_eq!(a.names("/s/t").await, ["u"]);
    assert_eq!(
        a.mv(&a.d("/1/2/3/4/5/s"), "/s").await,
        200,
        "exactly 8 levels"
    );
    assert_eq!(a.head(&a.d("/1/2/3/4/5/s/t/u")).await, 200);
}

#[tokio::test]
async fn mv_dir_403_past_the_subdir_limit() {
    let a = Api::with(0, &["--max-subdirs", "2"]).await;
    assert_eq!(a.post(&a.d("/d/a?recursive=1")).await, 201);
    assert_eq!(a.post(&a.d("/d/b/p?recursive=1")).await, 201);
    assert_eq!(a.post(&a.d("/d/b/q")).await, 201);
    assert_eq!(a.mv(&a.d("/d/b/a"), "/d/a").await, 403, "b is full");
    assert_eq!(a.names("/d").await, ["a", "b"]);
    // A rename inside the same dir adds nothing.
    assert_eq!(a.mv(&a.d("/d/b/r"), "/d/b/q").await, 200);
    assert_eq!(a.names("/d/b").await, ["p", "r"]);
}

#[tokio::test]
async fn mv_dir_404() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.d("/a")).await, 201);
    assert_eq!(a.post(&a.d("/b")).await, 201);
    assert_eq!(a.post(&a.f("/f")).await, 201);
    assert_eq!(a.mv(&a.d("/c"), "/nope").await, 404, "source missing");
    assert_eq!(
        a.mv(&a.d("/c"), "/nope/x").await,
        404,
        "source parent missing"
    );
    assert_eq!(a.mv(&a.d("/c"), "/f").await, 404, "source is a file");
    assert_eq!(a.mv(&a.d("/b"), "/a").await, 404, "destination exists");
    assert_eq!(a.mv(&a.d("/f"), "/a").await, 404, "destination is a file");
    assert_eq!(
        a.mv(&a.d("/x/y"), "/a").await,
        404,
        "destination parent missing"
    );
    assert_eq!(
        a.mv(&a.d("/f/y"), "/a").await,
        404,
        "destination parent is a file"
    );
    assert_eq!(a.names("/").await, ["a", "b", "f"], "nothing moved");
}

#[tokio::test]
async fn mv_dir_recursive_creates_destination_parents() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.d("/a/inner?recursive=1")).await, 201);
    assert_eq!(a.mv(&a.d("/x/y/a"), "/a").await, 404, "not recursive");
    assert_eq!(a.mv(&a.d("/x/y/a?recursive=0"), "/a").await, 404);
    assert_eq!(a.head(&a.d("/x")).await, 404);
    assert_eq!(a.mv(&a.d("/x/y/a?recursive=1"), "/a").await, 200);
    assert_eq!(a.head(&a.d("/x/y")).await, 200);
    assert_eq!(a.head(&a.d("/x/y/a/inner")).await, 200);
    assert_eq!(a.names("/").await, ["x"]);
}

// ---------------------------------------------------------------- ls_dir

#[tokio::test]
async fn ls_dir_200_dirs_first_with_exact_keys() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.d("/L")).await, 201);
    for p in ["/L/zdir", "/L/adir"] {
        assert_eq!(a.post(&a.d(p)).await, 201);
    }
    for p in ["/L/bfile", "/L/afile", "/L/0file"] {
        assert_eq!(a.post(&a.f(p)).await, 201);
    }
    assert_eq!(a.put(&a.f("/L/afile"), b"hello").await, 200);
    assert_eq!(a.put(&a.f("/L/afile"), b"!!").await, 200);

    let root = a.ls("/").await;
    assert_eq!(root.len(), 1);
    let l = &root[0];
    assert_keys(l);
    assert_eq!(l["NAME"], "L");
    assert_eq!(l["IS_FILE"], false);
    let l_id = l["ID"].as_i64().unwrap();
    assert!(l_id > 0);
    assert!(
        l["PID"].as_i64().unwrap() > 0,
        "a dir's PID is its parent's id"
    );

    let list = a.ls("/L").await;
    let names: Vec<&str> = list.iter().map(|e| e["NAME"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["adir", "zdir", "0file", "afile", "bfile"],
        "dirs first"
    );
    for e in &list {
        assert_keys(e);
        assert_tfs_time(&e["CREATE_TIME"]);
        assert_tfs_time(&e["MODIFY_TIME"]);
    }
    for d in &list[..2] {
        assert_eq!(d["IS_FILE"], false);
        assert_eq!(d["PID"].as_i64(), Some(l_id));
        assert!(d["ID"].as_i64().unwrap() > l_id);
        assert_eq!(d["SIZE"], 0);
        assert_eq!(d["VER_NO"], 0, "dirs stay at version 0");
    }
    assert_ne!(list[0]["ID"], list[1]["ID"]);
    for f in &list[2..] {
        assert_eq!(f["IS_FILE"], true);
        assert_eq!(f["ID"], 0);
        assert_eq!(
            f["PID"].as_i64(),
            Some(l_id | i64::MIN),
            "parent id, top bit set"
        );
        assert!(f["PID"].as_i64().unwrap() < 0);
    }
    assert_eq!(list[3]["SIZE"], 7);
    assert_eq!(list[3]["VER_NO"], 3);
    assert_eq!(list[4]["SIZE"], 0);
    assert_eq!(list[4]["VER_NO"], 1);
    // An empty dir lists as an empty array.
    assert_eq!(a.json(&a.md("/L/adir")).await, serde_json::json!([]));
}

#[tokio::test]
async fn ls_dir_400() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.d("/a")).await, 201);
    let vm = a.c.v2_meta();
    assert_eq!(a.get(&format!("{vm}/dir")).await.0, 400, "empty path");
    assert_eq!(a.get(&a.md(&path_of_len(300))).await.0, 400, "300 bytes");
    assert_eq!(a.get(&a.md(&format!("/{}", long_name(247)))).await.0, 400);
    assert_eq!(a.get(&a.md("/a%00")).await.0, 400, "NUL");
    let appid0 = format!("{}/dir/", a.meta_base(&a.c.appkey, "0", "1"));
    assert_eq!(a.get(&appid0).await.0, 400, "appid 0");
    let tail = format!(
        "/v2/{}/metadata/{}/{}/dir/a/..",
        a.c.appkey, a.c.appid, a.c.uid
    );
    let req = format!("GET {tail} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(a.raw(req.as_bytes()).await, 400, "..");
    // Metadata is only read.
    for m in [Method::POST, Method::PUT, Method::DELETE, Method::HEAD] {
        assert_eq!(a.st(m.clone(), &a.md("/a")).await, 400, "{m} on metadata");
    }
    assert_eq!(a.names("/").await, ["a"]);
}

#[tokio::test]
async fn ls_dir_404() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.f("/f")).await, 201);
    assert_eq!(a.get(&a.md("/nope")).await.0, 404, "missing");
    assert_eq!(a.get(&a.md("/nope/deeper")).await.0, 404, "parent missing");
    assert_eq!(a.get(&a.md("/f")).await.0, 404, "a file");
    assert_eq!(a.get(&a.md("/f/x")).await.0, 404, "under a file");
}

#[tokio::test]
async fn ls_dir_401_for_another_apps_appid() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.d("/a")).await, 201);
    let (key2, _) = a.second_app();
    let foreign = a.meta_base(&key2, &a.c.appid.to_string(), "1");
    assert_eq!(a.get(&format!("{foreign}/dir/")).await.0, 401);
    assert_eq!(a.get(&format!("{foreign}/file/a")).await.0, 401);
    let plain = a.base(&key2, &a.c.appid.to_string(), "1");
    assert_eq!(a.head(&format!("{plain}/dir/a")).await, 401);
}

// ---------------------------------------------------------------- HEAD dir

#[tokio::test]
async fn head_dir_200_400_404() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.d("/dir_1/sub?recursive=1")).await, 201);
    assert_eq!(a.post(&a.f("/dir_1/file")).await, 201);
    assert_eq!(a.head(&a.d("/dir_1")).await, 200);
    assert_eq!(a.head(&a.d("/dir_1/sub")).await, 200);
    assert_eq!(a.head(&a.d("//dir_1//sub//")).await, 200, "folded");
    assert_eq!(a.head(&a.d("/")).await, 200, "the root");
    assert_eq!(a.head(&format!("{}/dir", a.c.v2())).await, 400, "empty");
    assert_eq!(a.head(&a.d(&path_of_len(300))).await, 400, "300 bytes");
    assert_eq!(a.head(&a.d(&format!("/{}", long_name(247)))).await, 400);
    assert_eq!(a.raw_v2("HEAD", "/dir/dir_1/..", "").await, 400, "..");
    assert_eq!(a.head(&a.d("/nope")).await, 404);
    assert_eq!(a.head(&a.d("/nope/sub")).await, 404);
    assert_eq!(
        a.head(&a.d("/dir_1/file")).await,
        404,
        "a file is not a dir"
    );
}

// ---------------------------------------------------------------- create_file

#[tokio::test]
async fn create_file_201_is_empty_at_version_1() {
    let a = Api::meta_only().await;
    let (code, body) = a.call(Method::POST, &a.f("/file_1"), None, None).await;
    assert_eq!(code, 201);
    assert!(body.is_empty());
    assert_eq!(a.head(&a.f("/file_1")).await, 200);
    let st = a.stat("/file_1").await;
    assert_eq!(st["SIZE"], 0);
    assert_eq!(st["VER_NO"], 1);
    assert_eq!(st["IS_FILE"], true);
    assert_eq!(a.read(&a.f("/file_1")).await, b"");
    assert_eq!(a.post(&a.f("/d/f?recursive=1")).await, 201, "recursive");
    assert_eq!(a.head(&a.d("/d")).await, 200);
    assert_eq!(a.head(&a.f("/d/f")).await, 200);
    assert_eq!(a.post(&a.f("//d//g/")).await, 201, "folded");
    assert_eq!(a.names("/d").await, ["f", "g"]);
}

#[tokio::test]
async fn create_file_400() {
    let a = Api::meta_only().await;
    let v2 = a.c.v2();
    for (url, what) in [
        (format!("{v2}/file"), "empty path"),
        (a.f(&path_of_len(300)), "300 bytes"),
        (a.f(&format!("/{}", long_name(247))), "247-byte name"),
        (a.f("/x%00y"), "NUL"),
        (a.f("/x?recursive=2"), "recursive=2"),
        (a.f("/x?recursive=true"), "recursive=true"),
        (
            format!("{}/file/x", a.base(&a.c.appkey, "abc", "1")),
            "appid abc",
        ),
        (format!("{}/file/x", a.base(&a.c.appkey, "1", "0")), "uid 0"),
    ] {
        assert_eq!(a.post(&url).await, 400, "{what}");
    }
    assert_eq!(a.raw_v2("POST", "/file/../x", "").await, 400, "..");
    assert_eq!(a.raw_v2("POST", "/file/%2E%2E/x", "").await, 400, "%2E%2E");
    assert_eq!(a.names("/").await, Vec::<String>::new());
    assert_eq!(a.post(&a.f(&format!("/{}", long_name(246)))).await, 201);
}

#[tokio::test]
async fn create_file_401() {
    let a = Api::meta_only().await;
    let (key2, _) = a.second_app();
    let foreign = a.base(&key2, &a.c.appid.to_string(), "1");
    assert_eq!(a.post(&format!("{foreign}/file/f")).await, 401);
    assert_eq!(
        a.post(&format!("{foreign}/file/d/f?recursive=1")).await,
        401
    );
    assert_eq!(a.names("/").await, Vec::<String>::new());
}

#[tokio::test]
async fn create_file_403_depth_and_file_limit() {
    let a = Api::with(0, &["--max-files", "2"]).await;
    assert_eq!(
        a.post(&a.f("/1/2/3/4/5/6/7/f?recursive=1")).await,
        201,
        "level 8"
    );
    assert_eq!(a.post(&a.d("/1/2/3/4/5/6/7/8")).await, 201);
    assert_eq!(a.post(&a.f("/1/2/3/4/5/6/7/8/f")).await, 403, "level 9");
    assert_eq!(a.post(&a.f("/1/2/3/4/5/6/7/8/f?recursive=1")).await, 403);
    assert_eq!(a.post(&a.f("/a")).await, 201);
    assert_eq!(a.post(&a.f("/b")).await, 201);
    assert_eq!(a.post(&a.f("/c")).await, 403, "third file");
    // Dirs do not count against the file limit.
    assert_eq!(a.post(&a.d("/dd")).await, 201);
    // Nor may a move bring a third file in.
    assert_eq!(a.post(&a.f("/dd/x")).await, 201);
    assert_eq!(a.mv(&a.f("/x"), "/dd/x").await, 403, "move into a full dir");
    assert_eq!(a.names("/").await, ["1", "dd", "a", "b"]);
    assert_eq!(a.del(&a.f("/a")).await, 200);
    assert_eq!(a.post(&a.f("/c")).await, 201, "room again");
}

#[tokio::test]
async fn create_file_404_parent_missing() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.f("/nope/f")).await, 404);
    assert_eq!(a.post(&a.f("/nope/f?recursive=0")).await, 404);
    assert_eq!(a.post(&a.f("/plain")).await, 201);
    assert_eq!(a.post(&a.f("/plain/f")).await, 404, "parent is a file");
    assert_eq!(a.post(&a.f("/plain/f?recursive=1")).await, 404);
    assert_eq!(a.names("/").await, ["plain"]);
}

#[tokio::test]
async fn create_file_409() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.f("/f")).await, 201);
    assert_eq!(a.put(&a.f("/f"), b"keep").await, 200);
    assert_eq!(a.post(&a.f("/f")).await, 409, "file exists");
    assert_eq!(a.post(&a.f("//f/")).await, 409, "folded");
    assert_eq!(a.post(&a.d("/d")).await, 201);
    assert_eq!(a.post(&a.f("/d")).await, 409, "a dir holds the name");
    assert_eq!(a.read(&a.f("/f")).await, b"keep", "not truncated");
}

// ---------------------------------------------------------------- write_file

#[tokio::test]
async fn write_file_200_appends() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.f("/f")).await, 201);
    let (code, body) = a
        .call(Method::PUT, &a.f("/f"), None, Some(b"hello ".to_vec()))
        .await;
    assert_eq!(code, 200);
    assert!(body.is_empty());
    assert_eq!(a.put(&a.f("/f"), b"world").await, 200);
    assert_eq!(
        a.put(&a.f("/f?size=1"), b"!???").await,
        200,
        "size takes a prefix"
    );
    assert_eq!(a.read(&a.f("/f")).await, b"hello world!");
    let st = a.stat("/f").await;
    assert_eq!(st["SIZE"], 12);
    assert_eq!(st["VER_NO"], 4);
    // The same content twice is two writes.
    assert_eq!(a.put(&a.f("/f"), b"ab").await, 200);
    assert_eq!(a.put(&a.f("/f"), b"ab").await, 200);
    assert_eq!(a.read(&a.f("/f")).await, b"hello world!abab");
}

#[tokio::test]
async fn write_file_200_pwrite_with_a_hole_reading_zeros() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.f("/h")).await, 201);
    assert_eq!(a.put(&a.f("/h?offset=10"), b"tail").await, 200);
    assert_eq!(a.stat("/h").await["SIZE"], 14);
    let mut want = vec![0u8; 10];
    want.extend_from_slice(b"tail");
    assert_eq!(a.read(&a.f("/h")).await, want, "the hole reads as zeros");
    // Fill part of the hole; the rest stays zero.
    assert_eq!(a.put(&a.f("/h?offset=2&size=3"), b"abcdef").await, 200);
    want[2..5].copy_from_slice(b"abc");
    assert_eq!(a.read(&a.f("/h")).await, want);
    assert_eq!(a.read(&a.f("/h?offset=4&size=4")).await, b"c\0\0\0");
    // Without an offset a write appends at the end, after the last data.
    assert_eq!(a.put(&a.f("/h"), b"+").await, 200);
    want.push(b'+');
    assert_eq!(a.read(&a.f("/h")).await, want);
    // An offset at 0 on an empty file is a normal write.
    assert_eq!(a.post(&a.f("/z")).await, 201);
    assert_eq!(a.put(&a.f("/z?offset=0"), b"zero").await, 200);
    assert_eq!(a.read(&a.f("/z")).await, b"zero");
    assert_eq!(a.stat("/h").await["VER_NO"], 4);
}

#[tokio::test]
async fn write_file_409_overlapping_data() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.f("/f")).await, 201);
    assert_eq!(a.put(&a.f("/f"), b"0123456789").await, 200);
    assert_eq!(a.put(&a.f("/f?offset=20"), b"XY").await, 200);
    for (q, what) in [
        ("offset=0", "at the start"),
        ("offset=9", "last byte"),
        ("offset=5&size=2", "inside"),
        ("offset=15", "runs into the later data"),
        ("offset=21", "inside the later data"),
    ] {
        let body: &[u8] = if what == "runs into the later data" {
            b"123456"
        } else {
            b"zz"
        };
        assert_eq!(a.put(&a.f(&format!("/f?{q}")), body).await, 409, "{what}");
    }
    // Right up to the edges is fine.
    assert_eq!(a.put(&a.f("/f?offset=10"), b"abcdefghij").await, 200);
    assert_eq!(a.put(&a.f("/f?offset=10"), b"x").await, 409);
    let mut want = b"0123456789abcdefghij".to_vec();
    want.extend_from_slice(b"XY");
    assert_eq!(a.read(&a.f("/f")).await, want);
    assert_eq!(
        a.stat("/f").await["VER_NO"],
        4,
        "refused writes add no version"
    );
}

#[tokio::test]
async fn write_file_400_bad_args() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.f("/f")).await, 201);
    assert_eq!(a.put(&a.f("/f"), b"base").await, 200);
    for (q, body, what) in [
        ("?size=0", &b"abc"[..], "size=0"),
        ("?size=4", b"abc", "size larger than the body"),
        ("?size=-1", b"abc", "size=-1"),
        ("?size=abc", b"abc", "size=abc"),
        ("?size=", b"abc", "empty size"),
        ("?offset=abc", b"abc", "offset=abc"),
        ("?offset=-1", b"abc", "offset=-1"),
        ("?offset=1.5", b"abc", "offset=1.5"),
        ("?offset=", b"abc", "empty offset"),
        ("?offset=0x10", b"abc", "hex offset"),
        ("?offset=99999999999999999999", b"abc", "offset past u64"),
        ("?offset=18446744073709551615", b"abc", "offset u64::MAX"),
        ("?size=18446744073709551615", b"abc", "size u64::MAX"),
        ("?size=99999999999999999999", b"abc", "size past u64"),
        ("", b"", "empty body"),
        ("?offset=100", b"", "empty body at an offset"),
    ] {
        assert_eq!(a.put(&a.f(&format!("/f{q}")), body).await, 400, "{what}");
    }
    assert_eq!(
        a.put(&format!("{}/file", a.c.v2()), b"x").await,
        400,
        "empty path"
    );
    assert_eq!(
        a.put(&a.f(&path_of_len(300)), b"x").await,
        400,
        "300-byte path"
    );
    assert_eq!(
        a.put(&a.d("/f"), b"x").await,
        400,
        "PUT is not a dir operation"
    );
    assert_eq!(a.read(&a.f("/f")).await, b"base", "nothing written");
    assert_eq!(a.stat("/f").await["VER_NO"], 2);
}

#[tokio::test]
async fn write_file_400_past_the_largest_offset() {
    let a = Api::with(0, &["--max-file-size", "9223372036854775807"]).await;
    assert_eq!(a.post(&a.f("/f")).await, 201);
    // TFS offsets are signed 64-bit: the last byte is at 2^63 - 2 (given a
    // maximum file size that large).
    assert_eq!(
        a.put(&a.f("/f?offset=9223372036854775807"), b"x").await,
        400
    );
    assert_eq!(
        a.put(&a.f("/f?offset=9223372036854775806"), b"xy").await,
        400
    );
    assert_eq!(
        a.put(&a.f("/f?offset=9223372036854775808"), b"x").await,
        400
    );
    assert_eq!(a.stat("/f").await["SIZE"], 0);
    assert_eq!(
        a.put(&a.f("/f?offset=9223372036854775806"), b"x").await,
        200
    );
    let st = a.stat("/f").await;
    assert_eq!(st["SIZE"].as_u64(), Some(i64::MAX as u64));
    let got = a.read(&a.f("/f?offset=9223372036854775800&size=100")).await;
    assert_eq!(got, b"\0\0\0\0\0\0x");
    a.alive().await;
}

#[tokio::test]
async fn write_file_401() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.f("/f")).await, 201);
    let (key2, _) = a.second_app();
    let foreign = a.base(&key2, &a.c.appid.to_string(), "1");
    assert_eq!(a.put(&format!("{foreign}/file/f"), b"intruder").await, 401);
    assert_eq!(
        a.put(&format!("{foreign}/file/f?offset=0"), b"x").await,
        401
    );
    assert_eq!(a.read(&a.f("/f")).await, b"");
    assert_eq!(a.stat("/f").await["VER_NO"], 1);
}

#[tokio::test]
async fn write_file_404() {
    let a = Api::meta_only().await;
    assert_eq!(a.put(&a.f("/nope"), b"x").await, 404, "missing");
    assert_eq!(a.put(&a.f("/nope/f"), b"x").await, 404, "parent missing");
    assert_eq!(a.post(&a.d("/d")).await, 201);
    assert_eq!(a.put(&a.f("/d"), b"x").await, 404, "a dir is not a file");
    assert_eq!(a.head(&a.f("/nope")).await, 404, "a write does not create");
}

// ---------------------------------------------------------------- read_file

#[tokio::test]
async fn read_file_200_whole_and_ranges() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.f("/r")).await, 201);
    assert_eq!(a.put(&a.f("/r"), b"0123456789").await, 200);
    let resp = a.h.get(a.f("/r")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()
            .get(CONTENT_LENGTH)
            .unwrap()
            .to_str()
            .unwrap(),
        "10"
    );
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"0123456789");
    assert_eq!(a.read(&a.f("/r?offset=3")).await, b"3456789");
    assert_eq!(a.read(&a.f("/r?size=4")).await, b"0123");
    assert_eq!(a.read(&a.f("/r?offset=3&size=4")).await, b"3456");
    assert_eq!(
        a.read(&a.f("/r?offset=8&size=100")).await,
        b"89",
        "clipped at the end"
    );
    assert_eq!(a.read(&a.f("/r?offset=0&size=10")).await, b"0123456789");
    assert_eq!(a.read(&a.f("/r?offset=10")).await, b"", "at the end");
    assert_eq!(a.read(&a.f("//r/")).await, b"0123456789", "folded");
}

#[tokio::test]
async fn read_file_400() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.f("/r")).await, 201);
    assert_eq!(a.put(&a.f("/r"), b"data").await, 200);
    for (q, what) in [
        ("?offset=abc", "offset=abc"),
        ("?offset=-1", "offset=-1"),
        ("?offset=", "empty offset"),
        ("?offset=99999999999999999999", "offset past u64"),
        ("?offset=18446744073709551615", "offset u64::MAX"),
        ("?size=0", "size=0"),
        ("?size=-4", "size=-4"),
        ("?size=x", "size=x"),
        ("?size=99999999999999999999", "size past u64"),
        ("?size=18446744073709551615", "size u64::MAX"),
    ] {
        assert_eq!(a.get(&a.f(&format!("/r{q}"))).await.0, 400, "{what}");
    }
    assert_eq!(
        a.get(&format!("{}/file", a.c.v2())).await.0,
        400,
        "empty path"
    );
    assert_eq!(a.get(&a.f(&path_of_len(300))).await.0, 400, "300 bytes");
    assert_eq!(a.raw_v2("GET", "/file/x/../r", "").await, 400, "..");
    assert_eq!(
        a.get(&a.d("/r")).await.0,
        400,
        "GET without metadata is not a dir operation"
    );
    assert_eq!(a.read(&a.f("/r")).await, b"data");
}

#[tokio::test]
async fn read_file_404() {
    let a = Api::meta_only().await;
    assert_eq!(a.get(&a.f("/nope")).await.0, 404);
    assert_eq!(a.get(&a.f("/nope/f")).await.0, 404, "parent missing");
    assert_eq!(a.post(&a.d("/d")).await, 201);
    assert_eq!(a.get(&a.f("/d")).await.0, 404, "a dir");
    assert_eq!(a.post(&a.f("/gone")).await, 201);
    assert_eq!(a.del(&a.f("/gone")).await, 200);
    assert_eq!(a.get(&a.f("/gone")).await.0, 404, "removed");
}

#[tokio::test]
async fn reads_of_another_appid_are_401_unless_public_read() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.f("/f")).await, 201);
    assert_eq!(a.put(&a.f("/f"), b"secret").await, 200);
    let (key2, _) = a.second_app();
    let foreign = a.base(&key2, &a.c.appid.to_string(), "1");
    assert_eq!(a.get(&format!("{foreign}/file/f")).await.0, 401);
    assert_eq!(a.head(&format!("{foreign}/file/f")).await, 401);

    let p = Api::with(0, &["--public-read"]).await;
    assert_eq!(p.post(&p.f("/f")).await, 201);
    assert_eq!(p.put(&p.f("/f"), b"open").await, 200);
    let (key2, _) = p.second_app();
    let foreign = p.base(&key2, &p.c.appid.to_string(), "1");
    let foreign_meta = p.meta_base(&key2, &p.c.appid.to_string(), "1");
    assert_eq!(p.read(&format!("{foreign}/file/f")).await, b"open");
    assert_eq!(p.head(&format!("{foreign}/file/f")).await, 200);
    assert_eq!(p.head(&format!("{foreign}/dir/")).await, 200);
    assert_eq!(p.json(&format!("{foreign_meta}/file/f")).await["SIZE"], 4);
    assert_eq!(
        p.json(&format!("{foreign_meta}/dir/")).await[0]["NAME"],
        "f"
    );
    // Writes stay the owner's.
    assert_eq!(p.put(&format!("{foreign}/file/f"), b"x").await, 401);
    assert_eq!(p.post(&format!("{foreign}/file/g")).await, 401);
    assert_eq!(p.del(&format!("{foreign}/file/f")).await, 401);
    assert_eq!(p.mv(&format!("{foreign}/file/g"), "/f").await, 401);
    assert_eq!(p.read(&p.f("/f")).await, b"open");
}

// ---------------------------------------------------------------- rm_file

#[tokio::test]
async fn rm_file_200() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.f("/d/f?recursive=1")).await, 201);
    assert_eq!(a.put(&a.f("/d/f"), b"bytes").await, 200);
    let (code, body) = a.call(Method::DELETE, &a.f("/d/f"), None, None).await;
    assert_eq!(code, 200);
    assert!(body.is_empty());
    assert_eq!(a.head(&a.f("/d/f")).await, 404);
    assert_eq!(a.names("/d").await, Vec::<String>::new());
    // Re-created, it starts over empty at version 1.
    assert_eq!(a.post(&a.f("/d/f")).await, 201);
    assert_eq!(a.read(&a.f("/d/f")).await, b"");
    assert_eq!(a.stat("/d/f").await["VER_NO"], 1);
    assert_eq!(a.del(&a.f("//d//f")).await, 200, "folded");
    assert_eq!(a.del(&a.d("/d")).await, 200, "dir now empty");
}

#[tokio::test]
async fn rm_file_400() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.f("/f")).await, 201);
    assert_eq!(
        a.del(&format!("{}/file", a.c.v2())).await,
        400,
        "empty path"
    );
    assert_eq!(a.del(&a.f("/")).await, 400, "the root");
    assert_eq!(a.del(&a.f(&path_of_len(300))).await, 400, "300 bytes");
    assert_eq!(a.del(&a.f(&format!("/{}", long_name(247)))).await, 400);
    assert_eq!(a.raw_v2("DELETE", "/file/x/../f", "").await, 400, "..");
    let appid20 = format!(
        "{}/file/f",
        a.base(&a.c.appkey, "12345678901234567890", "1")
    );
    assert_eq!(a.del(&appid20).await, 400, "20-digit appid");
    assert_eq!(a.head(&a.f("/f")).await, 200);
}

#[tokio::test]
async fn rm_file_401() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.f("/f")).await, 201);
    let (key2, _) = a.second_app();
    let foreign = a.base(&key2, &a.c.appid.to_string(), "1");
    assert_eq!(a.del(&format!("{foreign}/file/f")).await, 401);
    assert_eq!(a.head(&a.f("/f")).await, 200);
}

#[tokio::test]
async fn rm_file_404() {
    let a = Api::meta_only().await;
    assert_eq!(a.del(&a.f("/nope")).await, 404);
    assert_eq!(a.del(&a.f("/nope/f")).await, 404, "parent missing");
    assert_eq!(a.post(&a.d("/d")).await, 201);
    assert_eq!(a.del(&a.f("/d")).await, 404, "a dir is not a file");
    assert_eq!(a.head(&a.d("/d")).await, 200, "dir untouched");
}

// ---------------------------------------------------------------- mv_file

#[tokio::test]
async fn mv_file_200() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.f("/file_src")).await, 201);
    assert_eq!(a.put(&a.f("/file_src"), b"content").await, 200);
    let (code, body) = a
        .call(Method::POST, &a.f("/file_dest"), Some(b"/file_src"), None)
        .await;
    assert_eq!(code, 200);
    assert!(body.is_empty());
    assert_eq!(a.head(&a.f("/file_src")).await, 404);
    assert_eq!(a.read(&a.f("/file_dest")).await, b"content");
    assert_eq!(a.stat("/file_dest").await["SIZE"], 7);
    assert_eq!(a.post(&a.d("/d")).await, 201);
    assert_eq!(a.mv(&a.f("/d/f"), "/file_dest").await, 200, "into a dir");
    assert_eq!(
        a.mv(&a.f("/x/y/f?recursive=1"), "/d/f").await,
        200,
        "recursive"
    );
    assert_eq!(a.head(&a.d("/x/y")).await, 200);
    assert_eq!(a.read(&a.f("/x/y/f")).await, b"content");
    assert_eq!(a.stat("/x/y/f").await["NAME"], "/x/y/f");
    assert_eq!(a.names("/d").await, Vec::<String>::new());
}

#[tokio::test]
async fn mv_file_400() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.f("/f")).await, 201);
    assert_eq!(a.mv(&a.f("/f"), "/f").await, 400, "same path");
    assert_eq!(a.mv(&a.f("/f"), "//f/").await, 400, "same path, folded");
    assert_eq!(
        a.mv(&a.f("/f?overwrite=1"), "/f").await,
        400,
        "same path, overwrite"
    );
    assert_eq!(a.mv(&a.f("/g"), "f").await, 400, "relative source");
    assert_eq!(a.mv(&a.f("/g"), "").await, 400, "empty source");
    assert_eq!(a.mv(&a.f("/g"), "/x/../f").await, 400, ".. in the source");
    assert_eq!(
        a.mv_raw(&a.f("/g"), b"/\x80").await,
        400,
        "non-ASCII header"
    );
    assert_eq!(
        a.mv(&a.f("/g"), &path_of_len(300)).await,
        400,
        "300-byte source"
    );
    assert_eq!(a.mv(&a.f("/g?overwrite=2"), "/f").await, 400, "overwrite=2");
    assert_eq!(a.mv(&a.f("/g?recursive=x"), "/f").await, 400, "recursive=x");
    assert_eq!(
        a.mv(&a.f(&path_of_len(300)), "/f").await,
        400,
        "300-byte dest"
    );
    assert_eq!(
        a.raw_v2("POST", "/file/../g", "x-ali-move-source: /f\r\n")
            .await,
        400
    );
    assert_eq!(a.names("/").await, ["f"]);
}

#[tokio::test]
async fn mv_file_401() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.f("/f")).await, 201);
    let (key2, _) = a.second_app();
    let foreign = a.base(&key2, &a.c.appid.to_string(), "1");
    assert_eq!(a.mv(&format!("{foreign}/file/g"), "/f").await, 401);
    assert_eq!(a.names("/").await, ["f"]);
}

#[tokio::test]
async fn mv_file_404() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.f("/a")).await, 201);
    assert_eq!(a.put(&a.f("/a"), b"A").await, 200);
    assert_eq!(a.post(&a.f("/b")).await, 201);
    assert_eq!(a.put(&a.f("/b"), b"B").await, 200);
    assert_eq!(a.post(&a.d("/d")).await, 201);
    assert_eq!(a.mv(&a.f("/b"), "/a").await, 404, "destination exists");
    assert_eq!(a.mv(&a.f("/b?overwrite=0"), "/a").await, 404, "overwrite=0");
    assert_eq!(a.mv(&a.f("/d"), "/a").await, 404, "destination is a dir");
    assert_eq!(
        a.mv(&a.f("/d?overwrite=1"), "/a").await,
        404,
        "a dir is never overwritten"
    );
    assert_eq!(a.mv(&a.f("/c"), "/nope").await, 404, "source missing");
    assert_eq!(a.mv(&a.f("/c"), "/d").await, 404, "source is a dir");
    assert_eq!(
        a.mv(&a.f("/x/c"), "/a").await,
        404,
        "destination parent missing"
    );
    assert_eq!(
        a.mv(&a.f("/b/c?recursive=1"), "/a").await,
        404,
        "destination parent is a file"
    );
    assert_eq!(a.read(&a.f("/a")).await, b"A");
    assert_eq!(a.read(&a.f("/b")).await, b"B");
}

#[tokio::test]
async fn mv_file_overwrite_extension_replaces_the_destination() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.f("/new")).await, 201);
    assert_eq!(a.put(&a.f("/new"), b"new content").await, 200);
    assert_eq!(a.post(&a.f("/old")).await, 201);
    assert_eq!(a.put(&a.f("/old"), b"old").await, 200);
    assert_eq!(a.mv(&a.f("/old?overwrite=1"), "/new").await, 200);
    assert_eq!(a.read(&a.f("/old")).await, b"new content");
    assert_eq!(a.head(&a.f("/new")).await, 404);
    assert_eq!(a.names("/").await, ["old"]);
    // Without a destination it is a plain move.
    assert_eq!(a.mv(&a.f("/other?overwrite=1"), "/old").await, 200);
    assert_eq!(a.read(&a.f("/other")).await, b"new content");
}

// ---------------------------------------------------------------- ls_file

#[tokio::test]
async fn ls_file_200_exact_keys_and_versions() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.d("/d")).await, 201);
    let d_id = a.ls("/").await[0]["ID"].as_i64().unwrap();
    assert_eq!(a.post(&a.f("/d/file_1")).await, 201);
    let st = a.stat("/d/file_1").await;
    assert_keys(&st);
    assert_eq!(st["NAME"], "/d/file_1", "the full path");
    assert_eq!(st["PID"].as_i64(), Some(d_id));
    assert_eq!(st["ID"], 0);
    assert_eq!(st["SIZE"], 0);
    assert_eq!(st["IS_FILE"], true);
    assert_eq!(st["VER_NO"], 1, "created at version 1");
    assert_tfs_time(&st["CREATE_TIME"]);
    assert_tfs_time(&st["MODIFY_TIME"]);
    let mut size = 0;
    for (i, chunk) in [&b"a"[..], b"bc", b"def"].iter().enumerate() {
        assert_eq!(a.put(&a.f("/d/file_1"), chunk).await, 200);
        size += chunk.len();
        let st = a.stat("/d/file_1").await;
        assert_eq!(st["VER_NO"], i as u64 + 2, "each write adds 1");
        assert_eq!(st["SIZE"], size as u64);
    }
    assert_eq!(
        a.stat("//d//file_1").await["NAME"],
        "/d/file_1",
        "folded name"
    );
}

#[tokio::test]
async fn ls_file_400_and_404() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.d("/d")).await, 201);
    let vm = a.c.v2_meta();
    assert_eq!(a.get(&format!("{vm}/file")).await.0, 400, "empty path");
    assert_eq!(a.get(&a.mf(&path_of_len(300))).await.0, 400, "300 bytes");
    assert_eq!(a.get(&a.mf(&format!("/{}", long_name(247)))).await.0, 400);
    assert_eq!(a.get(&a.mf("/a%00")).await.0, 400, "NUL");
    assert_eq!(
        a.get(&format!("{vm}/files/x")).await.0,
        400,
        "neither dir nor file"
    );
    assert_eq!(a.get(&a.mf("/nope")).await.0, 404, "missing");
    assert_eq!(a.get(&a.mf("/nope/f")).await.0, 404, "parent missing");
    assert_eq!(a.get(&a.mf("/d")).await.0, 404, "a dir");
    assert_eq!(a.get(&a.mf("/")).await.0, 404, "the root");
}

// ---------------------------------------------------------------- HEAD file

#[tokio::test]
async fn head_file_200_400_404() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.f("/d/file_1?recursive=1")).await, 201);
    let (code, body) = a.call(Method::HEAD, &a.f("/d/file_1"), None, None).await;
    assert_eq!(code, 200);
    assert!(body.is_empty());
    assert_eq!(a.head(&a.f("//d/file_1/")).await, 200, "folded");
    assert_eq!(
        a.head(&format!("{}/file", a.c.v2())).await,
        400,
        "empty path"
    );
    assert_eq!(a.head(&a.f(&path_of_len(300))).await, 400, "300 bytes");
    assert_eq!(a.head(&a.f("/x%00")).await, 400, "NUL");
    assert_eq!(a.raw_v2("HEAD", "/file/d/../d/file_1", "").await, 400, "..");
    assert_eq!(a.head(&a.f("/d/nope")).await, 404);
    assert_eq!(a.head(&a.f("/nope/file_1")).await, 404);
    assert_eq!(a.head(&a.f("/d")).await, 404, "a dir is not a file");
}

// ---------------------------------------------------------------- data

#[tokio::test]
async fn binary_bodies_round_trip_every_byte_value() {
    let a = Api::meta_only().await;
    let all: Vec<u8> = (0..=255u8).collect();
    let body: Vec<u8> = all.iter().chain(all.iter().rev()).copied().collect();
    assert_eq!(a.post(&a.f("/bin")).await, 201);
    assert_eq!(a.put(&a.f("/bin"), &body).await, 200);
    assert_eq!(a.put(&a.f("/bin"), &all).await, 200);
    let mut want = body.clone();
    want.extend_from_slice(&all);
    assert_eq!(a.read(&a.f("/bin")).await, want);
    assert_eq!(
        a.read(&a.f("/bin?offset=254&size=4")).await,
        [254, 255, 255, 254]
    );
    assert_eq!(a.read(&a.f("/bin?offset=511&size=2")).await, [0, 0]);
    assert_eq!(a.stat("/bin").await["SIZE"], 768);
}

#[tokio::test]
async fn large_writes_go_through_providers_and_read_back() {
    let a = Api::with(6, &[]).await;
    assert_eq!(a.post(&a.f("/big")).await, 201);
    assert_eq!(a.c.bytes_received().await, 0);
    // Exactly 8 KiB stays inline.
    let inline = random_bytes(8192, 1);
    assert_eq!(a.put(&a.f("/big"), &inline).await, 200);
    assert_eq!(a.c.bytes_received().await, 0, "8192 bytes are inline");
    // Just past 8 KiB is replicated; past 1 MiB erasure-coded; past a
    // partition (4 MiB) several partitions.
    let sizes = [8193usize, 1 << 20, (1 << 20) + 1, (5 << 20) + 3];
    let mut want = inline.clone();
    for (i, &n) in sizes.iter().enumerate() {
        let data = random_bytes(n, 10 + i as u64);
        let before = a.c.bytes_received().await;
        assert_eq!(a.put(&a.f("/big"), &data).await, 200, "{n} bytes");
        assert!(
            a.c.bytes_received().await > before + n as u64 / 2,
            "{n} bytes reached providers"
        );
        want.extend_from_slice(&data);
    }
    let got = a.read(&a.f("/big")).await;
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the whole file came back different");
    // Ranges across fragment and partition boundaries.
    for (off, len) in [
        (8190usize, 10usize),
        (8192 + 8193 - 5, 100),
        (want.len() - (5 << 20) - 10, (4 << 20) + 20),
        (want.len() - 7, 1000),
    ] {
        let got = a.read(&a.f(&format!("/big?offset={off}&size={len}"))).await;
        let end = (off + len).min(want.len());
        assert!(got == want[off..end], "range {off}+{len}");
    }
    // A separate file written in one 3 MiB PUT.
    let one = random_bytes(3 << 20, 99);
    assert_eq!(a.post(&a.f("/one")).await, 201);
    assert_eq!(a.put(&a.f("/one"), &one).await, 200);
    assert!(a.read(&a.f("/one")).await == one);
    assert_eq!(a.stat("/big").await["SIZE"], want.len() as u64);
    assert_eq!(a.stat("/big").await["VER_NO"], 6);

    // A 66 MiB file of holes and data, read whole: the server sends it in
    // 32 MiB windows, and fragments (and erasure partitions) cross them.
    let mib = 1usize << 20;
    let parts = [
        (0usize, random_bytes(100, 20)),
        ((32 * mib) - 4500, random_bytes(9000, 21)),
        ((61 * mib) + 5, random_bytes((5 * mib) - 100, 22)),
    ];
    assert_eq!(a.post(&a.f("/holes")).await, 201);
    let mut want = vec![0u8; parts[2].0 + parts[2].1.len()];
    for (off, data) in &parts {
        let url = a.f(&format!("/holes?offset={off}"));
        assert_eq!(a.put(&url, data).await, 200, "write at {off}");
        want[*off..off + data.len()].copy_from_slice(data);
    }
    let got = a.read(&a.f("/holes")).await;
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the 66 MiB file came back different");
    let off = 32 * mib - 10;
    let got = a
        .read(&a.f(&format!("/holes?offset={off}&size={}", 33 * mib)))
        .await;
    assert!(
        got == want[off..off + 33 * mib],
        "a range over three windows"
    );
}

#[tokio::test]
async fn sparse_file_far_out_reads_without_harm() {
    let a = Api::meta_only().await;
    // As large as the default maximum file size allows.
    let tib: u64 = 1 << 40;
    assert_eq!(a.post(&a.f("/sparse")).await, 201);
    assert_eq!(
        a.put(&a.f(&format!("/sparse?offset={}", tib - 1)), b"Z")
            .await,
        200
    );
    assert_eq!(a.stat("/sparse").await["SIZE"], tib);
    let got = a
        .read(&a.f(&format!("/sparse?offset={}&size=10", tib - 3)))
        .await;
    assert_eq!(got, b"\0\0Z");
    // A whole read of the 1 TiB file starts streaming zeros; the server
    // neither buffers it all nor falls over when the client goes away.
    let resp = a.h.get(a.f("/sparse")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.content_length(), Some(tib));
    let mut stream = resp;
    let chunk = stream.chunk().await.unwrap().expect("some bytes");
    assert!(!chunk.is_empty() && chunk.iter().all(|&b| b == 0));
    drop(stream);
    a.alive().await;
    assert_eq!(a.put(&a.f("/sparse?offset=0"), b"A").await, 200);
    assert_eq!(a.read(&a.f("/sparse?size=2")).await, b"A\0");
}

#[tokio::test]
async fn percent_encoded_names_with_spaces() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.d("/my%20dir")).await, 201);
    assert_eq!(a.post(&a.f("/my%20dir/a%20file%20.txt")).await, 201);
    assert_eq!(
        a.put(&a.f("/my%20dir/a%20file%20.txt"), b"spaced").await,
        200
    );
    assert_eq!(a.names("/").await, ["my dir"]);
    assert_eq!(a.names("/my%20dir").await, ["a file .txt"]);
    assert_eq!(
        a.stat("/my%20dir/a%20file%20.txt").await["NAME"],
        "/my dir/a file .txt"
    );
    assert_eq!(a.read(&a.f("/my%20dir/a%20file%20.txt")).await, b"spaced");
    assert_eq!(
        a.post(&a.f("/my%20dir/a%20file%20.txt")).await,
        409,
        "same name"
    );
    // '+' is a plus in a path; UTF-8 names decode.
    assert_eq!(a.post(&a.f("/a+b")).await, 201);
    assert_eq!(a.post(&a.f("/%E6%96%87%E4%BB%B6")).await, 201);
    assert_eq!(a.head(&a.f("/%E6%96%87%E4%BB%B6")).await, 200);
    assert_eq!(a.names("/").await, ["my dir", "a+b", "文件"]);
    assert_eq!(a.head(&a.f("/a%20b")).await, 404);
    assert_eq!(a.head(&a.f("/a%2Bb")).await, 200);
    // A 246-byte name may be spelled with more bytes on the wire.
    let name = "%41".repeat(246);
    assert_eq!(a.post(&a.f(&format!("/{name}"))).await, 201);
    assert_eq!(
        a.stat(&format!("/{name}")).await["NAME"],
        format!("/{}", "A".repeat(246))
    );
}

#[tokio::test]
async fn uids_are_separate_namespaces() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.f("/f")).await, 201);
    assert_eq!(a.put(&a.f("/f"), b"uid 1").await, 200);
    let id = a.c.appid.to_string();
    let u2 = a.base(&a.c.appkey, &id, "2");
    let big = a.base(&a.c.appkey, &id, "9223372036854775808");
    assert_eq!(a.head(&format!("{u2}/file/f")).await, 404);
    assert_eq!(a.post(&format!("{u2}/file/f")).await, 201);
    assert_eq!(a.put(&format!("{u2}/file/f"), b"uid 2").await, 200);
    assert_eq!(
        a.post(&format!("{big}/file/f")).await,
        201,
        "a 19-digit uid"
    );
    assert_eq!(a.read(&format!("{u2}/file/f")).await, b"uid 2");
    assert_eq!(a.read(&a.f("/f")).await, b"uid 1");
    assert_eq!(a.read(&format!("{big}/file/f")).await, b"");
}

// ---------------------------------------------------------------- garbage

#[tokio::test]
async fn garbage_query_strings() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.f("/f")).await, 201);
    assert_eq!(a.put(&a.f("/f"), b"abc").await, 200);
    let cases: Vec<(Method, String)> = vec![
        (Method::POST, a.d("/x?recursive=%ZZ")),
        (Method::POST, a.d("/x?recursive=1%00")),
        (Method::POST, a.d("/x?recursive=%FF")),
        (Method::POST, a.d("/x?recursive=%")),
        (Method::POST, a.d("/x?recursive==1")),
        (Method::POST, a.d("/x?recursive=1=1")),
        (Method::GET, a.f("/f?offset=%20%201")),
        (Method::GET, a.f("/f?size=1e3")),
        (Method::GET, a.f("/f?offset=0&size=&")),
        (Method::GET, a.f("/f?&&&offset=--1")),
    ];
    for (m, url) in &cases {
        assert_eq!(a.st(m.clone(), url).await, 400, "{m} {url}");
        a.alive().await;
    }
    assert_eq!(a.head(&a.d("/x")).await, 404, "nothing created");
    // Unknown keys and stray separators are ignored.
    assert_eq!(a.post(&a.d("/y?&&=&foo=bar&%%%")).await, 201);
    assert_eq!(a.read(&a.f("/f?&&size=2&&")).await, b"ab");
}

#[tokio::test]
async fn garbage_paths() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.d("/keep")).await, 201);
    let v2 = a.c.v2();
    let long = path_of_len(300);
    let cases: Vec<(Method, String, u16)> = vec![
        (Method::POST, a.d(&long), 400),
        (Method::POST, a.f(&long), 400),
        (Method::GET, a.md(&long), 400),
        (Method::POST, format!("{v2}/dir"), 400),
        (Method::POST, format!("{v2}/file"), 400),
        (Method::POST, format!("{v2}/"), 400),
        (Method::POST, v2.clone(), 400),
        (Method::POST, format!("{v2}/dirx/a"), 400),
        (Method::POST, format!("{v2}/DIR/a"), 400),
        (Method::GET, format!("{v2}/metadata/dir/"), 400),
        (Method::POST, a.d("/%C3%28"), 400),
        (Method::POST, a.d(&"/x".repeat(200)), 400),
    ];
    for (m, url, want) in &cases {
        assert_eq!(a.st(m.clone(), url).await, *want, "{m} {url}");
        a.alive().await;
    }
    for tail in [
        "/dir/..",
        "/dir/../..",
        "/dir/keep/../../etc",
        "/file/%2e%2e/%2e%2e/etc/passwd",
        "/dir/%2E",
    ] {
        assert_eq!(a.raw_v2("POST", tail, "").await, 400, "{tail}");
        assert_eq!(a.raw_v2("GET", tail, "").await, 400, "{tail}");
        a.alive().await;
    }
    assert_eq!(a.names("/").await, ["keep"]);
    // A '%' that starts no escape is kept as it is.
    assert_eq!(a.post(&a.d("/%%%")).await, 201);
    assert_eq!(a.post(&a.d("/a%2")).await, 201);
    assert_eq!(a.names("/").await, ["%%%", "a%2", "keep"]);
}

#[tokio::test]
async fn garbage_routes_and_methods() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.f("/f")).await, 201);
    let m = &a.c.meta.url;
    // nginx-tfs: a path it cannot parse is 400 (docs/nginx-tfs-compat.md).
    for (url, want) in [
        (format!("{m}/v2/"), 400),
        (format!("{m}/v2/x"), 400),
        (format!("{m}/nothing"), 400),
        (format!("{m}/v2"), 400),
        (format!("{m}/v2/x/y"), 400),
        (format!("{m}/v2/{}/", a.c.appkey), 400),
        (format!("{m}/v2/{}/{}", a.c.appkey, a.c.appid), 400),
        (format!("{m}/v2/{}/appid/x", a.c.appkey), 400),
    ] {
        for meth in [Method::GET, Method::POST, Method::DELETE] {
            assert_eq!(a.st(meth.clone(), &url).await, want, "{meth} {url}");
        }
        a.alive().await;
    }
    let brew = Method::from_bytes(b"BREW").unwrap();
    for meth in [Method::PATCH, Method::OPTIONS, Method::TRACE, brew] {
        for url in [a.f("/f"), a.d("/"), a.mf("/f"), a.md("/")] {
            assert_eq!(a.st(meth.clone(), &url).await, 400, "{meth} {url}");
        }
        a.alive().await;
    }
    assert_eq!(a.st(Method::PATCH, &a.f("/new")).await, 400);
    assert_eq!(a.head(&a.f("/new")).await, 404, "PATCH created nothing");
    assert_eq!(a.st(Method::PUT, &a.d("/x")).await, 400, "PUT on a dir");
    assert_eq!(a.head(&a.d("/x")).await, 404);
}

#[tokio::test]
async fn garbage_raw_http() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.f("/f")).await, 201);
    let key = &a.c.appkey;
    let id = a.c.appid;
    let reqs: Vec<Vec<u8>> = vec![
        // Not HTTP.
        b"HELLO\r\n\r\n".to_vec(),
        // A space in the target.
        format!("GET /v2/{key}/{id}/1/file/a b HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes(),
        // A body longer than its length says, then garbage.
        format!(
            "PUT /v2/{key}/{id}/1/file/f HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\nxyz"
        )
        .into_bytes(),
        // A broken header line.
        format!("POST /v2/{key}/{id}/1/dir/z HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n")
            .into_bytes(),
    ];
    for r in &reqs {
        let code = a.raw(r).await;
        assert!(
            (400..500).contains(&code),
            "{:?} gave {code}",
            String::from_utf8_lossy(r)
        );
        a.alive().await;
    }
    // A move source header of raw bytes.
    let mut r = format!(
        "POST /v2/{key}/{id}/1/file/g HTTP/1.1\r\nHost: x\r\nConnection: close\r\nx-ali-move-source: /"
    )
    .into_bytes();
    r.extend_from_slice(b"\xc3\x28\xff\r\n\r\n");
    assert_eq!(a.raw(&r).await, 400);
    a.alive().await;
    assert_eq!(a.names("/").await, ["f"], "nothing created or moved");
    assert_eq!(a.read(&a.f("/f")).await, b"");
}

#[tokio::test]
async fn garbage_headers_on_moves() {
    let a = Api::meta_only().await;
    assert_eq!(a.post(&a.d("/d")).await, 201);
    assert_eq!(a.post(&a.f("/f")).await, 201);
    let bad: Vec<&[u8]> = vec![
        b"", b" ", b"d", b"//", b"/d/..", b"/%2e%2e", b"/\xff", b"/%00", b"/%FF",
    ];
    for src in &bad {
        assert_eq!(a.mv_raw(&a.d("/e"), src).await, 400, "dir source {src:?}");
        assert_eq!(a.mv_raw(&a.f("/g"), src).await, 400, "file source {src:?}");
        a.alive().await;
    }
    assert_eq!(a.names("/").await.len(), 2);
    // Without the header, the POST creates.
    assert_eq!(a.post(&a.d("/e")).await, 201);
}
