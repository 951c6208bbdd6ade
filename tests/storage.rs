//! The storage core end to end: real metadata server and provider
//! processes on loopback, the `tfsfs` CLI as the client.

mod common;

use common::*;

#[tokio::test]
async fn round_trip_sizes_encrypted_and_not() {
    let c = TestCluster::start(6).await;
    let dir = c.dir.path();
    let sizes = [
        0usize,
        1,
        8191,
        8192,
        8193,
        1 << 20,
        (4 << 20) - 1,
        (4 << 20) + 1,
        (100 << 20) + 7,
    ];
    for (i, &size) in sizes.iter().enumerate() {
        let data = random_bytes(size, i as u64);
        let local = dir.join(format!("in-{size}"));
        std::fs::write(&local, &data).unwrap();
        for encrypt in [true, false] {
            let remote = format!("/sizes/{encrypt}/f-{size}");
            assert_ok(&c.put(&local, &remote, encrypt), &format!("put {size}"));
            let back = dir.join(format!("out-{size}-{encrypt}"));
            assert_ok(&c.get(&remote, &back, encrypt), &format!("get {size}"));
            let got = std::fs::read(&back).unwrap();
            assert!(
                got == data,
                "{size} bytes (encrypt={encrypt}) came back different"
            );
            std::fs::remove_file(&back).unwrap();
        }
    }
}

#[tokio::test]
async fn second_put_of_same_content_moves_no_shard() {
    let c = TestCluster::start(6).await;
    let local = c.dir.path().join("big");
    std::fs::write(&local, random_bytes(5 << 20, 7)).unwrap();
    assert_ok(&c.put(&local, "/d/one", true), "first put");
    let after_first = c.bytes_received().await;
    assert!(
        after_first > 5 << 20,
        "the first put stored shards ({after_first} bytes)"
    );
    assert_ok(&c.put(&local, "/d/two", true), "second put");
    assert_ok(&c.put(&local, "/d/one", true), "third put, same path");
    assert_eq!(
        c.bytes_received().await,
        after_first,
        "a dedup hit sends no shard"
    );
    // Another account never shares ciphertext, so it stores its own shards.
    assert_ok(
        &c.cli_as(2, &["put", local.to_str().unwrap(), "/d/one"]),
        "put as uid 2",
    );
    assert!(c.bytes_received().await > after_first);
    let back = c.dir.path().join("back");
    assert_ok(&c.get("/d/two", &back, true), "get dedup copy");
    assert_eq!(
        std::fs::read(&back).unwrap(),
        std::fs::read(&local).unwrap()
    );
}

#[tokio::test]
async fn reads_survive_two_dead_providers_and_fail_cleanly_at_three() {
    let mut c = TestCluster::start(6).await;
    let dir = c.dir.path().to_path_buf();
    let files = [
        ("inline", 3000usize),
        ("replica", 300_000),
        ("rs-small", 2 << 20),
        ("rs-big", 21 << 20),
    ];
    for (i, (name, size)) in files.iter().enumerate() {
        std::fs::write(dir.join(name), random_bytes(*size, 100 + i as u64)).unwrap();
        assert_ok(&c.put(&dir.join(name), &format!("/k/{name}"), true), name);
    }
    c.providers[0].kill();
    c.providers[3].kill();
    for (name, _) in files {
        let back = dir.join(format!("{name}.back"));
        assert_ok(
            &c.get(&format!("/k/{name}"), &back, true),
            &format!("get {name} with 2 providers dead"),
        );
        assert!(
            std::fs::read(&back).unwrap() == std::fs::read(dir.join(name)).unwrap(),
            "{name} differs"
        );
    }
    c.providers[5].kill();
    let back = dir.join("rs-big.lost");
    let out = c.get("/k/rs-big", &back, true);
    assert!(
        !out.status.success(),
        "3 of 6 shards lost under RS(4,2) cannot be read"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unreadable"), "a clear error, got: {err}");
}

/// A provider that answers every request with 503, counting them.
async fn refusing_provider() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let _ = sock
                    .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (url, hits)
}

// Multi-threaded: the refusing provider runs in this runtime while the CLI blocks a thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_provider_is_replaced_by_a_spare() {
    let c = TestCluster::start_with(
        6,
        &[
            "--partition-size",
            "1048576",
            "--provider-timeout-secs",
            "600",
        ],
    )
    .await;
    let (url, hits) = refusing_provider().await;
    c.enroll_double("p-refuser", &url).await;
    c.wait_alive(7).await;
    let local = c.dir.path().join("f");
    std::fs::write(&local, random_bytes(20 << 20, 9)).unwrap();
    assert_ok(
        &c.put(&local, "/spare/f", true),
        "put with a refusing provider",
    );
    assert!(
        hits.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the refusing provider was asked"
    );
    let layout = c.layout("/spare/f").await;
    assert_eq!(layout.fragments.len(), 20, "one object per partition");
    for p in layout.fragments.iter().flat_map(|f| &f.object.partitions) {
        assert_eq!(p.shards.len(), 6);
        for s in &p.shards {
            assert_eq!(s.providers.len(), 1);
            assert_ne!(
                s.providers[0].id, "p-refuser",
                "the committed layout names the spare"
            );
        }
    }
    let back = c.dir.path().join("back");
    assert_ok(&c.get("/spare/f", &back, true), "get");
    assert!(std::fs::read(&back).unwrap() == std::fs::read(&local).unwrap());
}

