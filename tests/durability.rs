//! Durability with real processes: providers that die for good, a drained
//! provider, and shard files damaged on providers' disks are all repaired
//! by the metadata server, on ciphertext, until every partition is back at
//! full redundancy; a provider that comes back after its shards were
//! rebuilt elsewhere has its stale copies deleted, never served.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use tfsfs::meta::store::HealthReport;

/// 1 MiB partitions; providers dead after 2 s, their shards lost after 3 s;
/// repair and GC every second.
fn fast() -> Vec<&'static str> {
    let repair: &[&str] = &[
        "--partition-size",
        "1048576",
        "--provider-timeout-secs",
        "2",
        "--repair-after-secs",
        "3",
        "--repair-interval-secs",
        "1",
        "--repair-rate",
        "0",
        "--verify-rate",
        "2000",
    ];
    [repair, GC_NOW].concat()
}

fn health(c: &TestCluster) -> HealthReport {
    serde_json::from_str(&c.admin(&["health", "--json"])).unwrap()
}

async fn api_health(c: &TestCluster) -> HealthReport {
    reqwest::get(format!("{}/api/health", c.meta.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn full(h: &HealthReport) -> bool {
    h.partitions > 0 && h.full == h.partitions && h.repair_queue == 0
}

/// Waits until every partition is at full redundancy; the time it took.
async fn wait_full(c: &TestCluster, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let h = health(c);
        if full(&h) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "not back at full redundancy after {limit:?}: {h:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until the server sees redundancy missing (a kill noticed).
async fn wait_degraded(c: &TestCluster) {
    for _ in 0..100 {
        if !full(&health(c)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the server never noticed the loss");
}

/// Thirty files: inline, replicated and erasure-coded, some encrypted.
fn write_files(c: &TestCluster) -> Vec<(String, PathBuf, bool)> {
    let dir = c.dir.path().join("src");
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = Vec::new();
    for i in 0..30u64 {
        let len = match i % 3 {
            0 => 100 + i as usize * 50,           // inline
            1 => 20_000 + i as usize * 7_000,     // replicated
            _ => (1 << 20) + i as usize * 90_000, // erasure, 2-4 partitions
        };
        let local = dir.join(format!("f{i}"));
        std::fs::write(&local, random_bytes(len, 500 + i)).unwrap();
        let remote = format!("/d/f{i}");
        let encrypt = i % 2 == 0;
        assert_ok(&c.put(&local, &remote, encrypt), "put");
        files.push((remote, local, encrypt));
    }
    files
}

fn read_all(c: &TestCluster, files: &[(String, PathBuf, bool)]) {
    let out = c.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    for (remote, local, encrypt) in files {
        let got = out.join(remote.trim_start_matches('/').replace('/', "_"));
        assert_ok(&c.get(remote, &got, *encrypt), &format!("get {remote}"));
        assert!(
            std::fs::read(&got).unwrap() == std::fs::read(local).unwrap(),
            "{remote} reads back different"
        );
    }
}

/// `fast()` without the verifier: damage is found only when reported.
fn unverified() -> Vec<&'static str> {
    let mut args = fast();
    let at = args.iter().position(|a| *a == "--verify-rate").unwrap();
    args[at + 1] = "0";
    args
}

/// The file of `shard`'s first copy on its provider's disk.
fn shard_file(c: &TestCluster, shard: &tfsfs::proto::ShardLocation) -> PathBuf {
    let holder = (0..c.providers.len())
        .position(|i| provider_id(c, i) == shard.providers[0].id)
        .unwrap();
    c.provider_dir(holder)
        .join("shards")
        .join(&shard.sha1[..2])
        .join(&shard.sha1)
}

fn provider_id(c: &TestCluster, i: usize) -> String {
    std::fs::read_to_string(c.provider_dir(i).join("provider_id"))
        .unwrap()
        .trim()
        .to_string()
}

/// Shard files on provider `i`'s disk.
fn shard_files(c: &TestCluster, i: usize) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(dirs) = std::fs::read_dir(c.provider_dir(i).join("shards")) else {
        return out;
    };
    for d in dirs {
        for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out
}

/// Whether a shard file hashes to its name (one deleted meanwhile, by GC
/// or quarantine, is not wrong).
fn hashes_right(p: &Path) -> bool {
    let Ok(data) = std::fs::read(p) else {
        return !p.exists();
    };
    tfsfs::codec::shard_matches(p.file_name().unwrap().to_str().unwrap(), &data)
}

/// Providers each file's layout names.
async fn providers_in_layouts(
    c: &TestCluster,
    files: &[(String, PathBuf, bool)],
) -> HashSet<String> {
    let mut ids = HashSet::new();
    for (remote, ..) in files {
        for f in c.layout(remote).await.fragments {
            for p in &f.object.partitions {
                for s in &p.shards {
                    ids.extend(s.providers.iter().map(|p| p.id.clone()));
                }
            }
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_providers_are_repaired_and_their_return_serves_nothing_stale() {
    let mut c = TestCluster::start_with(8, &fast()).await;
    let files = write_files(&c);
    let h = health(&c);
    assert!(full(&h), "all healthy after upload: {h:?}");
    let gone = provider_id(&c, 0);
    let before = shard_files(&c, 0).len();
    assert!(before > 0, "provider 0 holds shards");

    let killed = Instant::now();
    c.providers[0].kill();
    c.providers[1].kill();
    wait_degraded(&c).await;
    wait_full(&c, Duration::from_secs(90)).await;
    let to_full = killed.elapsed();
    let h = api_health(&c).await;
    eprintln!(
        "FIGURE repair: {} shards, {:.1} MiB rebuilt; provider death to full redundancy {:.1} s \
         (repair delay 3 s, last_seen kept in whole seconds)",
        h.repaired_shards,
        h.repaired_bytes as f64 / (1 << 20) as f64,
        to_full.as_secs_f64(),
    );
    eprintln!(
        "FIGURE repair round: {:.1} MiB of shards stored in {} ms: {:.1} MiB/s (unbounded rate)",
        h.last_round_bytes as f64 / (1 << 20) as f64,
        h.last_round_ms,
        h.last_round_bytes as f64 / (1 << 20) as f64 / (h.last_round_ms.max(1) as f64 / 1000.0)
    );
    assert!(h.repaired_shards > 0);
    assert!(
        !providers_in_layouts(&c, &files).await.contains(&gone),
        "no layout names the dead provider any more"
    );

    // Provider 0 comes back: its copies were rebuilt elsewhere, so they are
    // garbage, deleted; never placed again.
    c.restart_provider(0);
    let start = Instant::now();
    while !shard_files(&c, 0).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "stale copies of the returning provider are deleted: {} of {before} left",
            shard_files(&c, 0).len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(!providers_in_layouts(&c, &files).await.contains(&gone));

    // Two more die: every partition still has four of its six shards.
    c.providers[2].kill();
    c.providers[3].kill();
    read_all(&c, &files);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_provider_is_emptied_then_retired() {
    let mut c = TestCluster::start_with(8, &fast()).await;
    let files = write_files(&c);
    let id = provider_id(&c, 0);
    assert!(!shard_files(&c, 0).is_empty());
    c.admin(&["provider", "drain", &id]);
    let start = Instant::now();
    loop {
        let list: Vec<serde_json::Value> =
            serde_json::from_str(&c.admin(&["provider", "list", "--json"])).unwrap();
        let me = list.iter().find(|p| p["id"] == id.as_str()).unwrap();
        if me["state"] == "retired" && full(&health(&c)) {
            assert_eq!(me["shards"], 0);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "drain never finished: {me}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "FIGURE drain: provider emptied and retired in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    // Its files go as garbage, while it is still up.
    let start = Instant::now();
    while !shard_files(&c, 0).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "drained copies deleted"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(!providers_in_layouts(&c, &files).await.contains(&id));
    // New uploads avoid it.
    let extra = c.dir.path().join("extra");
    std::fs::write(&extra, random_bytes(3 << 20, 99)).unwrap();
    assert_ok(&c.put(&extra, "/extra", true), "put after drain");
    assert!(
        !providers_in_layouts(&c, &[("/extra".into(), extra.clone(), true)])
            .await
            .contains(&id)
    );

    c.providers[0].kill();
    c.providers[1].kill();
    c.providers[2].kill();
    read_all(&c, &files);
    c.admin(&["provider", "remove", &id]);
    let list: Vec<serde_json::Value> =
        serde_json::from_str(&c.admin(&["provider", "list", "--json"])).unwrap();
    assert!(list.iter().all(|p| p["id"] != id.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_holding_unique_shards_cannot_be_removed() {
    let c = TestCluster::start_with(6, &fast()).await;
    let local = c.dir.path().join("f");
    std::fs::write(&local, random_bytes(2 << 20, 1)).unwrap();
    assert_ok(&c.put(&local, "/f", true), "put");
    let id = provider_id(&c, 0);
    let out = c
        .admin_command()
        .args(["provider", "remove", &id])
        .output()
        .unwrap();
    assert!(!out.status.success(), "removal refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("only copy"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrub_and_verifier_find_damaged_shard_files_and_repair_heals_them() {
    let mut c = TestCluster::start_with(0, &fast()).await;
    for _ in 0..8 {
        c.add_provider_with(&["--scrub-interval-secs", "2", "--scrub-rate", "64"]);
    }
    c.wait_alive(8).await;
    let files = write_files(&c);
    let ids: Vec<String> = (0..8).map(|i| provider_id(&c, i)).collect();
    let dir_of = |id: &str| c.provider_dir(ids.iter().position(|x| x == id).unwrap());
    // Damage two shards of one partition of each erasure-coded file (bit
    // flip, truncation or deletion), and one copy of each replicated file.
    let mut damaged = Vec::new();
    for (n, (remote, ..)) in files.iter().enumerate() {
        let layout = c.layout(remote).await;
        let Some(part) = layout
            .fragments
            .first()
            .and_then(|f| f.object.partitions.first())
        else {
            continue; // inline
        };
        let picks = if part.shards.len() > 1 { 2 } else { 1 };
        for (j, s) in part.shards.iter().take(picks).enumerate() {
            let path = dir_of(&s.providers[0].id)
                .join("shards")
                .join(&s.sha1[..2])
                .join(&s.sha1);
            match (n + j) % 3 {
                0 => {
                    let mut data = std::fs::read(&path).unwrap();
                    let at = data.len() / 2;
                    data[at] ^= 0x40;
                    std::fs::write(&path, data).unwrap();
                }
                1 => {
                    let data = std::fs::read(&path).unwrap();
                    std::fs::write(&path, &data[..data.len() / 3]).unwrap();
                }
                _ => std::fs::remove_file(&path).unwrap(),
            }
            damaged.push(s.sha1.clone());
        }
    }
    assert!(damaged.len() >= 25, "{} shard files damaged", damaged.len());
    // Found (scrub, verifier), rebuilt elsewhere, the bad copies deleted:
    // every shard file on every disk hashes right, each damaged shard is
    // stored again, every partition is at full redundancy.
    let start = Instant::now();
    loop {
        let mut present = HashSet::new();
        let mut wrong = 0;
        for i in 0..8 {
            for f in shard_files(&c, i) {
                if !hashes_right(&f) {
                    wrong += 1;
                } else if f.exists() {
                    present.insert(f.file_name().unwrap().to_str().unwrap().to_string());
                }
            }
        }
        let missing = damaged.iter().filter(|s| !present.contains(*s)).count();
        let h = health(&c);
        if wrong == 0 && missing == 0 && full(&h) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "{wrong} shard files hash wrong, {missing} damaged shards not stored again: {h:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "FIGURE scrub+verify: {} damaged shard files found and repaired in {:.1} s",
        damaged.len(),
        start.elapsed().as_secs_f64()
    );
    let mut bad_found = 0;
    let mut scrubbed = 0;
    for i in 0..8 {
        let h = c.health(i).await;
        bad_found += h.scrub.bad_found;
        scrubbed += (h.scrub.passes > 0) as usize;
    }
    assert!(
        bad_found > 0,
        "scrubs found the flipped and truncated files"
    );
    assert_eq!(scrubbed, 8);
    let h = health(&c);
    assert!(h.providers.iter().all(|p| p.scrub.is_some()), "{h:?}");
    // Scrub rate: every provider's last pass (bounded at 64 MiB/s).
    for i in 0..8 {
        let h = c.health(i).await.scrub;
        eprintln!(
            "FIGURE scrub: provider {i} hashed {:.2} MiB in {} ms ({:.1} MiB/s)",
            h.last_pass_bytes as f64 / (1 << 20) as f64,
            h.last_pass_ms,
            h.last_pass_bytes as f64 / (1 << 20) as f64 / (h.last_pass_ms.max(1) as f64 / 1000.0)
        );
    }
    c.providers[7].kill();
    read_all(&c, &files);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readers_report_is_checked_then_repaired() {
    // No verifier and no scrub: only the report finds the damage.
    let c = TestCluster::start_with(7, &unverified()).await;
    let local = c.dir.path().join("f");
    std::fs::write(&local, random_bytes(3 << 20, 5)).unwrap();
    assert_ok(&c.put(&local, "/f", true), "put");
    let layout = c.layout("/f").await;
    let part = &layout.fragments[0].object.partitions[0];
    let (bad, good) = (&part.shards[0], &part.shards[1]);
    std::fs::remove_file(shard_file(&c, bad)).unwrap();
    // A report of `shard`'s copy on its first provider, for namespace
    // (appid, `uid`), with the appkey or without.
    let report_as = |uid: u64, appkey: bool, shard: &tfsfs::proto::ShardLocation| {
        let mut req = reqwest::Client::new()
            .post(format!("{}/api/ns/{}/{uid}/report", c.meta.url, c.appid))
            .json(&tfsfs::proto::ShardReport {
                sha1: shard.sha1.clone(),
                provider: shard.providers[0].id.clone(),
            });
        if appkey {
            req = req.header(tfsfs::proto::APPKEY_HEADER, &c.appkey);
        }
        req.send()
    };
    let report = |shard| report_as(c.uid, true, shard);
    let r = report(good).await.unwrap();
    assert!(r.status().is_success());
    assert!(
        !r.json::<bool>().await.unwrap(),
        "a false claim is checked and ignored"
    );
    let r = report_as(c.uid, false, bad).await.unwrap();
    assert_eq!(
        r.status(),
        reqwest::StatusCode::UNAUTHORIZED,
        "needs the appkey"
    );
    let r = report_as(2, true, bad).await.unwrap();
    assert!(
        !r.json::<bool>().await.unwrap(),
        "only copies of the reader's own namespace are checked"
    );
    let r = report(bad).await.unwrap();
    assert!(
        r.json::<bool>().await.unwrap(),
        "the missing copy is confirmed"
    );
    wait_full(&c, Duration::from_secs(30)).await;
    let layout = c.layout("/f").await;
    let now = &layout.fragments[0].object.partitions[0].shards[0];
    assert_eq!(now.sha1, bad.sha1);
    assert_ne!(
        now.providers[0].id, bad.providers[0].id,
        "rebuilt elsewhere"
    );
    read_all(&c, &[("/f".into(), local, true)]);
    // A client with a valid key cannot make the server fetch shards
    // without bound: reports past the namespace's budget answer 429.
    let flood = futures::future::join_all((0..120).map(|_| report(good))).await;
    let refused = flood
        .iter()
        .filter(|r| r.as_ref().unwrap().status() == reqwest::StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(
        (50..=80).contains(&refused),
        "{refused} of 120 reports refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_bandwidth_is_bounded() {
    let mut args = fast();
    let at = args.iter().position(|a| *a == "--repair-rate").unwrap();
    args[at + 1] = "2";
    let mut c = TestCluster::start_with(7, &args).await;
    let mut files = Vec::new();
    for i in 0..3u64 {
        let local = c.dir.path().join(format!("b{i}"));
        std::fs::write(&local, random_bytes(3 << 20, 40 + i)).unwrap();
        let remote = format!("/b{i}");
        assert_ok(&c.put(&local, &remote, false), "put");
        files.push((remote, local, false));
    }
    c.providers[0].kill();
    wait_degraded(&c).await;
    wait_full(&c, Duration::from_secs(60)).await;
    let h = api_health(&c).await;
    // Every stored byte was read about k times first: stored bytes move at
    // well under the rate, never above it.
    let rate = h.last_round_bytes as f64 / (1 << 20) as f64 / (h.last_round_ms as f64 / 1000.0);
    eprintln!(
        "FIGURE bounded repair: {:.2} MiB stored in {} ms ({rate:.2} MiB/s stored, rate 2 MiB/s read+written)",
        h.last_round_bytes as f64 / (1 << 20) as f64,
        h.last_round_ms
    );
    assert!(h.last_round_bytes > 0);
    assert!(rate <= 2.0, "{rate} MiB/s");
    let text = c.admin(&["health"]);
    assert!(text.contains("repair queue: 0"), "{text}");
    let text = c.admin(&["provider", "list"]);
    assert_eq!(text.lines().count(), 8, "{text}");
    read_all(&c, &files);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_routes_around_a_corrupt_shard_causes_its_repair() {
    // No verifier and no scrub: only the reader finds the damage.
    let c = TestCluster::start_with(7, &unverified()).await;
    let local = c.dir.path().join("f");
    std::fs::write(&local, random_bytes(3 << 20, 6)).unwrap();
    assert_ok(&c.put(&local, "/f", true), "put");
    let layout = c.layout("/f").await;
    let bad = layout.fragments[0].object.partitions[0].shards[0].clone();
    let path = shard_file(&c, &bad);
    let mut raw = std::fs::read(&path).unwrap();
    raw[100] ^= 0x40;
    std::fs::write(&path, raw).unwrap();
    // The read goes around the flipped shard, returns the right bytes, and
    // tells the metadata server, which checks the copy and rebuilds it.
    read_all(&c, &[("/f".into(), local.clone(), true)]);
    wait_full(&c, Duration::from_secs(30)).await;
    let now = &c.layout("/f").await.fragments[0].object.partitions[0].shards[0];
    assert_eq!(now.sha1, bad.sha1);
    assert_ne!(
        now.providers[0].id, bad.providers[0].id,
        "rebuilt elsewhere"
    );
    read_all(&c, &[("/f".into(), local, true)]);
}
