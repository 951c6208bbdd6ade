//! What clients written for nginx-tfs expect beyond the TFS document's text
//! (docs/nginx-tfs-compat.md), against real `tfsfs meta` (and providers)
//! on loopback, plain HTTP as the client.

mod common;

use common::*;
use reqwest::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE, LAST_MODIFIED};
use reqwest::{Client, Method, StatusCode};

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", self.headers))
            .to_str()
            .unwrap()
    }

    /// Asserts an nginx error page for `status_line`, with `explanation`.
    fn assert_error_page(&self, status_line: &str, explanation: &str) {
        let code: u16 = status_line[..3].parse().unwrap();
        assert_eq!(self.status.as_u16(), code, "{}", self.text());
        assert_eq!(self.header("content-type"), "text/html");
        assert_eq!(self.header("content-length"), self.body.len().to_string());
        let page = self.text();
        assert!(
            page.starts_with(&format!(
                "<html>\r\n<head><title>{status_line}</title></head>\r\n<body>\r\n\
                 <center><h1>{status_line}</h1></center>\r\n"
            )),
            "{page}"
        );
        assert!(page.ends_with("</body>\r\n</html>\r\n"), "{page}");
        assert!(page.contains(explanation), "{explanation:?} not in {page}");
    }
}

struct Compat {
    c: TestCluster,
    h: Client,
}

impl Compat {
    async fn start(providers: usize) -> Compat {
        Compat {
            c: TestCluster::start(providers).await,
            h: Client::new(),
        }
    }

    async fn send(&self, m: Method, url: &str, body: Option<&[u8]>) -> Reply {
        let mut req = self.h.request(m, url);
        if let Some(b) = body {
            req = req.body(b.to_vec());
        }
        let r = req.send().await.unwrap();
        Reply {
            status: r.status(),
            headers: r.headers().clone(),
            body: r.bytes().await.unwrap().to_vec(),
        }
    }

    async fn get(&self, url: &str) -> Reply {
        self.send(Method::GET, url, None).await
    }

    fn v1(&self) -> String {
        format!("{}/v1/{}", self.c.meta.url, self.c.appkey)
    }

    /// Writes a v1 file; its name.
    async fn v1_write(&self, query: &str, data: &[u8]) -> String {
        let r = self
            .send(Method::POST, &format!("{}?{query}", self.v1()), Some(data))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v["TFS_FILE_NAME"].as_str().unwrap().to_string()
    }

