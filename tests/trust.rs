//! The trust model under attack and under bad luck: shard copies shared by
//! objects survive garbage collection; nobody claims another app's object
//! by its hash; only enrolled providers with their own keys heartbeat; a
//! grant works only at its provider; a provider killed mid-upload never
//! leaves two shards of a partition on one provider; a full provider gets
//! nothing.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use tfsfs::proto::*;

/// `tfsfs meta` arguments: partitions of 1 MiB keep the files small, GC
/// runs at once.
fn gc_fast() -> Vec<&'static str> {
    [&["--partition-size", "1048576"], GC_NOW].concat()
}

/// A second app on the cluster's metadata server: (appkey, appid).
fn other_app(c: &TestCluster) -> (String, u64) {
    let v: serde_json::Value = serde_json::from_str(&c.admin(&["app", "create"])).unwrap();
    (
        v["appkey"].as_str().unwrap().into(),
        v["appid"].as_u64().unwrap(),
    )
}

/// `tfsfs ARGS` as app `appkey`, uid 1.
fn cli_of(c: &TestCluster, appkey: &str, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("TFSFS_META", &c.meta.url)
        .env("TFSFS_APPKEY", appkey)
        .env("TFSFS_UID", "1")
        .env(
            "XDG_CONFIG_HOME",
            c.dir.path().join(format!("config-{appkey}")),
        )
        .output()
        .unwrap()
}

async fn shard_count(c: &TestCluster) -> u64 {
    let mut n = 0;
    for i in 0..c.providers.len() {
        n += c.health(i).await.shards;
    }
    n
}

