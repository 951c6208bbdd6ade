//! The TFS v1 REST API (native TFS file names) end to end: a real metadata
//! server and providers on loopback, plain HTTP as the client.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tfsfs::meta::tfs_name::{suffix_hash, TfsName};

/// The keys of a stat answer, in the document's order.
const STAT_KEYS: [&str; 10] = [
    "FILE_NAME",
    "BLOCK_ID",
    "FILE_ID",
    "OFFSET",
    "SIZE",
    "OCCUPY_SIZE",
    "MODIFY_TIME",
    "CREATE_TIME",
    "STATUS",
    "CRC",
];

struct V1 {
    c: TestCluster,
    http: reqwest::Client,
    appkey: String,
}

struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    fn name(&self) -> String {
        assert_eq!(
            self.status,
            StatusCode::OK,
            "{:?}",
            String::from_utf8_lossy(&self.body)
        );
        let v = self.json();
        assert_eq!(v.as_object().unwrap().len(), 1, "{v}");
        v["TFS_FILE_NAME"].as_str().unwrap().to_string()
    }
}

/// Creates an app in the cluster's store, with `appkey` if given.
fn create_app(c: &TestCluster, appkey: Option<&str>) -> String {
    let mut args = vec!["app", "create"];
    if let Some(k) = appkey {
        args.extend(["--appkey", k]);
    }
    let v: Value = serde_json::from_str(&c.admin(&args)).unwrap();
    v["appkey"].as_str().unwrap().to_string()
}

impl V1 {
    async fn start() -> V1 {
        let c = TestCluster::start(6).await;
        let appkey = c.appkey.clone();
        V1 {
            c,
            http: reqwest::Client::new(),
            appkey,
        }
    }

    fn base(&self) -> String {
        format!("{}/v1/{}", self.c.meta.url, self.appkey)
    }

    async fn raw(&self, method: Method, url: &str, body: Option<Vec<u8>>) -> Reply {
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.body(b);
        }
        let r = req.send().await.unwrap();
        Reply {
            status: r.status(),
            headers: r.headers().clone(),
            body: r.bytes().await.unwrap().to_vec(),
        }
    }

    /// `POST /v1/{appkey}?{query}`.
    async fn write(&self, query: &str, body: &[u8]) -> Reply {
        let url = format!("{}?{query}", self.base());
        self.raw(Method::POST, &url, Some(body.to_vec())).await
    }

    /// `METHOD /v1/{appkey}/{path}`.
    async fn call(&self, method: Method, path: &str, body: &[u8]) -> Reply {
        let url = format!("{}/{path}", self.base());
        self.raw(method, &url, Some(body.to_vec())).await
    }

    async fn read(&self, path: &str) -> Reply {
        self.call(Method::GET, path, b"").await
    }

    async fn stat(&self, path: &str) -> Reply {
        self.call(Method::GET, &format!("metadata/{path}"), b"")
            .await
    }

    async fn status_of(&self, name: &str) -> u64 {
        let r = self.stat(&format!("{name}?type=1")).await;
        assert_eq!(r.status, StatusCode::OK);
        r.json()["STATUS"].as_u64().unwrap()
    }

    async fn new_file(&self, query: &str, body: &[u8]) -> String {
        self.write(query, body).await.name()
    }
}

/// `Fri, 09 Mar 2012 13:40:32 UTC+0800`.
fn is_tfs_time(s: &str) -> bool {
    chrono::DateTime::parse_from_str(s, "%a, %d %b %Y %H:%M:%S UTC%z").is_ok()
        && s.len() == "Fri, 09 Mar 2012 13:40:32 UTC+0800".len()
}