    /// Creates the v2 file `path` holding `data`; its URL.
    async fn v2_file(&self, path: &str, data: &[u8]) -> String {
        let url = format!("{}/file{path}", self.c.v2());
        let r = self.send(Method::POST, &url, None).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        let r = self.send(Method::PUT, &url, Some(data)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        url
    }
}

/// Reads `url` in `chunk`-byte parts (`offset` and `size`) as nginx-tfs
/// clients do, until an answer is not 200 or is short; the bytes, the
/// requests sent and the last status.
async fn read_in_chunks(t: &Compat, url: &str, chunk: usize) -> (Vec<u8>, usize, StatusCode) {
    let sep = if url.contains('?') { '&' } else { '?' };
    let mut data = Vec::new();
    for requests in 1..=1000 {
        let r = t
            .get(&format!("{url}{sep}offset={}&size={chunk}", data.len()))
            .await;
        if r.status != StatusCode::OK {
            return (data, requests, r.status);
        }
        data.extend_from_slice(&r.body);
        if r.body.len() < chunk {
            return (data, requests, r.status);
        }
    }
    panic!("{url}: no end after 1000 chunks");
}

#[tokio::test]
async fn errors_are_nginx_error_pages_with_the_explanation() {
    let t = Compat::start(0).await;
    let name = t.v1_write("", b"abc").await;
    // v1: a bad argument.
    let r = t.get(&format!("{}/{name}?size=0", t.v1())).await;
    r.assert_error_page("400 Bad Request", "size must be at least 1");
    // v2: a directory read as a file, its name escaped in the page.
    let dir = format!("{}/dir/%3Cb%3Ed", t.c.v2());
    assert_eq!(t.send(Method::POST, &dir, None).await.status, 201);
    let r = t.get(&format!("{}/file/%3Cb%3Ed", t.c.v2())).await;
    r.assert_error_page("404 Not Found", "/&lt;b&gt;d is not a file");
    assert!(!r.text().contains("<b>"), "{}", r.text());
    // v2: a write in another app's namespace, in nginx's words for 401.
    let other = format!(
        "{}/v2/{}/{}/1/dir/x",
        t.c.meta.url,
        t.c.appkey,
        t.c.appid + 1
    );
    let r = t.send(Method::POST, &other, None).await;
    r.assert_error_page("401 Authorization Required", "own appid");
    // A conflict.
    t.v2_file("/taken", b"x").await;
    let r = t
        .send(Method::POST, &format!("{}/file/taken", t.c.v2()), None)
        .await;
    r.assert_error_page("409 Conflict", "exists");
    // HEAD: the status alone.
    let r = t
        .send(Method::HEAD, &format!("{}/file/missing", t.c.v2()), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.body.is_empty());
    // tfsfs's own client shows the explanation, not the page.
    let out = t.c.cli(&["ls", "/nope"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("404 Not Found: no such file or directory"),
        "{err}"
    );
    assert!(!err.contains("<html>"), "{err}");
    // The drive's own API keeps its plain answers.
    let r = t.get(&format!("{}/api/no/such/route", t.c.meta.url)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.text(), "no route /api/no/such/route");
}

#[tokio::test]
async fn paths_outside_v1_and_v2_are_bad_requests() {
    let t = Compat::start(0).await;
    for path in ["/", "/favicon.ico", "/v3/tfs/x", "/v2/just-an-appkey"] {
        let r = t.get(&format!("{}{path}", t.c.meta.url)).await;
        r.assert_error_page("400 Bad Request", "");
    }
}

#[tokio::test]
async fn reads_carry_the_mime_type_of_the_suffix() {
    let t = Compat::start(0).await;
    let v1 = t.v1();
    for (query, want) in [
        ("suffix=.jpg", "image/jpeg"),
        ("suffix=.png&simple_name=1", "image/png"),
        ("suffix=.html", "text/html"),
        ("suffix=.JPG", "image/jpeg"),
        ("suffix=.nosuchtype", "application/octet-stream"),
        ("", "application/octet-stream"),
    ] {
        let name = t.v1_write(query, b"bytes").await;
        let r = t.get(&format!("{v1}/{name}")).await;
        assert_eq!(r.status, StatusCode::OK, "{query}: {}", r.text());
        assert_eq!(r.header("content-type"), want, "{query}");
        assert_eq!(r.body, b"bytes");
    }
    for (path, want) in [
        ("/a.jpg", "image/jpeg"),
        ("/dir.png/photo.gif", "image/gif"),
        ("/notes.txt", "text/plain"),
        ("/page.htm", "text/html"),
        ("/doc.pdf", "application/pdf"),
        ("/.hidden", "application/octet-stream"),
        ("/no-suffix", "application/octet-stream"),
    ] {
        if path.starts_with("/dir.png/") {
            let dir = format!("{}/dir/dir.png", t.c.v2());
            assert_eq!(t.send(Method::POST, &dir, None).await.status, 201);
        }
        let url = t.v2_file(path, b"bytes").await;
        let r = t.get(&url).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.header("content-type"), want, "{path}");
    }
}

#[tokio::test]
async fn appid_of_an_unknown_appkey_is_500_login_failed() {
    let t = Compat::start(0).await;
    let r = t
        .get(&format!("{}/v2/no-such-appkey/appid", t.c.meta.url))
        .await;
    r.assert_error_page("500 Internal Server Error", "login failed");
    // A known one still gets its appid.
    let r = t
        .get(&format!("{}/v2/{}/appid", t.c.meta.url, t.c.appkey))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), "application/json");
}

