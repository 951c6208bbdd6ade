//! Providers act only on grants signed by the metadata server.

mod common;

use common::*;
use ed25519_dalek::SigningKey;
use reqwest::StatusCode;
use tfsfs::grant::{now_secs, Grant, Op, GRANT_HEADER};

fn grant_for(key: &SigningKey, provider: &str, op: Op, shard: &str, exp: u64) -> String {
    Grant {
        op,
        provider: provider.to_string(),
        shards: vec![shard.to_string()],
        exp,
        session: Some("s".into()),
        stored_before_ms: None,
    }
    .sign(key)
}

#[tokio::test]
async fn provider_refuses_without_a_valid_grant() {
    let c = TestCluster::start(1).await;
    let db = tfsfs::meta::Db::open(&c.dir.path().join("meta")).unwrap();
    let raw: [u8; 32] = db
        .config_get("signing_key")
        .unwrap()
        .unwrap()
        .try_into()
        .unwrap();
    let meta_key = SigningKey::from_bytes(&raw);
    let forger = SigningKey::generate(&mut rand::rngs::OsRng);
    let http = reqwest::Client::new();
    let base = &c.providers[0].url;
    let data = random_bytes(1000, 1);
    let sha1 = tfsfs::codec::sha1_hex(&data);
    let other = tfsfs::codec::sha1_hex(b"other");
    let url = format!("{base}/shards/{sha1}");
    let later = now_secs() + 60;
    let me = c.health(0).await.id;
    let grant =
        |key: &SigningKey, op: Op, shard: &str, exp: u64| grant_for(key, &me, op, shard, exp);
    let put = |g: Option<String>, body: Vec<u8>| {
        let mut r = http.put(&url).body(body);
        if let Some(g) = g {
            r = r.header(GRANT_HEADER, g);
        }
        r.send()
    };
    let refused = [
        ("none", None),
        ("forged", Some(grant(&forger, Op::Put, &sha1, later))),
        (
            "expired",
            Some(grant(&meta_key, Op::Put, &sha1, now_secs() - 5)),
        ),
        (
            "other shard",
            Some(grant(&meta_key, Op::Put, &other, later)),
        ),
        ("other op", Some(grant(&meta_key, Op::Get, &sha1, later))),
        (
            "other provider",
            Some(grant_for(&meta_key, "p-other", Op::Put, &sha1, later)),
        ),
        ("garbage", Some("not.a-grant".to_string())),
    ];
    for (what, g) in refused {
        assert_eq!(
            put(g, data.clone()).await.unwrap().status(),
            StatusCode::FORBIDDEN,
            "{what} grant"
        );
    }
    let get_grant = grant(&meta_key, Op::Get, &sha1, later);
    let get = || http.get(&url).header(GRANT_HEADER, &get_grant).send();
    // A body that does not hash to the name is refused and not stored.
    let wrong = put(
        Some(grant(&meta_key, Op::Put, &sha1, later)),
        b"wrong".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    assert_eq!(get().await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(c.health(0).await.shards, 0);
    // A valid grant stores; reads need their own grant.
    let ok = put(Some(grant(&meta_key, Op::Put, &sha1, later)), data.clone())
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::CREATED);
    let r = get().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().to_vec(), data);
    let no_grant = http.get(&url).send().await.unwrap();
    assert_eq!(no_grant.status(), StatusCode::FORBIDDEN);
    let forged_get = http
        .get(&url)
        .header(GRANT_HEADER, grant(&forger, Op::Get, &sha1, later))
        .send()
        .await
        .unwrap();
    assert_eq!(forged_get.status(), StatusCode::FORBIDDEN);
    let head = http
        .head(&url)
        .header(GRANT_HEADER, &get_grant)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    // Delete needs a delete grant.
    let del = http
        .delete(&url)
        .header(GRANT_HEADER, &get_grant)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), StatusCode::FORBIDDEN);
    let del = http
        .delete(&url)
        .header(GRANT_HEADER, grant(&meta_key, Op::Delete, &sha1, later))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), StatusCode::OK);
    assert_eq!(get().await.unwrap().status(), StatusCode::NOT_FOUND);
    // A shard named by BLAKE3 (as clients name them now) is checked by it.
    let id = tfsfs::codec::shard_id(&data);
    let put_as = |body: Vec<u8>| {
        http.put(format!("{base}/shards/{id}"))
            .header(GRANT_HEADER, grant(&meta_key, Op::Put, &id, later))
            .body(body)
            .send()
    };
    let wrong = put_as(b"wrong".to_vec()).await.unwrap();
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    let ok = put_as(data.clone()).await.unwrap();
    assert_eq!(ok.status(), StatusCode::CREATED);
    // A name that is not a SHA-1 is a bad request.
    let bad = http
        .put(format!("{base}/shards/..%2Fetc"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        http.get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}