/// The data directory of the provider with id `id`.
fn dir_of_provider(c: &TestCluster, id: &str) -> std::path::PathBuf {
    (0..c.providers.len())
        .map(|i| c.provider_dir(i))
        .find(|d| {
            std::fs::read_to_string(d.join("provider_id"))
                .unwrap()
                .trim()
                == id
        })
        .expect("provider dir")
}

fn flip_byte(path: &std::path::Path) {
    let mut data = std::fs::read(path).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(path, data).unwrap();
}

#[tokio::test]
async fn a_corrupt_shard_on_disk_still_reads_correctly() {
    let c = TestCluster::start(6).await;
    let dir = c.dir.path();
    std::fs::write(dir.join("rs"), random_bytes(9 << 20, 11)).unwrap();
    std::fs::write(dir.join("rep"), random_bytes(200_000, 12)).unwrap();
    // Encrypted partitions are authenticated by their GCM tag and checked
    // shard by shard only when it fails; plain ones by every shard's SHA-1.
    let cases = [("rs", true), ("rep", true), ("rs", false), ("rep", false)];
    for (name, encrypt) in cases {
        let remote = format!("/c/{name}-{encrypt}");
        assert_ok(
            &c.put(&dir.join(name), &remote, encrypt),
            &format!("put {remote}"),
        );
        let layout = c.layout(&remote).await;
        // Corrupt the first (data) shard of every partition, or the first copy.
        for p in &layout.fragments[0].object.partitions {
            let shard = &p.shards[0];
            let path = dir_of_provider(&c, &shard.providers[0].id)
                .join("shards")
                .join(&shard.sha1[..2])
                .join(&shard.sha1);
            flip_byte(&path);
        }
        let back = dir.join(format!("{name}-{encrypt}.back"));
        assert_ok(
            &c.get(&remote, &back, encrypt),
            &format!("get corrupt {remote}"),
        );
        assert!(
            std::fs::read(&back).unwrap() == std::fs::read(dir.join(name)).unwrap(),
            "{remote} differs"
        );
    }
}

#[tokio::test]
async fn cli_ls_and_rm() {
    let c = TestCluster::start(6).await;
    let local = c.dir.path().join("x");
    std::fs::write(&local, b"hello").unwrap();
    assert_ok(&c.put(&local, "/ls/x.txt", true), "put");
    let out = c.cli(&["ls", "/ls"]);
    assert_ok(&out, "ls");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("x.txt") && listing.contains(" 5 "),
        "ls shows the file: {listing}"
    );
    assert_ok(&c.cli(&["rm", "/ls/x.txt"]), "rm");
    let out = c.get("/ls/x.txt", &c.dir.path().join("gone"), true);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
    assert!(
        !c.cli(&["rm", "/ls/x.txt"]).status.success(),
        "rm of a missing file fails"
    );
    assert_ok(
        &c.cli(&["rm", "--dir", "/ls"]),
        "rm --dir of the now empty dir",
    );
}

#[tokio::test]
async fn usage_counts_each_object_once_and_drops_with_the_last_file() {
    let c = TestCluster::start(6).await;
    let used = || async {
        c.ns_get::<tfsfs::proto::FsStats>(c.uid, "fs/statfs", &[])
            .await
            .used
    };
    assert_eq!(used().await, 0);
    let local = c.dir.path().join("u");
    std::fs::write(&local, random_bytes(3 << 20, 5)).unwrap();
    assert_ok(&c.put(&local, "/u/a", false), "put a");
    assert_eq!(
        used().await,
        3 << 20,
        "unencrypted: stored bytes are the file's"
    );
    assert_ok(&c.put(&local, "/u/b", false), "put b, same content");
    assert_eq!(used().await, 3 << 20, "a deduplicated object counts once");
    assert_ok(&c.cli(&["rm", "/u/a"]), "rm a");
    assert_eq!(used().await, 3 << 20, "b still uses the object");
    assert_ok(&c.cli(&["rm", "/u/b"]), "rm b");
    assert_eq!(used().await, 0, "no file uses it any more");
}

#[tokio::test]
async fn shards_of_deleted_and_replaced_files_are_collected() {
    let c = TestCluster::start_with(6, GC_NOW).await;
    let shards = || async {
        let mut n = 0;
        for i in 0..6 {
            n += c.health(i).await.shards;
        }
        n
    };
    let dir = c.dir.path();
    std::fs::write(dir.join("keep"), random_bytes(3 << 20, 1)).unwrap();
    std::fs::write(dir.join("v1"), random_bytes(6 << 20, 2)).unwrap();
    std::fs::write(dir.join("v2"), random_bytes(5 << 20, 3)).unwrap();
    assert_ok(&c.put(&dir.join("keep"), "/gc/keep", true), "put keep");
    let kept = shards().await;
    assert_ok(&c.put(&dir.join("v1"), "/gc/f", true), "put v1");
    assert_ok(&c.put(&dir.join("v2"), "/gc/f", true), "put v2 over v1");
    assert_ok(&c.put(&dir.join("v1"), "/gc/gone", true), "put gone");
    assert_ok(&c.cli(&["rm", "/gc/gone"]), "rm gone");
    let with_v2 = kept + 2 * 6; // v2: two 4 MiB partitions of RS(4,2)
    let mut now = shards().await;
    for _ in 0..100 {
        if now == with_v2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        now = shards().await;
    }
    assert_eq!(now, with_v2, "v1's shards went once no file used them");
    for (remote, local) in [("/gc/keep", "keep"), ("/gc/f", "v2")] {
        let back = dir.join(format!("{local}.back"));
        assert_ok(&c.get(remote, &back, true), remote);
        assert!(
            std::fs::read(&back).unwrap() == std::fs::read(dir.join(local)).unwrap(),
            "{remote}"
        );
    }
}