/// Waits until GC has had several rounds and the shard count is steady.
async fn settle_gc(c: &TestCluster) -> u64 {
    let mut last = shard_count(c).await;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now = shard_count(c).await;
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

fn same_file(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_keeps_shard_copies_that_other_objects_use() {
    let c = TestCluster::start_with(6, &gc_fast()).await;
    let dir = c.dir.path();
    // Ten pairs of plaintext files sharing their first 2 MiB (2 partitions:
    // identical shards), one of each pair then deleted.
    for i in 0..10u64 {
        let shared = random_bytes(2 << 20, 100 + i);
        for (j, tail) in [(0u64, 1000 + i), (1, 2000 + i)] {
            let mut data = shared.clone();
            data.extend(random_bytes(1 << 20, tail));
            let local = dir.join(format!("pair{i}-{j}"));
            std::fs::write(&local, data).unwrap();
            assert_ok(
                &c.put(&local, &format!("/pairs/{i}-{j}"), false),
                "put pair",
            );
        }
    }
    // Two apps storing the same bytes.
    let (key_b, _) = other_app(&c);
    let twice = dir.join("twice");
    std::fs::write(&twice, random_bytes(3 << 20, 7)).unwrap();
    assert_ok(&c.put(&twice, "/twice", false), "app A put");
    assert_ok(
        &cli_of(
            &c,
            &key_b,
            &["put", twice.to_str().unwrap(), "/twice", "--no-encrypt"],
        ),
        "app B put",
    );
    // A new version keeping the first partition of the old one.
    let v1 = random_bytes(3 << 20, 8);
    let mut v2 = v1[..1 << 20].to_vec();
    v2.extend(random_bytes(2 << 20, 9));
    std::fs::write(dir.join("v1"), &v1).unwrap();
    std::fs::write(dir.join("v2"), &v2).unwrap();
    assert_ok(&c.put(&dir.join("v1"), "/versioned", false), "put v1");
    assert_ok(&c.put(&dir.join("v2"), "/versioned", false), "put v2");

    let before = settle_gc(&c).await;
    for i in 0..10 {
        assert_ok(&c.cli(&["rm", &format!("/pairs/{i}-0")]), "rm pair");
    }
    assert_ok(&c.cli(&["rm", "/twice"]), "app A rm");
    let after = settle_gc(&c).await;
    assert!(
        after < before,
        "the deleted files' own shards were collected ({before} → {after})"
    );
    for i in 0..10 {
        let back = dir.join(format!("back{i}"));
        assert_ok(
            &c.get(&format!("/pairs/{i}-1"), &back, false),
            "get survivor",
        );
        assert!(
            same_file(&back, &dir.join(format!("pair{i}-1"))),
            "pair {i}"
        );
    }
    let back = dir.join("twice.back");
    assert_ok(
        &cli_of(
            &c,
            &key_b,
            &["get", "/twice", back.to_str().unwrap(), "--no-encrypt"],
        ),
        "app B get",
    );
    assert!(same_file(&back, &twice), "app B's copy");
    let back = dir.join("v2.back");
    assert_ok(&c.get("/versioned", &back, false), "get v2");
    assert!(same_file(&back, &dir.join("v2")), "the new version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_cannot_be_claimed_by_its_hash() {
    let c = TestCluster::start_with(6, &gc_fast()).await;
    // An object of three partitions: a REST write stores its body as one.
    let http = reqwest::Client::new();
    let url = format!("{}/file/secret", c.v2());
    assert_eq!(http.post(&url).send().await.unwrap().status(), 201);
    let secret = random_bytes(3 << 20, 11);
    let wrote = http.put(&url).body(secret.clone()).send().await;
    assert!(wrote.unwrap().status().is_success(), "owner write");
    let owner = c.layout("/secret").await;
    let object = &owner.fragments[0].object;
    assert_eq!(object.partitions.len(), 3);

    // Another app knows the object's hash, size and even its shard hashes.
    let (key_b, appid_b) = other_app(&c);
    let api = |step: &str| format!("{}/api/ns/{appid_b}/1/{step}", c.meta.url);
    let check = CheckRequest {
        path: "/stolen".into(),
        node: None,
        file_size: object.plain_size,
        object_sha1: object.sha1.clone(),
        object_size: object.stored_size,
        partition_size: object.partition_size,
        key: None,
        data: None,
        attrs: FileAttrs::default(),
        base_ver: None,
        create: None,
    };
    let r = http
        .post(api("check"))
        .header(APPKEY_HEADER, &key_b)
        .json(&check)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let CheckResponse::Erasure { session, .. } = r.json().await.unwrap() else {
        panic!("another app's object is never 'already stored'");
    };
    let metas: Vec<PartitionMeta> = object
        .partitions
        .iter()
        .map(|p| PartitionMeta {
            index: p.index,
            size: p.size,
            k: p.k,
            m: p.m,
            shards: p
                .shards
                .iter()
                .map(|s| ShardMeta {
                    sha1: s.sha1.clone(),
                    size: s.size,
                })
                .collect(),
        })
        .collect();
    let r = http
        .post(api("prepare"))
        .header(APPKEY_HEADER, &key_b)
        .json(&PrepareRequest {
            session: session.clone(),
            partitions: metas.clone(),
            avoid: vec![],
        })
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Done without receipts, and with receipts the claimant signed itself.
    let forger = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    // The forged receipts name a real, enrolled provider.
    let holder = object.partitions[0].shards[0].providers[0].id.clone();
    let claim = |forge: bool| DoneRequest {
        session: session.clone(),
        partitions: metas
            .iter()
            .map(|p| StoredPartition {
                index: p.index,
                size: p.size,
                k: p.k,
                m: p.m,
                shards: p
                    .shards
                    .iter()
                    .map(|s| StoredShard {
                        sha1: s.sha1.clone(),
                        size: s.size,
                        receipts: if forge {
                            vec![tfsfs::grant::sign(
                                &tfsfs::grant::Receipt {
                                    shard: s.sha1.clone(),
                                    size: s.size,
                                    provider: holder.clone(),
                                    session: session.clone(),
                                },
                                &forger,
                            )]
                        } else {
                            vec![]
                        },
                    })
                    .collect(),
            })
            .collect(),
    };
    for forge in [false, true] {
        let r = http
            .post(api("done"))
            .header(APPKEY_HEADER, &key_b)
            .json(&claim(forge))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::BAD_REQUEST,
            "forged receipts: {forge}"
        );
    }
    let r = http
        .get(api("layout"))
        .query(&[("path", "/stolen")])
        .header(APPKEY_HEADER, &key_b)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "nothing was committed");
    // The claimant's session ends unused; GC runs; the owner's file is whole.
    let _ = cli_of(&c, &key_b, &["rm", "/stolen"]);
    settle_gc(&c).await;
    let back = c.dir.path().join("secret.back");
    assert_ok(&c.get("/secret", &back, false), "owner get");
    assert!(std::fs::read(&back).unwrap() == secret, "the owner's bytes");
}

#[tokio::test]
async fn only_enrolled_providers_heartbeat_and_only_with_their_key() {
    let c = TestCluster::start(6).await;
    let before = c.provider_list().await;
    let http = reqwest::Client::new();
    let beat_url = format!("{}/api/providers/heartbeat", c.meta.url);
    let enroll_url = format!("{}/api/providers/enroll", c.meta.url);
    let victim = before[0].id.clone();
    let rogue = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let beat = |id: &str, url: &str| tfsfs::grant::Beat {
        id: id.into(),
        url: url.into(),
        capacity: 1 << 40,
        used: 0,
        ts_ms: tfsfs::grant::now_ms(),
    };
    // The old unsigned heartbeat, a rogue id, and a spoof of a known id.
    let unsigned = serde_json::json!({"id": "p-rogue", "url": "http://127.0.0.1:9", "capacity": 1u64 << 40, "used": 0});
    let r = http.post(&beat_url).json(&unsigned).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "unsigned");
    for id in ["p-rogue", victim.as_str()] {
        let token = tfsfs::grant::sign(&beat(id, "http://127.0.0.1:9"), &rogue);
        let r = http.post(&beat_url).body(token).send().await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "beat for {id} signed by a stranger"
        );
    }
    // Enrollment needs a valid token, and an enrolled id keeps its key.
    let enroll = |id: &str, token: Option<String>| EnrollRequest {
        beat: tfsfs::grant::sign(&beat(id, "http://127.0.0.1:9"), &rogue),
        pubkey: hex::encode(rogue.verifying_key().to_bytes()),
        token,
    };
    for (what, req) in [
        ("no token", enroll("p-rogue", None)),
        ("made-up token", enroll("p-rogue", Some("join-123".into()))),
        ("known id, other key", enroll(&victim, Some(c.join.clone()))),
    ] {
        let r = http.post(&enroll_url).json(&req).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what}");
    }
    // A single-use token enrolls one provider, not two.
    let once = c.admin(&["provider", "token"]).trim().to_string();
    let r = http
        .post(&enroll_url)
        .json(&enroll("p-new", Some(once.clone())))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "first use");
    let other = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let second = EnrollRequest {
        beat: tfsfs::grant::sign(&beat("p-newer", "http://127.0.0.1:9"), &other),
        pubkey: hex::encode(other.verifying_key().to_bytes()),
        token: Some(once),
    };
    let r = http.post(&enroll_url).json(&second).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "second use");
    // A recorded heartbeat cannot be replayed. (A beat in the same
    // millisecond as p-new's enrollment beat would not be newer: wait.)
    tokio::time::sleep(Duration::from_millis(5)).await;
    let recorded = tfsfs::grant::sign(&beat("p-new", "http://127.0.0.1:9"), &rogue);
    let r = http
        .post(&beat_url)
        .body(recorded.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "fresh beat");
    let r = http.post(&beat_url).body(recorded).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "replayed beat");
    // The real providers are as they were; only p-new was added.
    let after = c.provider_list().await;
    for p in &before {
        let now = after.iter().find(|q| q.id == p.id).expect("still listed");
        assert_eq!(now.url, p.url, "{}'s URL is unchanged", p.id);
    }
    let ids: HashSet<&str> = after.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids.len(), before.len() + 1);
    assert!(ids.contains("p-new") && !ids.contains("p-rogue") && !ids.contains("p-newer"));
}