#[tokio::test]
async fn v1_reads_at_and_past_the_end() {
    let t = Compat::start(0).await;
    let data = random_bytes(1000, 1);
    let small = t.v1_write("", &data).await;
    let large = t.v1_write("large_file=1", &data).await;
    assert!(large.starts_with('L'), "{large}");
    for name in [&small, &large] {
        let url = format!("{}/{name}", t.v1());
        // At the end: 200, no bytes.
        let r = t.get(&format!("{url}?offset=1000")).await;
        assert_eq!(r.status, StatusCode::OK, "{name}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("content-length"), "0");
        // Up to the end: the tail.
        let r = t.get(&format!("{url}?offset=990&size=100")).await;
        assert_eq!(r.body, data[990..], "{name}");
        // size=0 is refused, as nginx-tfs does.
        let r = t.get(&format!("{url}?size=0")).await;
        r.assert_error_page("400 Bad Request", "size");
    }
    // Past the end: a small file's data server refuses (400); a large
    // file's segments end, 200 and no bytes.
    let r = t.get(&format!("{}/{small}?offset=1001", t.v1())).await;
    r.assert_error_page("400 Bad Request", "past the end");
    let r = t.get(&format!("{}/{large}?offset=1001", t.v1())).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn chunked_readers_stop_at_the_end_v1_and_v2() {
    let t = Compat::start(6).await;
    // A length that is not a multiple of the chunk, and one that is.
    for (len, chunk) in [(100_000usize, 16_384usize), (65_536, 8_192)] {
        let data = random_bytes(len, len as u64);
        let small = format!("{}/{}", t.v1(), t.v1_write("", &data).await);
        let large = format!("{}/{}", t.v1(), t.v1_write("large_file=1", &data).await);
        let v2 = t.v2_file(&format!("/f{len}"), &data).await;
        for url in [&small, &large, &v2] {
            let (got, requests, last) = read_in_chunks(&t, url, chunk).await;
            assert!(got == data, "{url}: {} of {len} bytes", got.len());
            assert_eq!(last, StatusCode::OK, "{url}");
            // The last part is short, or an empty one follows a full one.
            assert_eq!(requests, len / chunk + 1, "{url}");
        }
        // A reader that stops only at a non-200 answer stops one or two
        // requests past the end of a small file.
        let mut offset = 0;
        let mut got = Vec::new();
        let last = loop {
            let r = t
                .get(&format!("{small}?offset={offset}&size={chunk}"))
                .await;
            if r.status != StatusCode::OK {
                break r;
            }
            got.extend_from_slice(&r.body);
            offset += chunk;
            assert!(offset <= len + chunk, "no end at offset {offset}");
        };
        assert!(got == data);
        last.assert_error_page("400 Bad Request", "past the end");
    }
}

#[tokio::test]
async fn head_and_success_answers_carry_nginx_tfs_headers() {
    let t = Compat::start(0).await;
    let data = random_bytes(777, 3);
    let name = t.v1_write("suffix=.png", &data).await;
    let url = format!("{}/{name}", t.v1());
    let get = t.get(&url).await;
    assert_eq!(get.header("content-type"), "image/png");
    assert!(get.headers.contains_key(LAST_MODIFIED));
    assert!(get.headers.contains_key("date"));
    // HEAD of the file and of its metadata: a stat, the length and time of
    // the file, no body.
    for head_url in [url.clone(), format!("{}/metadata/{name}", t.v1())] {
        let r = t.send(Method::HEAD, &head_url, None).await;
        assert_eq!(r.status, StatusCode::OK, "{head_url}");
        assert_eq!(r.header(CONTENT_LENGTH.as_str()), "777", "{head_url}");
        assert_eq!(r.header(CONTENT_TYPE.as_str()), "image/png");
        assert_eq!(
            r.header(LAST_MODIFIED.as_str()),
            get.header(LAST_MODIFIED.as_str())
        );
        assert!(r.body.is_empty());
    }
    // Answers without a body say Content-Length: 0.
    let del = t.send(Method::DELETE, &url, None).await;
    assert_eq!(del.status, StatusCode::OK);
    assert_eq!(del.header("content-length"), "0");
    let f = format!("{}/file/x", t.c.v2());
    let created = t.send(Method::POST, &f, None).await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.header("content-length"), "0");
    let head = t.send(Method::HEAD, &f, None).await;
    assert_eq!(head.header("content-length"), "0");
    // No CORS, no ETag: nginx-tfs sends none.
    for r in [&get, &del, &created, &head] {
        assert!(r
            .headers
            .keys()
            .all(|k| !k.as_str().starts_with("access-control-")));
        assert!(!r.headers.contains_key("etag"));
    }
}

#[tokio::test]
async fn v2_reads_refuse_range_headers() {
    let t = Compat::start(0).await;
    let url = t.v2_file("/r.bin", b"0123456789").await;
    let r =
        t.h.get(&url)
            .header("Range", "bytes=2-4")
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("offset and size"));
    // offset and size read the part.
    let r = t.get(&format!("{url}?offset=2&size=3")).await;
    assert_eq!(r.body, b"234");
}
