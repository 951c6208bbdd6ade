//! The upload-session API refuses bad input with 4xx and keeps answering.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::json;
use tfsfs::proto::APPKEY_HEADER;

struct Api<'a> {
    c: &'a TestCluster,
    http: reqwest::Client,
}

impl Api<'_> {
    async fn post(&self, route: &str, appkey: &str, body: String) -> (StatusCode, String) {
        let r = self
            .http
            .post(format!(
                "{}/api/ns/{}/{}/{route}",
                self.c.meta.url, self.c.appid, self.c.uid
            ))
            .header(APPKEY_HEADER, appkey)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }
}

fn check_body(size: u64, sha1: &str) -> serde_json::Value {
    json!({"path": "/s/f", "file_size": size, "object_sha1": sha1, "object_size": size,
           "partition_size": 4 << 20, "key": null, "data": null})
}

#[tokio::test]
async fn session_api_refuses_garbage_and_foreign_or_expired_sessions() {
    let c = TestCluster::start_with(3, &["--session-ttl-secs", "1"]).await;
    let api = Api {
        c: &c,
        http: reqwest::Client::new(),
    };
    let key = c.appkey.as_str();
    let sha = "a".repeat(40);
    let bad = [
        ("check", "{not json".to_string()),
        ("check", "[]".to_string()),
        ("check", json!({"path": "/x"}).to_string()),
        ("check", check_body(100, "nothex").to_string()),
        ("check", check_body(100, &sha).to_string()), // small file without inline data
        ("check", json!({"path": "relative", "file_size": 1u64 << 40, "object_sha1": sha, "object_size": 1, "partition_size": 4 << 20}).to_string()),
        ("check", json!({"path": "/x", "file_size": u64::MAX, "object_sha1": sha, "object_size": u64::MAX, "partition_size": 4 << 20}).to_string()),
        ("check", json!({"path": "/x", "file_size": 10, "object_sha1": sha, "object_size": 10, "partition_size": 0}).to_string()),
        ("commit", json!({"node": 1, "size": 0, "fragments": [], "sha1": "nothex"}).to_string()),
        ("commit", json!({"path": "relative", "size": 0, "fragments": []}).to_string()),
        ("prepare", "{}".to_string()),
        ("done", "null".to_string()),
    ];
    for (route, body) in bad {
        let (status, text) = api.post(route, key, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{route} {body} → {text}");
        assert!(!text.is_empty(), "a 400 says what is wrong");
    }
    // Unknown appkey.
    let (status, _) = api
        .post("check", "nope", check_body(20_000_000, &sha).to_string())
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A session of another uid is not ours; an unknown one neither.
    let (status, text) = api
        .post("check", key, check_body(20_000_000, &sha).to_string())
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["scheme"], "erasure");
    let session = answer["session"].as_str().unwrap().to_string();
    let prepare = json!({"session": session, "partitions": []}).to_string();
    let other_uid = api
        .http
        .post(format!("{}/api/ns/{}/2/prepare", c.meta.url, c.appid))
        .header(APPKEY_HEADER, key)
        .header("content-type", "application/json")
        .body(prepare.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(other_uid.status(), StatusCode::NOT_FOUND);
    let (status, _) = api.post("prepare", key, prepare.clone()).await;
    assert_eq!(status, StatusCode::OK, "the owner may use it");
    // A wrong partition is refused.
    let wrong = json!({"session": session, "partitions": [{"index": 99, "size": 1, "shards": []}]});
    let (status, _) = api.post("prepare", key, wrong.to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Done before every partition is stored is refused.
    let (status, _) = api
        .post(
            "done",
            key,
            json!({"session": session, "partitions": []}).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // After its time the session is gone.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (status, text) = api.post("prepare", key, prepare).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "expired: {text}");
    // The server still answers.
    let r = reqwest::get(format!("{}/api/policy", c.meta.url))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