#[tokio::test]
async fn a_grant_works_only_at_its_provider() {
    let c = TestCluster::start(6).await;
    let local = c.dir.path().join("f");
    std::fs::write(&local, random_bytes(5 << 20, 3)).unwrap();
    assert_ok(&c.put(&local, "/f", true), "put");
    let layout = c.layout("/f").await;
    let object = &layout.fragments[0].object;
    let shard = &object.partitions[0].shards[0];
    let holder = &shard.providers[0];
    let own = &object.grants[&holder.id];
    let http = reqwest::Client::new();
    let get = |p: &ProviderInfo, grant: &str| {
        http.get(format!("{}/shards/{}", p.url, shard.sha1))
            .header(tfsfs::grant::GRANT_HEADER, grant)
            .send()
    };
    assert_eq!(get(holder, own).await.unwrap().status(), StatusCode::OK);
    let (other_id, other_grant) = object
        .grants
        .iter()
        .find(|(id, _)| *id != &holder.id)
        .expect("the object spans several providers");
    assert_eq!(
        get(holder, other_grant).await.unwrap().status(),
        StatusCode::FORBIDDEN,
        "{other_id}'s grant used at {}",
        holder.id
    );
}

/// Checks a committed file's placement: every partition has all k+m shards,
/// each on exactly one provider, all distinct, with m = 2.
fn assert_distinct(layout: &FileLayout) {
    for frag in &layout.fragments {
        for p in &frag.object.partitions {
            assert_eq!(p.m, 2, "parity never reduced");
            assert_eq!(p.shards.len(), p.k + p.m);
            let on: HashSet<&str> = p
                .shards
                .iter()
                .map(|s| {
                    assert_eq!(s.providers.len(), 1);
                    s.providers[0].id.as_str()
                })
                .collect();
            assert_eq!(on.len(), p.k + p.m, "partition {} doubles up", p.index);
        }
    }
}