fn assert_stat(v: &Value, raw: &[u8], data: &[u8]) {
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    let mut sorted = STAT_KEYS.to_vec();
    sorted.sort();
    assert_eq!(keys, sorted, "exactly the document's keys");
    // And in the document's order on the wire.
    let text = String::from_utf8_lossy(raw);
    let at: Vec<usize> = STAT_KEYS
        .iter()
        .map(|k| text.find(&format!("\"{k}\"")).unwrap())
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{text}");
    assert_eq!(v["SIZE"].as_u64().unwrap(), data.len() as u64);
    assert_eq!(v["OCCUPY_SIZE"].as_u64().unwrap(), data.len() as u64 + 36);
    assert_eq!(v["CRC"].as_u64().unwrap(), u64::from(crc32fast::hash(data)));
    assert!(is_tfs_time(v["MODIFY_TIME"].as_str().unwrap()), "{v}");
    assert!(is_tfs_time(v["CREATE_TIME"].as_str().unwrap()), "{v}");
    assert_eq!(v["FILE_NAME"].as_str().unwrap().len(), 18);
}

/// The ids a name encodes agree with its stat.
fn assert_ids(name: &str, v: &Value) {
    let (n, _) = TfsName::parse(name).unwrap();
    assert_eq!(v["BLOCK_ID"].as_u64().unwrap(), u64::from(n.bits.block_id));
    assert_eq!(v["FILE_ID"].as_u64().unwrap() as u32, n.bits.seq_id);
}

