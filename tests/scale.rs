//! Several metadata servers on one PostgreSQL store: each sees what the
//! other wrote, concurrent creates of one name make it once, and a mount
//! given both servers carries on when one is killed. Runs only on
//! PostgreSQL (`TFSFS_TEST_DB=postgres`, as `scripts/test.sh` sets).

mod common;

use std::time::Duration;

use common::*;
use futures::future::join_all;
use reqwest::StatusCode;

/// A cluster on PostgreSQL with a second metadata server; None (the test
/// is skipped) on a SQLite run.
async fn two_servers(providers: usize) -> Option<(TestCluster, Proc)> {
    pg_server()?;
    let c = TestCluster::start(providers).await;
    let b = c.add_meta(1);
    Some((c, b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_through_one_server_reads_back_through_the_other() {
    let Some((c, b)) = two_servers(6).await else {
        return;
    };
    let mount_a = TestMount::new(&c);
    let mount_b = TestMount::at(&c, &b.url, true);
    let data = random_bytes(3 << 20, 7);
    std::fs::write(mount_a.path("shared.bin"), &data).unwrap();
    let out = std::process::Command::new("cmp")
        .arg(mount_a.path("shared.bin"))
        .arg(mount_b.path("shared.bin"))
        .output()
        .unwrap();
    assert_ok(&out, "cmp through the other server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_through_mounts_on_two_servers_make_each_name_once() {
    let Some((c, b)) = two_servers(6).await else {
        return;
    };
    let mounts = [TestMount::new(&c), TestMount::at(&c, &b.url, true)];
    let paths: Vec<Vec<_>> = mounts
        .iter()
        .map(|m| (0..100).map(|n| m.path(&format!("f{n}"))).collect())
        .collect();
    // 1000 exclusive creates of 100 names, 8 threads, alternating mounts.
    let results: Vec<std::io::Result<()>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|t| {
                let paths = &paths;
                s.spawn(move || {
                    (t..1000)
                        .step_by(8)
                        .map(|i| {
                            std::fs::OpenOptions::new()
                                .write(true)
                                .create_new(true)
                                .open(&paths[i % 2][(i * 7) % 100])
                                .map(drop)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let mut created = 0;
    for r in results {
        match r {
            Ok(()) => created += 1,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => panic!("a create failed with {e}, not EEXIST"),
        }
    }
    assert_eq!(created, 100);
    for m in &mounts {
        assert_eq!(std::fs::read_dir(m.path("")).unwrap().count(), 100);
    }
}

/// A directory of the namespace walked from its root over REST v2
/// listings: how many nodes are reachable.
async fn reachable(h: &reqwest::Client, listing: &str, dir: &str) -> usize {
    let mut count = 0;
    let mut todo = vec![dir.to_string()];
    while let Some(d) = todo.pop() {
        let list: serde_json::Value = h
            .get(format!("{listing}/dir{d}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for e in list.as_array().unwrap() {
            count += 1;
            if e["IS_FILE"] == serde_json::json!(false) {
                let name = e["NAME"].as_str().unwrap();
                todo.push(format!("{}/{name}", d.trim_end_matches('/')));
            }
        }
    }
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renames_racing_renames_and_deletes_leave_no_orphan_or_cycle() {
    let Some((c, b)) = two_servers(0).await else {
        return;
    };
    let bases = [c.v2(), c.v2().replace(&c.meta.url, &b.url)];
    let h = reqwest::Client::new();
    let post = |url: String, src: Option<String>| {
        let mut r = h.post(url);
        if let Some(src) = src {
            r = r.header("x-ali-move-source", src);
        }
        async move { r.send().await.unwrap().status() }
    };
    const ROUNDS: usize = 40;
    for i in 0..ROUNDS {
        for d in ["a", "b", "d"] {
            let made = post(format!("{}/dir/r{i}/{d}?recursive=1", bases[0]), None).await;
            assert_eq!(made, StatusCode::CREATED);
        }
        let made = post(format!("{}/file/r{i}/x", bases[0]), None).await;
        assert_eq!(made, StatusCode::CREATED);
    }
    let races = (0..ROUNDS).map(|i| {
        let (post, bases, h) = (&post, &bases, &h);
        async move {
            // a into b racing b into a, on different servers: a cycle if both won.
            let cycle = futures::join!(
                post(
                    format!("{}/dir/r{i}/b/a", bases[0]),
                    Some(format!("/r{i}/a"))
                ),
                post(
                    format!("{}/dir/r{i}/a/b", bases[1]),
                    Some(format!("/r{i}/b"))
                ),
            );
            // x into d racing the delete of d: x orphaned if both won.
            let orphan = futures::join!(
                post(
                    format!("{}/file/r{i}/d/x", bases[1]),
                    Some(format!("/r{i}/x"))
                ),
                async {
                    h.delete(format!("{}/dir/r{i}/d", bases[0]))
                        .send()
                        .await
                        .unwrap()
                        .status()
                },
            );
            (cycle, orphan)
        }
    });
    let mut won = [0; 4];
    for ((a_in_b, b_in_a), (x_in_d, d_gone)) in join_all(races).await {
        for s in [a_in_b, b_in_a, x_in_d, d_gone] {
            assert!(!s.is_server_error(), "a race answered {s}");
        }
        assert!(
            !(a_in_b.is_success() && b_in_a.is_success()),
            "both renames of a cycle won"
        );
        assert!(
            !(x_in_d.is_success() && d_gone.is_success()),
            "a file moved into a directory deleted at once"
        );
        won[0] += a_in_b.is_success() as usize;
        won[1] += b_in_a.is_success() as usize;
        won[2] += x_in_d.is_success() as usize;
        won[3] += d_gone.is_success() as usize;
    }
    eprintln!(
        "wins: a→b {}, b→a {}, x→d {}, rm d {}",
        won[0], won[1], won[2], won[3]
    );
    // Every node of the namespace is reachable from its root.
    let listing = c.v2_meta();
    let walked = reachable(&h, &listing, "/").await;
    let db = c.db.as_ref().unwrap();
    let stored: usize = pg_run(
        &db.url,
        &format!(
            "SELECT count(*) FROM nodes WHERE appid={} AND uid={} AND NOT (parent=0 AND name='')",
            c.appid, c.uid
        ),
    )
    .unwrap()
    .unwrap()
    .parse()
    .unwrap();
    assert_eq!(walked, stored, "nodes not reachable from the root");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mount_given_both_servers_carries_on_when_one_is_killed() {
    let Some((mut c, b)) = two_servers(6).await else {
        return;
    };
    let both = format!("{},{}", c.meta.url, b.url);
    let mount = TestMount::at(&c, &both, true);
    let before = random_bytes(1 << 20, 1);
    std::fs::write(mount.path("before.bin"), &before).unwrap();
    c.meta.kill();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = random_bytes(2 << 20, 2);
    std::fs::write(mount.path("after.bin"), &after).unwrap();
    std::fs::create_dir(mount.path("dir")).unwrap();
    assert_eq!(std::fs::read(mount.path("before.bin")).unwrap(), before);
    assert_eq!(std::fs::read(mount.path("after.bin")).unwrap(), after);
    assert!(mount.path("dir").is_dir());
}

/// The data dir of the server holding the background jobs' lease.
fn lease_holder(c: &TestCluster) -> Option<String> {
    let db = c.db.as_ref()?;
    // The value is "HOST:DATA_DIR UNTIL_MS".
    let value = pg_run(
        &db.url,
        "SELECT convert_from(value, 'UTF8') FROM config WHERE key='jobs_lease'",
    )
    .unwrap()?;
    let (holder, _) = value.rsplit_once(' ')?;
    Some(holder.split_once(':')?.1.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jobs_lease_moves_to_the_other_server_when_its_holder_is_killed() {
    let Some((mut c, mut b)) = two_servers(0).await else {
        return;
    };
    let first = lease_holder(&c).expect("a server holds the lease");
    if first == c.dir.path().join("meta").display().to_string() {
        c.meta.kill();
    } else {
        b.kill();
    }
    // The lease lasts 10 s; the survivor tries for it every 3.3 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while lease_holder(&c).expect("the lease is kept") == first {
        assert!(
            std::time::Instant::now() < deadline,
            "the lease stayed with the killed server"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_one_command_cluster_runs_on_postgresql() {
    let Some(server) = pg_server() else {
        return;
    };
    let db = TestDb::create(&server);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("cluster");
    let _cluster = Proc::spawn(&[
        "cluster",
        "--data",
        data.to_str().unwrap(),
        "--db",
        &db.url,
        "--providers",
        "3",
    ]);
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("cluster.json")).unwrap()).unwrap();
    let file = format!(
        "{}/v2/{}/{}/1/file/f.bin",
        info["meta_url"].as_str().unwrap(),
        info["appkey"].as_str().unwrap(),
        info["appid"]
    );
    let h = reqwest::Client::new();
    assert_eq!(
        h.post(&file).send().await.unwrap().status(),
        StatusCode::CREATED
    );
    let body = random_bytes(1 << 20, 3);
    let put = h.put(&file).body(body.clone()).send().await.unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    let got = h.get(&file).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(got.as_ref(), body.as_slice());
    let stored = pg_run(&db.url, "SELECT count(*) FROM objects").unwrap();
    assert_eq!(stored.as_deref(), Some("1"), "the object is in PostgreSQL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_starting_together_on_a_new_store_sign_with_one_key() {
    let Some(server) = pg_server() else {
        return;
    };
    for _ in 0..3 {
        let db = TestDb::create(&server);
        let tmp = tempfile::tempdir().unwrap();
        let servers: Vec<Proc> = std::thread::scope(|s| {
            let starts: Vec<_> = ["a", "b", "c"]
                .map(|name| {
                    let data = tmp.path().join(name);
                    let url = db.url.clone();
                    s.spawn(move || {
                        Proc::spawn(&[
                            "meta",
                            "--listen",
                            "127.0.0.1:0",
                            "--data",
                            data.to_str().unwrap(),
                            "--db",
                            &url,
                        ])
                    })
                })
                .into_iter()
                .collect();
            starts.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let mut keys = Vec::new();
        for p in &servers {
            let r = reqwest::get(format!("{}/api/pubkey", p.url)).await.unwrap();
            keys.push(r.text().await.unwrap());
        }
        assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
    }
}