async fn provider_killed_mid_upload(n: usize) {
    let mut c = TestCluster::start(n).await;
    let local = c.dir.path().join("big");
    std::fs::write(&local, random_bytes(200 << 20, n as u64)).unwrap();
    for (round, delay_ms) in [200u64, 900].into_iter().enumerate() {
        let victim = round;
        let remote = format!("/big{round}");
        let mut put = Command::new(bin())
            .args(["put", local.to_str().unwrap(), &remote])
            .env("TFSFS_META", &c.meta.url)
            .env("TFSFS_APPKEY", &c.appkey)
            .env("TFSFS_UID", "1")
            .env("XDG_CONFIG_HOME", c.dir.path().join("config"))
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        c.providers[victim].kill();
        let status = put.wait().unwrap();
        assert!(
            status.success(),
            "put with provider {victim} killed after {delay_ms} ms"
        );
        let layout = c.layout(&remote).await;
        assert_distinct(&layout);
        // The killed provider comes back (it needs no token now); then the
        // two providers holding most of the file are lost: it still reads.
        c.restart_provider(victim);
        c.wait_alive(n).await;
        let mut load: HashMap<String, usize> = HashMap::new();
        for p in &layout.fragments[0].object.partitions {
            for s in &p.shards {
                *load.entry(s.providers[0].url.clone()).or_default() += 1;
            }
        }
        let mut heaviest: Vec<(String, usize)> = load.into_iter().collect();
        heaviest.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        let urls: Vec<String> = c.providers.iter().map(|p| p.url.clone()).collect();
        let lost: Vec<usize> = heaviest
            .iter()
            .take(2)
            .filter_map(|(url, _)| urls.iter().position(|u| u == url))
            .collect();
        for &i in &lost {
            c.providers[i].kill();
        }
        let back = c.dir.path().join("big.back");
        assert_ok(&c.get(&remote, &back, true), "get with two providers lost");
        assert!(same_file(&back, &local), "{remote} reads back equal");
        for &i in &lost {
            c.restart_provider(i);
        }
        c.wait_alive(n).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_killed_mid_upload_of_six() {
    provider_killed_mid_upload(6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_killed_mid_upload_of_eight() {
    provider_killed_mid_upload(8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_provider_gets_nothing() {
    let mut c = TestCluster::start_with(6, &["--partition-size", "1048576"]).await;
    // A seventh provider with no room at all (used 0 of capacity 0).
    c.add_provider_with(&["--capacity", "0"]);
    c.wait_alive(7).await;
    for i in 0..3u64 {
        let local = c.dir.path().join(format!("f{i}"));
        let size = [20 << 20, 300 << 10, 5 << 20][i as usize];
        std::fs::write(&local, random_bytes(size, 40 + i)).unwrap();
        let remote = format!("/f{i}");
        assert_ok(&c.put(&local, &remote, true), "put");
        let back = c.dir.path().join(format!("back{i}"));
        assert_ok(&c.get(&remote, &back, true), "get");
        assert!(same_file(&back, &local));
    }
    assert_distinct(&c.layout("/f0").await);
    let h = c.health(6).await;
    assert_eq!(
        (h.shards, h.bytes_received),
        (0, 0),
        "a full provider gets nothing"
    );
}

#[tokio::test]
async fn too_few_providers_store_nothing_rather_than_less_redundancy() {
    // RS(4,2) needs m + 1 = 3 distinct providers at least; 2 are up.
    let c = TestCluster::start(2).await;
    let local = c.dir.path().join("f");
    std::fs::write(&local, random_bytes(5 << 20, 8)).unwrap();
    let out = c.put(&local, "/f", true);
    assert!(!out.status.success(), "put with 2 providers must fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("distinct"), "a clear reason: {err}");
    assert_eq!((c.health(0).await.shards, c.health(1).await.shards), (0, 0));
    let ls = c.cli(&["ls", "/"]);
    assert!(
        !String::from_utf8_lossy(&ls.stdout).contains('f'),
        "nothing committed"
    );
}

/// Node ids a mount names files with come only from its namespace's own
/// reservation (`fs/ids`), once each: another app with a valid key of its
/// own can take none of them, nor an id never reserved (which a later
/// node would be given), and ids made later never fall in a reservation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_id_comes_only_from_the_namespaces_own_reservation() {
    let c = TestCluster::start(3).await;
    let (key_b, appid_b) = other_app(&c);
    let http = reqwest::Client::new();
    let a = |step: &str| format!("{}/api/ns/{}/{}/{step}", c.meta.url, c.appid, c.uid);
    let b = |step: &str| format!("{}/api/ns/{appid_b}/1/{step}", c.meta.url);
    let post = |url: String, key: &str, body: serde_json::Value| {
        http.post(url).header(APPKEY_HEADER, key).json(&body).send()
    };
    let root = |url: String, key: &str| {
        let r = http.get(url).header(APPKEY_HEADER, key).send();
        async move { r.await.unwrap().json::<NodeAttr>().await.unwrap().id }
    };
    let (root_a, root_b) = (
        root(a("fs/root"), &c.appkey).await,
        root(b("fs/root"), &key_b).await,
    );
    let reserve = |url: String, key: &str, count: u32| {
        let r = post(url, key, serde_json::json!({ "count": count }));
        async move { r.await.unwrap() }
    };
    let ids_a: IdRange = reserve(a("fs/ids"), &c.appkey, 4)
        .await
        .json()
        .await
        .unwrap();
    let ids_b: IdRange = reserve(b("fs/ids"), &key_b, 4).await.json().await.unwrap();
    assert_eq!((ids_a.high - ids_a.low, ids_b.high - ids_b.low), (3, 3));
    assert!(ids_b.low > ids_a.high, "{ids_a:?} {ids_b:?}");
    for count in [0, 1 << 20] {
        let r = reserve(a("fs/ids"), &c.appkey, count).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "count {count}");
    }

    let make = |parent: i64, name: &str, id: i64| {
        serde_json::to_value(MakeRequest {
            id: Some(id),
            parent,
            name: name.into(),
            kind: NodeKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            umask: 0,
            target: None,
            rdev: 0,
        })
        .unwrap()
    };
    // B, in its own namespace, with A's id, or with one nobody reserved.
    for id in [ids_a.low, ids_b.high + 1000] {
        let r = post(b("fs/make"), &key_b, make(root_b, "x", id))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "B made node {id}");
        let data = b"stolen id";
        let check = CheckRequest {
            path: String::new(),
            node: None,
            file_size: data.len() as u64,
            object_sha1: tfsfs::codec::sha1_hex(data),
            object_size: data.len() as u64,
            partition_size: 4 << 20,
            key: None,
            data: Some(base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                data,
            )),
            attrs: FileAttrs::default(),
            base_ver: None,
            create: Some(NewFile {
                id,
                parent: root_b,
                name: "y".into(),
                mode: 0o644,
                uid: 0,
                gid: 0,
                umask: 0,
                replace: false,
            }),
        };
        let r = post(b("check"), &key_b, serde_json::to_value(&check).unwrap())
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "B committed node {id}");
    }
    // A, with its own, but for a file too big to travel inline (it would
    // need a session's upload before the commit): refused.
    let too_big = CheckRequest {
        // A path REST could upload to: the create alone is refused.
        path: "/big".into(),
        node: None,
        file_size: 9000,
        object_sha1: "0".repeat(40),
        object_size: 9000,
        partition_size: 4 << 20,
        key: None,
        data: None,
        attrs: FileAttrs::default(),
        base_ver: None,
        create: Some(NewFile {
            id: ids_a.low + 1,
            parent: root_a,
            name: "big".into(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            umask: 0,
            replace: false,
        }),
    };
    let r = post(
        a("check"),
        &c.appkey,
        serde_json::to_value(&too_big).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "a create past the inline size"
    );
    // A, with its own: once.
    let r = post(a("fs/make"), &c.appkey, make(root_a, "x", ids_a.low))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<NodeAttr>().await.unwrap().id, ids_a.low);
    let again = post(a("fs/make"), &c.appkey, make(root_a, "x2", ids_a.low)).await;
    assert_eq!(again.unwrap().status(), StatusCode::BAD_REQUEST);
    // A node made without an id gets one past every reservation.
    let mut plain = make(root_a, "plain", 0);
    plain["id"] = serde_json::Value::Null;
    let r = post(a("fs/make"), &c.appkey, plain).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.json::<NodeAttr>().await.unwrap().id > ids_b.high);
    // B's namespace holds nothing of all that.
    let listed: Vec<NodeAttr> = http
        .get(b(&format!("fs/children/{root_b}")))
        .header(APPKEY_HEADER, &key_b)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(listed.is_empty(), "{listed:?}");
}
