//! The servers against slow clients, idle sockets, big bodies, huge offsets
//! and mass registration (issue 8, finding 10): real `tfsfs` processes.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use sha1::{Digest, Sha1};

fn meta_addr(c: &TestCluster) -> String {
    c.meta.url.trim_start_matches("http://").to_string()
}

/// Reads from `s` until EOF or `limit`: what the server sent, and whether
/// it closed the connection.
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (String, bool) {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&got).into(), true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            // A reset closes the connection too.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (String::from_utf8_lossy(&got).into(), true)
            }
            Err(_) => return (String::from_utf8_lossy(&got).into(), false),
        }
    }
}

async fn create_file(c: &TestCluster, name: &str) {
    let r = reqwest::Client::new()
        .post(format!("{}/file/{name}", c.v2()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "create {name}");
}

async fn put(c: &TestCluster, name: &str, query: &str, body: Vec<u8>) -> reqwest::StatusCode {
    reqwest::Client::new()
        .put(format!("{}/file/{name}{query}", c.v2()))
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
}

async fn file_size(c: &TestCluster, name: &str) -> u64 {
    let r = reqwest::get(format!("{}/file/{name}", c.v2_meta()))
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "metadata of {name}");
    r.json::<serde_json::Value>().await.unwrap()["SIZE"]
        .as_u64()
        .unwrap()
}

async fn read(c: &TestCluster, name: &str) -> Vec<u8> {
    let r = reqwest::get(format!("{}/file/{name}", c.v2()))
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "read {name}");
    r.bytes().await.unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_leave_room_for_real_clients() {
    // Twice the server's descriptors: they must fit in this process.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain rlimit calls on a struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max.max(4096);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    let c = TestCluster::start_under(0, &["prlimit", "--nofile=1024:1024"], &[]).await;
    let addr = meta_addr(&c);
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    // A server out of descriptors leaves connects hanging: count those made.
    let idle: Vec<TcpStream> = (0..2000)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok())
        .collect();
    assert!(
        idle.len() >= 1000,
        "only {} idle sockets connected",
        idle.len()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..10 {
        let started = Instant::now();
        let r = reqwest::Client::new()
            .get(format!("{}/api/policy", c.meta.url))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .unwrap_or_else(|e| panic!("request {i} beside 2000 idle sockets: {e}"));
        assert_eq!(r.status(), 200, "request {i}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_gets_408_and_the_connection_closed() {
    let c = TestCluster::start_with(1, &["--body-timeout-secs", "1"]).await;
    create_file(&c, "slow").await;
    let mut s = TcpStream::connect(meta_addr(&c)).unwrap();
    let path = c.v2().split_once("/v2/").unwrap().1.to_string();
    write!(
        s,
        "PUT /v2/{path}/file/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
    )
    .unwrap();
    s.write_all(&[7u8; 1000]).unwrap();
    let (answer, closed) = read_until_closed(&mut s, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 408"), "answer: {answer:?}");
    assert!(closed, "connection left open");
    assert_eq!(file_size(&c, "slow").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_header_gets_the_connection_closed() {
    let c = TestCluster::start_with(0, &["--header-timeout-secs", "1"]).await;
    let mut s = TcpStream::connect(meta_addr(&c)).unwrap();
    s.write_all(b"GET /api/policy HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = Instant::now();
    let (answer, closed) = read_until_closed(&mut s, Duration::from_secs(10));
    assert!(closed, "connection left open; got {answer:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_concurrent_200mb_uploads_stay_in_bounded_memory() {
    const SIZE: usize = 200 << 20;
    let c = TestCluster::start(6).await;
    let mut sums = Vec::new();
    let mut uploads = Vec::new();
    for i in 0..4u64 {
        let name = format!("big{i}");
        create_file(&c, &name).await;
        let data = random_bytes(SIZE, 100 + i);
        sums.push(Sha1::digest(&data));
        let url = format!("{}/file/{name}", c.v2());
        uploads.push(tokio::spawn(async move {
            reqwest::Client::new()
                .put(url)
                .body(data)
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for u in uploads {
        assert_eq!(u.await.unwrap(), 200);
    }
    let peak = memory(c.meta.child.id()).1;
    assert!(peak < 512 << 20, "meta peak RSS {} MiB", peak >> 20);
    for (i, sum) in sums.iter().enumerate() {
        let name = format!("big{i}");
        assert_eq!(file_size(&c, &name).await, SIZE as u64);
        assert_eq!(&Sha1::digest(read(&c, &name).await), sum, "{name}");
    }
    let spool = c.dir.path().join("meta/tmp");
    assert_eq!(
        std::fs::read_dir(spool).unwrap().count(),
        0,
        "spool left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_at_offset_2_pow_62_is_refused() {
    let c = TestCluster::start(3).await;
    create_file(&c, "f").await;
    assert_eq!(put(&c, "f", "", b"hello".to_vec()).await, 200);
    assert_eq!(
        put(&c, "f", "?offset=4611686018427387904", b"x".to_vec()).await,
        400
    );
    assert_eq!(file_size(&c, "f").await, 5);
    assert_eq!(read(&c, "f").await, b"hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_past_the_max_file_size_are_refused() {
    let c = TestCluster::start_with(3, &["--max-file-size", "1000000"]).await;
    create_file(&c, "f").await;
    let first = random_bytes(600_000, 1);
    assert_eq!(put(&c, "f", "", first.clone()).await, 200);
    // An append, and a pwrite, that would end past the limit.
    assert_eq!(put(&c, "f", "", random_bytes(600_000, 2)).await, 400);
    assert_eq!(put(&c, "f", "?offset=999999", b"xy".to_vec()).await, 400);
    assert_eq!(file_size(&c, "f").await, 600_000);
    assert_eq!(read(&c, "f").await, first);
    // Ending exactly at the limit is fine.
    assert_eq!(put(&c, "f", "?offset=999999", b"z".to_vec()).await, 200);
    assert_eq!(file_size(&c, "f").await, 1_000_000);

    // A TFS v1 file is one body: the same limit.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/{}", c.meta.url, c.appkey))
        .body(random_bytes(1_000_001, 3))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // And an upload by the client announcing a larger file.
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("big");
    std::fs::write(&local, random_bytes(1_000_001, 4)).unwrap();
    let out = c.put(&local, "/big", false);
    assert!(
        !out.status.success(),
        "put of a file over the limit succeeded"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("at most 1000000 bytes"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_are_limited_per_client_address() {
    let c = TestCluster::start_with(0, &["--registrations-per-ip", "3"]).await;
    let register = |email: String| {
        let url = format!("{}/api/account/register", c.meta.url);
        async move {
            reqwest::Client::new()
                .post(url)
                .json(&serde_json::json!({ "email": email }))
                .send()
                .await
                .unwrap()
        }
    };
    for i in 0..3 {
        let r = register(format!("user{i}@example.com")).await;
        assert_eq!(r.status(), 200, "registration {i}");
    }
    let r = register("user3@example.com".into()).await;
    assert_eq!(r.status(), 429);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("registration mails an hour"));
    let outbox = c.dir.path().join("meta/outbox");
    assert_eq!(std::fs::read_dir(outbox).unwrap().count(), 3);
}