#[tokio::test]
async fn document_examples() {
    let mut t = V1::start().await;
    // The document's appkey.
    t.appkey = create_app(&t.c, Some("tfs"));
    let data = b"0123456789abcdefghijkl".to_vec();
    assert_eq!(data.len(), 22);

    // POST /v1/tfs → {"TFS_FILE_NAME": "T1..."}
    let r = t.write("", &data).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-type"], "application/json");
    let name = r.name();
    assert_eq!(name.len(), 18);
    assert!(name.starts_with("T1"), "{name}");
    let (n, suffix) = TfsName::parse(&name).unwrap();
    assert_eq!(
        (n.large, n.cluster, n.bits.suffix_hash, suffix),
        (false, 1, 0, "")
    );

    // POST /v1/tfs?suffix=.jpg&simple_name=1 → "T1....jpg"
    let jpg = t.new_file("suffix=.jpg&simple_name=1", &data).await;
    assert_eq!(jpg.len(), 22);
    assert!(jpg.starts_with("T1") && jpg.ends_with(".jpg"), "{jpg}");
    let (j, suffix) = TfsName::parse(&jpg).unwrap();
    assert_eq!((j.bits.suffix_hash, suffix), (0, ".jpg"));
    assert_ne!(j.bits.seq_id, n.bits.seq_id);

    // PUT /v1/tfs/{name} → the same name.
    let new_data = b"updated: twenty-two b.".to_vec();
    assert_eq!(new_data.len(), 22);
    let r = t.call(Method::PUT, &name, &new_data).await;
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.name(), name);

    // GET /v1/tfs/{name} → the data, with Last-Modified.
    let r = t.read(&name).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, new_data);
    let lm = r.headers["last-modified"].to_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc2822(lm).is_ok(), "{lm}");
    assert!(lm.ends_with(" GMT"), "{lm}");

    // GET /v1/tfs/{name}.jpg
    let r = t.read(&jpg).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, data);

    // GET /v1/tfs/metadata/{name}
    let r = t.stat(&name).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-type"], "application/json");
    let v = r.json();
    assert_stat(&v, &r.body, &new_data);
    assert_ids(&name, &v);
    assert_eq!(v["FILE_NAME"], name.as_str());
    assert_eq!(v["STATUS"], 0);
    assert_eq!(v["FILE_ID"].as_u64().unwrap(), u64::from(n.bits.seq_id));
    // A fresh server's first file is block 1, file 1, at offset 0; the
    // second follows it (22 bytes + TFS's 36-byte header), and the update
    // was written after both.
    assert_eq!(name, "T1ZRETByJT1RCvBVdK");
    assert_eq!(jpg, "T1ZRETByhT1RCvBVdK.jpg");
    assert_eq!(
        (v["BLOCK_ID"].as_u64(), v["FILE_ID"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(v["OFFSET"], 116);
    let j = t.stat(&jpg).await.json();
    assert_eq!(
        (j["BLOCK_ID"].as_u64(), j["OFFSET"].as_u64()),
        (Some(1), Some(58))
    );
    let jpg_id = (u64::from(suffix_hash(b".jpg")) << 32) | 2;
    assert_eq!(j["FILE_ID"].as_u64(), Some(jpg_id));

    // DELETE /v1/tfs/{name} → 200, no body.
    let r = t.call(Method::DELETE, &name, b"").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty());
    assert_eq!(t.read(&name).await.status, StatusCode::NOT_FOUND);
    assert_eq!(t.status_of(&name).await, 1);

    // DELETE /v1/tfs/{name}.jpg?hide=1 → 200, hidden.
    let r = t.call(Method::DELETE, &format!("{jpg}?hide=1"), b"").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty());
    assert_eq!(t.read(&jpg).await.status, StatusCode::NOT_FOUND);
    assert_eq!(t.status_of(&jpg).await, 4);

    // The document's own name is well formed, but not a file here.
    assert_eq!(
        t.read("T1FOZHB4ET1RCvBVdK").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        t.stat("T1FOZHB4ET1RCvBVdK").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn status_code_rows() {
    let t = V1::start().await;
    let data = b"status codes".to_vec();
    let name = t.new_file("", &data).await;
    let large = t.new_file("large_file=1", &data).await;
    assert!(large.starts_with("L1"), "{large}");
    let unknown = "T1FOZHB4ET1RCvBVdK";
    let bad_names = [
        "T1FOZHB4ET1RCvBVd",
        "X1FOZHB4ET1RCvBVdK",
        "T1FOZHB4ET1RCv!VdK",
        "TxFOZHB4ET1RCvBVdK",
    ];

    // Write: 200, 400.
    assert_eq!(
        t.write("suffix=.txt&simple_name=0&large_file=0", &data)
            .await
            .status,
        StatusCode::OK
    );
    for q in [
        "simple_name=2",
        "simple_name=11",
        "simple_name=",
        "large_file=yes",
        "large_file=-1",
        "simple_name=%FF",
    ] {
        assert_eq!(
            t.write(q, &data).await.status,
            StatusCode::BAD_REQUEST,
            "POST ?{q}"
        );
    }
    let long = format!("suffix={}", "x".repeat(110));
    assert_eq!(t.write(&long, &data).await.status, StatusCode::BAD_REQUEST);
    let ok = format!("suffix={}", "x".repeat(109));
    assert_eq!(t.write(&ok, &data).await.status, StatusCode::OK);
    assert_eq!(
        t.write("", b"").await.status,
        StatusCode::BAD_REQUEST,
        "empty body"
    );
    assert_eq!(
        t.call(Method::POST, &name, &data).await.status,
        StatusCode::BAD_REQUEST
    );

    // Update: 200, 400 (and 404 for a file that is not there).
    assert_eq!(t.call(Method::PUT, &name, b"new").await.name(), name);
    assert_eq!(
        t.call(Method::PUT, &large, b"new").await.status,
        StatusCode::BAD_REQUEST
    );
    let r = t
        .call(Method::PUT, &format!("{name}?large_file=0"), b"new")
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = t
        .call(Method::PUT, &format!("{name}?simple_name=3"), b"new")
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        t.call(Method::PUT, &name, b"").await.status,
        StatusCode::BAD_REQUEST
    );
    for b in bad_names {
        assert_eq!(
            t.call(Method::PUT, b, b"x").await.status,
            StatusCode::BAD_REQUEST,
            "{b}"
        );
    }
    assert_eq!(
        t.call(Method::PUT, unknown, b"x").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(t.read(&name).await.body, b"new");

    // Read: 200, 400, 404.
    assert_eq!(t.read(&name).await.status, StatusCode::OK);
    assert_eq!(t.read(&large).await.body, data);
    for q in [
        "size=0",
        "size=-1",
        "size=9223372036854775808",
        "offset=-1",
        "offset=x",
        "offset=",
        "offset=18446744073709551615",
        "type=2",
        "type=01",
    ] {
        let r = t.read(&format!("{name}?{q}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "GET ?{q}");
    }
    for b in bad_names {
        assert_eq!(t.read(b).await.status, StatusCode::BAD_REQUEST, "{b}");
    }
    assert_eq!(t.read(unknown).await.status, StatusCode::NOT_FOUND);
    // The same ids as another kind or cluster are other files.
    let as_small = format!("T{}", &large[1..]);
    assert_eq!(t.read(&as_small).await.status, StatusCode::NOT_FOUND);
    let other_cluster = format!("T2{}", &name[2..]);
    assert_eq!(t.read(&other_cluster).await.status, StatusCode::NOT_FOUND);

    // Delete: 200, 400, 404.
    for q in ["hide=2", "hide=10", "hide=", "type=1", "type=8"] {
        let r = t.call(Method::DELETE, &format!("{name}?{q}"), b"").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "DELETE ?{q}");
    }
    let r = t
        .call(Method::DELETE, &format!("{large}?type=2"), b"")
        .await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "large files are not undeleted"
    );
    for b in bad_names {
        assert_eq!(
            t.call(Method::DELETE, b, b"").await.status,
            StatusCode::BAD_REQUEST
        );
    }
    assert_eq!(
        t.call(Method::DELETE, unknown, b"").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        t.call(Method::DELETE, &large, b"").await.status,
        StatusCode::OK
    );
    assert_eq!(
        t.call(Method::DELETE, &large, b"").await.status,
        StatusCode::NOT_FOUND
    );

    // Stat: 200, 400, 404.
    let r = t.stat(&name).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_stat(&r.json(), &r.body, b"new");
    for q in ["type=2", "type=", "type=10"] {
        assert_eq!(
            t.stat(&format!("{name}?{q}")).await.status,
            StatusCode::BAD_REQUEST
        );
    }
    for b in bad_names {
        assert_eq!(t.stat(b).await.status, StatusCode::BAD_REQUEST, "{b}");
    }
    assert_eq!(t.read("metadata/").await.status, StatusCode::BAD_REQUEST);
    assert_eq!(t.read("metadata").await.status, StatusCode::BAD_REQUEST);
    assert_eq!(t.stat(unknown).await.status, StatusCode::NOT_FOUND);
    assert_eq!(t.stat(&large).await.status, StatusCode::NOT_FOUND);
    let r = t
        .call(Method::DELETE, &format!("metadata/{name}"), b"")
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // HEAD answers as GET, without a body.
    assert_eq!(
        t.call(Method::HEAD, &name, b"").await.status,
        StatusCode::OK
    );
    assert_eq!(
        t.call(Method::HEAD, &format!("metadata/{name}"), b"")
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        t.call(Method::HEAD, unknown, b"").await.status,
        StatusCode::NOT_FOUND
    );

    // An unknown appkey: 401 for every operation.
    let other = format!("{}/v1/no-such-app", t.c.meta.url);
    for (m, url) in [
        (Method::POST, other.clone()),
        (Method::PUT, format!("{other}/{name}")),
        (Method::GET, format!("{other}/{name}")),
        (Method::DELETE, format!("{other}/{name}")),
        (Method::GET, format!("{other}/metadata/{name}")),
    ] {
        let r = t.raw(m.clone(), &url, Some(data.clone())).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{m} {url}");
    }
    // Other methods and bare paths are bad requests.
    assert_eq!(
        t.raw(Method::GET, &t.base(), None).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        t.raw(Method::PUT, &t.base(), Some(data.clone()))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        t.call(Method::PATCH, &name, &data).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(t.read("").await.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn binary_and_large_bodies() {
    let t = V1::start().await;
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let mut cases = vec![
        all_bytes.clone(),
        all_bytes
            .iter()
            .rev()
            .copied()
            .cycle()
            .take(256 * 40)
            .collect::<Vec<u8>>(),
        random_bytes(8192, 1),
        random_bytes(8193, 2),
        random_bytes(1 << 20, 3),
        random_bytes((1 << 20) + 1, 4),
        random_bytes((5 << 20) + 3, 5),
    ];
    cases.push([b"\0\r\n".to_vec(), all_bytes].concat());
    for (i, data) in cases.iter().enumerate() {
        let before = t.c.bytes_received().await;
        let large = i % 2 == 1;
        let q = if large { "large_file=1" } else { "" };
        let name = t.new_file(q, data).await;
        assert_eq!(name.starts_with('L'), large);
        let r = t.read(&name).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(
            r.body == *data,
            "case {i}: {} bytes came back different",
            data.len()
        );
        let s = t.stat(&name).await;
        let v = s.json();
        assert_stat(&v, &s.body, data);
        assert_ids(&name, &v);
        let stored = t.c.bytes_received().await - before;
        if data.len() > 8192 {
            assert!(
                stored >= data.len() as u64,
                "case {i}: only {stored} bytes reached providers"
            );
        } else {
            assert_eq!(stored, 0, "case {i}: small files stay inline");
        }
        // An update to a different size and back.
        if !large {
            let other = random_bytes(data.len() / 2 + 1, 100 + i as u64);
            assert_eq!(t.call(Method::PUT, &name, &other).await.name(), name);
            assert!(t.read(&name).await.body == other);
            let s = t.stat(&name).await;
            assert_stat(&s.json(), &s.body, &other);
        }
    }
}

#[tokio::test]
async fn offset_and_size_reads() {
    let t = V1::start().await;
    for (len, seed) in [(5000usize, 7u64), (3 << 20, 8)] {
        let data = random_bytes(len, seed);
        let name = t.new_file("suffix=.bin", &data).await;
        let l = len as u64;
        for (offset, size) in [
            (Some(0), None),
            (Some(1), None),
            (Some(l - 1), None),
            (Some(l), None),
            (Some(l + 10), None),
            (None, Some(1)),
            (None, Some(100)),
            (None, Some(l)),
            (None, Some(l + 1)),
            (Some(100), Some(200)),
            (Some(l - 5), Some(100)),
            (Some(4096), Some(4096)),
            (Some(l / 2), Some(i64::MAX as u64)),
            (Some(i64::MAX as u64), Some(i64::MAX as u64)),
        ] {
            let mut q = Vec::new();
            if let Some(o) = offset {
                q.push(format!("offset={o}"));
            }
            if let Some(s) = size {
                q.push(format!("size={s}"));
            }
            let r = t.read(&format!("{name}?{}", q.join("&"))).await;
            // nginx-tfs: a small file's read starting past its end is 400
            // (tests/rest_compat.rs has the rest).
            if offset.is_some_and(|o| o > l) {
                assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q:?}");
                continue;
            }
            assert_eq!(r.status, StatusCode::OK, "{q:?}");
            let from = offset.unwrap_or(0).min(l) as usize;
            let to = offset
                .unwrap_or(0)
                .saturating_add(size.unwrap_or(u64::MAX))
                .min(l) as usize;
            assert!(r.body == data[from..to.max(from)], "{len} bytes, {q:?}");
        }
    }
}

#[tokio::test]
async fn hide_unhide_delete_through_stat() {
    let t = V1::start().await;
    let data = random_bytes(20_000, 11);
    let name = t.new_file("", &data).await;
    let visible = |code: StatusCode| code == StatusCode::OK;
    let del = |q: &str| format!("{name}?{q}");

    assert_eq!(t.status_of(&name).await, 0);
    assert!(visible(t.stat(&name).await.status));

    // Hide: 404 to reads and type=0 stats, STATUS 4 with type=1.
    assert_eq!(
        t.call(Method::DELETE, &del("hide=1"), b"").await.status,
        StatusCode::OK
    );
    assert_eq!(t.read(&name).await.status, StatusCode::NOT_FOUND);
    assert_eq!(t.stat(&name).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        t.stat(&format!("{name}?type=0")).await.status,
        StatusCode::NOT_FOUND
    );
    let r = t.stat(&format!("{name}?type=1")).await;
    assert_stat(&r.json(), &r.body, &data);
    assert_eq!(r.json()["STATUS"], 4);
    // A forced read still reads it; an update does not reach it.
    assert!(t.read(&format!("{name}?type=1")).await.body == data);
    assert_eq!(
        t.call(Method::PUT, &name, b"x").await.status,
        StatusCode::NOT_FOUND
    );
    // Hiding again finds no visible file.
    assert_eq!(
        t.call(Method::DELETE, &del("hide=1"), b"").await.status,
        StatusCode::NOT_FOUND
    );

    // Unhide.
    assert_eq!(
        t.call(Method::DELETE, &del("hide=0"), b"").await.status,
        StatusCode::OK
    );
    assert_eq!(t.status_of(&name).await, 0);
    assert!(t.read(&name).await.body == data);
    assert_eq!(
        t.call(Method::DELETE, &del("hide=0"), b"").await.status,
        StatusCode::NOT_FOUND
    );

    // Hidden, then deleted: 5.
    assert_eq!(
        t.call(Method::DELETE, &del("hide=1"), b"").await.status,
        StatusCode::OK
    );
    assert_eq!(
        t.call(Method::DELETE, &name, b"").await.status,
        StatusCode::OK
    );
    assert_eq!(t.status_of(&name).await, 5);
    assert_eq!(t.stat(&name).await.status, StatusCode::NOT_FOUND);
    assert_eq!(t.read(&name).await.status, StatusCode::NOT_FOUND);
    // Neither revealed nor deleted again.
    assert_eq!(
        t.call(Method::DELETE, &del("hide=0"), b"").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        t.call(Method::DELETE, &name, b"").await.status,
        StatusCode::NOT_FOUND
    );

    // TFS's unlink types: undelete (2) leaves it hidden, reveal (6).
    assert_eq!(
        t.call(Method::DELETE, &del("type=2"), b"").await.status,
        StatusCode::OK
    );
    assert_eq!(t.status_of(&name).await, 4);
    assert_eq!(
        t.call(Method::DELETE, &del("type=6"), b"").await.status,
        StatusCode::OK
    );
    assert_eq!(t.status_of(&name).await, 0);
    assert_eq!(
        t.call(Method::DELETE, &del("type=2"), b"").await.status,
        StatusCode::NOT_FOUND
    );

    // Deleted: 1; a deleted file is neither hidden nor updated.
    assert_eq!(
        t.call(Method::DELETE, &del("type=0"), b"").await.status,
        StatusCode::OK
    );
    assert_eq!(t.status_of(&name).await, 1);
    assert_eq!(
        t.stat(&format!("{name}?type=0")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(t.read(&name).await.status, StatusCode::NOT_FOUND);
    assert!(t.read(&format!("{name}?type=1")).await.body == data);
    assert_eq!(
        t.call(Method::DELETE, &del("hide=1"), b"").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        t.call(Method::PUT, &name, b"x").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(t.status_of(&name).await, 1);
    // type=4 hides like hide=1 once undeleted.
    assert_eq!(
        t.call(Method::DELETE, &del("type=2"), b"").await.status,
        StatusCode::OK
    );
    assert_eq!(
        t.call(Method::DELETE, &del("type=4"), b"").await.status,
        StatusCode::OK
    );
    assert_eq!(t.status_of(&name).await, 4);
}

#[tokio::test]
async fn suffix_rules_and_names() {
    let t = V1::start().await;
    let data = b"suffixes".to_vec();
    let jpg_hash = suffix_hash(b".jpg");

    // A suffix without simple_name: the hash is in the name.
    let plain = t.new_file("suffix=.jpg", &data).await;
    assert_eq!(plain.len(), 18);
    let (p, _) = TfsName::parse(&plain).unwrap();
    assert_eq!(p.bits.suffix_hash, jpg_hash);
    for (path, code) in [
        (plain.clone(), 200),
        (format!("{plain}.jpg"), 200),
        (format!("{plain}?suffix=.jpg"), 200),
        (format!("{plain}.jpg?suffix=.jpg"), 200),
        (format!("{plain}.png"), 404),
        (format!("{plain}?suffix=.png"), 404),
        (format!("{plain}.jpg?suffix=.png"), 400),
    ] {
        assert_eq!(t.read(&path).await.status.as_u16(), code, "GET {path}");
        assert_eq!(t.stat(&path).await.status.as_u16(), code, "stat {path}");
    }

    // simple_name=1: no hash in the name, the suffix is required.
    let simple = t.new_file("suffix=.jpg&simple_name=1", &data).await;
    let bare = &simple[..18];
    assert_eq!(&simple[18..], ".jpg");
    for (path, code) in [
        (simple.clone(), 200),
        (format!("{bare}?suffix=.jpg"), 200),
        (bare.to_string(), 404),
        (format!("{bare}.png"), 404),
        (format!("{simple}?suffix=.gif"), 400),
    ] {
        assert_eq!(t.read(&path).await.status.as_u16(), code, "GET {path}");
        assert_eq!(t.stat(&path).await.status.as_u16(), code, "stat {path}");
    }
    let r = t.call(Method::PUT, bare, b"x").await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "an update needs the suffix too"
    );
    assert_eq!(
        t.call(Method::DELETE, &format!("{bare}?hide=1"), b"")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // Updating by the full name gives it back.
    assert_eq!(t.call(Method::PUT, &simple, b"y").await.name(), simple);
    assert_eq!(t.read(&simple).await.body, b"y");

    // Both carry the suffix's hash in FILE_ID; FILE_NAME is the 18 characters.
    for name in [&plain, &simple] {
        let v = t.stat(name).await.json();
        let (n, _) = TfsName::parse(name).unwrap();
        let id = (u64::from(jpg_hash) << 32) | u64::from(n.bits.seq_id);
        assert_eq!(v["FILE_ID"].as_u64().unwrap(), id, "{name}");
        assert_eq!(v["FILE_NAME"].as_str().unwrap(), &name[..18]);
        assert_eq!(v["BLOCK_ID"].as_u64().unwrap(), u64::from(n.bits.block_id));
    }

    // No suffix: a suffix in the request does not match.
    let none = t.new_file("", &data).await;
    assert_eq!(t.read(&none).await.status, StatusCode::OK);
    assert_eq!(
        t.read(&format!("{none}.jpg")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        t.read(&format!("{none}?suffix=.jpg")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        t.read(&format!("{none}?suffix=")).await.status,
        StatusCode::OK
    );
    // simple_name without a suffix is a plain name.
    let s0 = t.new_file("simple_name=1", &data).await;
    assert_eq!(s0.len(), 18);
    assert_eq!(t.read(&s0).await.body, data);

    // Suffixes with bytes that need escaping round-trip.
    let odd = t.new_file("suffix=%2F%C3%A9%20%3F%23", &data).await;
    assert_eq!(odd.len(), 18, "{odd}");
    let escaped = format!("{}?suffix=%2F%C3%A9%20%3F%23", &odd[..18]);
    assert_eq!(t.read(&escaped).await.body, data);
    assert_eq!(
        t.read(&format!("{}%2F%C3%A9%20%3F%23", &odd[..18]))
            .await
            .body,
        data
    );

    // Many names: distinct, well formed, decoding to the stat's ids.
    let mut seen = std::collections::HashSet::new();
    for i in 0..60u32 {
        let q = match i % 3 {
            0 => "",
            1 => "suffix=.txt",
            _ => "large_file=1&suffix=.txt&simple_name=1",
        };
        let name = t.new_file(q, &i.to_le_bytes()).await;
        let (n, _) = TfsName::parse(&name).unwrap();
        assert_eq!(n.to_string(), name[..18]);
        assert!(
            seen.insert((n.bits.block_id, n.bits.seq_id)),
            "{name} reused ids"
        );
        let v = t.stat(&name).await.json();
        assert_ids(&name, &v);
        assert_eq!(t.read(&name).await.body, i.to_le_bytes());
    }
}

#[tokio::test]
async fn apps_see_only_their_own_files_and_garbage_is_refused() {
    let mut t = V1::start().await;
    let data = b"mine".to_vec();
    let name = t.new_file("", &data).await;
    let jpg = t.new_file("suffix=.jpg&simple_name=1", &data).await;

    // Another app: its names are not found, and changes do not reach.
    let own = t.appkey.clone();
    t.appkey = create_app(&t.c, None);
    for n in [&name, &jpg] {
        assert_eq!(t.read(n).await.status, StatusCode::NOT_FOUND);
        assert_eq!(
            t.stat(&format!("{n}?type=1")).await.status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            t.call(Method::PUT, n, b"theirs").await.status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            t.call(Method::DELETE, n, b"").await.status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            t.call(Method::DELETE, &format!("{n}?hide=1"), b"")
                .await
                .status,
            StatusCode::NOT_FOUND
        );
    }
    let theirs = t.new_file("", b"theirs").await;
    assert_ne!(theirs, name);
    t.appkey = own;
    assert_eq!(t.read(&name).await.body, data);
    assert_eq!(t.status_of(&jpg).await, 0);
    assert_eq!(t.read(&theirs).await.status, StatusCode::NOT_FOUND);

    // Garbage: every answer is a 4xx, and the server keeps answering.
    let url = t.c.meta.url.clone();
    let base = t.base();
    let long = "T".repeat(5000);
    let garbage: Vec<(Method, String)> = vec![
        (Method::GET, format!("{url}/v1/")),
        (Method::GET, format!("{url}/v1//")),
        (Method::GET, format!("{url}/v1")),
        (Method::GET, format!("{url}/v3/x")),
        (Method::GET, format!("{base}/%FF%FE")),
        (Method::GET, format!("{base}/T1%FFOZHB4ET1RCvBVdK")),
        (Method::GET, format!("{base}/{long}")),
        (Method::GET, format!("{base}/{name}{}", "x".repeat(200))),
        (Method::GET, format!("{base}/metadata/metadata/{name}")),
        (Method::GET, format!("{base}/metadata//{name}")),
        (Method::GET, format!("{base}//{name}")),
        (
            Method::GET,
            format!("{base}/{name}?offset=99999999999999999999999"),
        ),
        (Method::GET, format!("{base}/{name}?size=1e3")),
        (Method::GET, format!("{base}/{name}?type=%00")),
        (
            Method::GET,
            format!("{base}/{name}?suffix={}", "s".repeat(200)),
        ),
        (Method::GET, format!("{base}/T1..............._")),
        (Method::GET, format!("{base}/L9{}", &name[2..])),
        (Method::DELETE, format!("{base}/{name}?hide=%31%31")),
        (Method::DELETE, base.clone()),
        (Method::OPTIONS, format!("{base}/{name}")),
        (Method::POST, format!("{base}/metadata/{name}")),
        (Method::POST, format!("{base}?simple_name=%FF")),
        (Method::PUT, format!("{base}/metadata/{name}")),
        (Method::PUT, format!("{base}/{name}?suffix=.jpg")),
    ];
    for (m, u) in garbage {
        let r = t.raw(m.clone(), &u, Some(random_bytes(100, 3))).await;
        assert!(r.status.is_client_error(), "{m} {u}: {}", r.status);
    }
    for i in 0..300u64 {
        let junk = random_bytes(1 + (i as usize % 40), i);
        let enc: String = junk.iter().map(|b| format!("%{b:02X}")).collect();
        let path = if i % 2 == 0 {
            enc.clone()
        } else {
            format!("metadata/T1{enc}")
        };
        let m = [Method::GET, Method::PUT, Method::DELETE, Method::POST][i as usize % 4].clone();
        let r = t
            .call(
                m.clone(),
                &format!("{path}?suffix={enc}&offset={enc}"),
                &junk,
            )
            .await;
        assert!(r.status.is_client_error(), "{m} {path}: {}", r.status);
    }
    assert_eq!(t.read(&name).await.body, data);
    assert_eq!(t.new_file("", b"still here").await.len(), 18);
}
