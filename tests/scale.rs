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
async fn concurrent_creates_over_two_servers_make_each_name_once() {
    let Some((c, b)) = two_servers(0).await else {
        return;
    };
    let bases = [c.v2(), c.v2().replace(&c.meta.url, &b.url)];
    let h = reqwest::Client::new();
    let tries = (0..1000).map(|i| {
        let url = format!("{}/file/f{}", bases[i % 2], i % 100);
        let h = h.clone();
        async move { h.post(url).send().await.map(|r| r.status()) }
    });
    let statuses = join_all(tries).await;
    let mut created = 0;
    for s in statuses {
        match s.expect("request") {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(created, 100);
    let list: serde_json::Value = h
        .get(format!("{}/dir/", c.v2_meta().replace(&c.meta.url, &b.url)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 100, "{list}");
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
