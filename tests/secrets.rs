//! Secrets at rest (issue 8, finding 8), against real `tfsfs` processes: the
//! metadata server's data dir and the embedded cluster's are owner-only, no
//! appkey is stored in clear, and mailed codes are hashed with a key kept
//! outside the database.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// `dir` and everything below it.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if out[i].is_dir() {
            let below: Vec<PathBuf> = std::fs::read_dir(&out[i])
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            out.extend(below);
        }
        i += 1;
    }
    out
}

/// Fails unless `dir` is 0700 and nothing below it is open to group or others.
fn assert_private(dir: &Path) {
    assert_eq!(mode(dir), 0o700, "{}", dir.display());
    for p in tree(dir) {
        assert_eq!(mode(&p) & 0o077, 0, "{} is {:o}", p.display(), mode(&p));
    }
}

/// Fails if any file below `dir` holds `secret`'s bytes.
fn assert_absent(dir: &Path, secret: &str, what: &str) {
    assert!(!secret.is_empty());
    for p in tree(dir).into_iter().filter(|p| p.is_file()) {
        let raw = std::fs::read(&p).unwrap();
        assert!(
            !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{what} is in clear in {}",
            p.display()
        );
    }
}

/// The 6-digit code of the one mail in `outbox`.
fn mailed_code(outbox: &Path) -> String {
    let mails: Vec<PathBuf> = std::fs::read_dir(outbox)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(mails.len(), 1, "{mails:?}");
    code_in(&std::fs::read_to_string(&mails[0]).unwrap())
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// After files are stored and an account registered: the meta data dir is
/// private, holds no appkey in clear, and the pending code's stored hash
/// needs the server's secret file (not in the database) to be checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_meta_store_keeps_no_secret_readable() {
    let c = TestCluster::start(3).await;
    let meta_dir = c.dir.path().join("meta");
    let http = reqwest::Client::new();
    let notes = format!("{}/file/notes.txt", c.v2());
    let r = http.post(&notes).send().await.unwrap();
    assert_eq!(r.status(), 201, "v2 create");
    let r = http.put(&notes).body("plain notes").send().await.unwrap();
    assert_eq!(r.status(), 200, "v2 write");
    let local = c.dir.path().join("big");
    std::fs::write(&local, random_bytes(3 << 20, 1)).unwrap();
    assert_ok(&c.put(&local, "/big", true), "tfsfs put");

    let email = "carol@example.com";
    let cli = |args: &[&str]| {
        Command::new(bin())
            .args(args)
            .args(["--meta", &c.meta.url])
            .env("XDG_CONFIG_HOME", c.dir.path().join("config"))
            .output()
            .unwrap()
    };
    assert_ok(&cli(&["register", email]), "tfsfs register");
    let code = mailed_code(&meta_dir.join("outbox"));
    let stored: String = rusqlite::Connection::open_with_flags(
        meta_dir.join("meta.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap()
    .query_row(
        "SELECT code_hash FROM registrations WHERE email=?1",
        [email],
        |r| r.get(0),
    )
    .unwrap();
    assert!(!stored.contains(&code), "the code is stored in clear");
    for unkeyed in [sha256_hex(&code), sha256_hex(&format!("{email}\n{code}"))] {
        assert_ne!(stored, unkeyed, "the code is hashed without a key");
    }
    let secret_file = meta_dir.join("secret.key");
    let secret = hex::decode(std::fs::read_to_string(&secret_file).unwrap().trim()).unwrap();
    assert_eq!(secret.len(), 32);
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&secret).unwrap();
    mac.update(format!("{email}\n{code}").as_bytes());
    assert_eq!(stored, hex::encode(mac.finalize().into_bytes()));

    let out = cli(&["verify", email, &code]);
    assert_ok(&out, "tfsfs verify");
    let account: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let account_key = account["appkey"].as_str().unwrap();
    // The account works: its appkey names its appid.
    let r = http
        .get(format!("{}/v2/{account_key}/appid", c.meta.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    assert_private(&meta_dir);
    assert_eq!(mode(&secret_file), 0o600);
    for wal in ["meta.sqlite-wal", "meta.sqlite-shm"] {
        assert_eq!(mode(&meta_dir.join(wal)), 0o600, "{wal}");
    }
    assert_absent(&meta_dir, &c.appkey, "the app's appkey");
    assert_absent(&meta_dir, account_key, "the account's appkey");
    // The client side: the master secret and the saved account.
    let config = c.dir.path().join("config/tfsfs");
    assert!(config.join("secret").is_file() && config.join("account.json").is_file());
    assert_private(&config);
}

/// `tfsfs cluster` makes its dir private (even one that existed, looser),
/// cluster.json 0600, and a restart keeps the app it made.
#[test]
fn the_embedded_cluster_dir_is_private_and_its_app_survives_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("cluster");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let info = |p: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p.join("cluster.json")).unwrap()).unwrap()
    };
    let args = [
        "cluster",
        "--data",
        data.to_str().unwrap(),
        "--providers",
        "1",
    ];
    let mut first = Proc::spawn(&args);
    let made = info(&data);
    first.kill();
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("cluster.json")), 0o600);
    assert_private(&data.join("meta"));
    let appkey = made["appkey"].as_str().unwrap();
    assert_absent(&data.join("meta"), appkey, "the cluster's appkey");

    let _again = Proc::spawn(&args);
    let kept = info(&data);
    assert_eq!(
        (&kept["appkey"], &kept["appid"]),
        (&made["appkey"], &made["appid"]),
        "a restart makes a new app"
    );
}
