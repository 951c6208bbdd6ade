//! Test harness: real `tfsfs` processes on loopback ports, each killed when
//! its handle drops.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::Duration;

use tfsfs::proto::{FileLayout, ProviderHealth, ProviderStatus};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tfsfs")
}

/// A server process; killed (SIGKILL) on drop.
pub struct Proc {
    pub child: Child,
    pub url: String,
    _stdout: BufReader<ChildStdout>,
}

impl Proc {
    /// Starts `tfsfs ARGS` and waits for its `LISTENING url` line.
    pub fn spawn(args: &[&str]) -> Proc {
        let mut child = Command::new(bin())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tfsfs");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).expect("read LISTENING line");
        let url = line
            .trim()
            .strip_prefix("LISTENING ")
            .unwrap_or_else(|| panic!("tfsfs {args:?} printed {line:?}"))
            .to_string();
        Proc {
            child,
            url,
            _stdout: out,
        }
    }

    /// kill -9.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A metadata server and N providers, each its own process.
pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub meta: Proc,
    pub providers: Vec<Proc>,
    pub appkey: String,
    pub appid: u64,
    pub uid: u64,
}

impl TestCluster {
    pub async fn start(n: usize) -> TestCluster {
        Self::start_with(n, &[]).await
    }

    /// `meta_args` go to `tfsfs meta` (e.g. `--partition-size`).
    pub async fn start_with(n: usize, meta_args: &[&str]) -> TestCluster {
        let dir = tempfile::tempdir().unwrap();
        let meta_dir = dir.path().join("meta");
        let out = Command::new(bin())
            .args([
                "admin",
                "--data",
                meta_dir.to_str().unwrap(),
                "app",
                "create",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "admin app create: {out:?}");
        let app: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut args = vec![
            "meta",
            "--listen",
            "127.0.0.1:0",
            "--data",
            meta_dir.to_str().unwrap(),
        ];
        args.extend_from_slice(meta_args);
        let meta = Proc::spawn(&args);
        let mut c = TestCluster {
            meta,
            providers: Vec::new(),
            appkey: app["appkey"].as_str().unwrap().to_string(),
            appid: app["appid"].as_u64().unwrap(),
            uid: 1,
            dir,
        };
        for _ in 0..n {
            c.add_provider();
        }
        c.wait_alive(n).await;
        c
    }

    pub fn provider_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("provider-{i}"))
    }

    pub fn add_provider(&mut self) {
        let d = self.provider_dir(self.providers.len());
        let p = Proc::spawn(&[
            "provider",
            "--listen",
            "127.0.0.1:0",
            "--data",
            d.to_str().unwrap(),
            "--meta",
            &self.meta.url,
            "--heartbeat-secs",
            "1",
        ]);
        self.providers.push(p);
    }

    pub async fn wait_alive(&self, n: usize) {
        for _ in 0..200 {
            if self
                .provider_list()
                .await
                .iter()
                .filter(|p| p.alive)
                .count()
                >= n
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{n} providers never came alive");
    }

    pub async fn provider_list(&self) -> Vec<ProviderStatus> {
        match reqwest::get(format!("{}/api/providers", self.meta.url)).await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    /// `tfsfs ARGS` as a client of this cluster's account.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_as(self.uid, args)
    }

    pub fn cli_as(&self, uid: u64, args: &[&str]) -> Output {
        Command::new(bin())
            .args(args)
            .env("TFSFS_META", &self.meta.url)
            .env("TFSFS_APPKEY", &self.appkey)
            .env("TFSFS_UID", uid.to_string())
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .output()
            .unwrap()
    }

    pub fn put(&self, local: &Path, remote: &str, encrypt: bool) -> Output {
        let mut args = vec!["put", local.to_str().unwrap(), remote];
        if !encrypt {
            args.push("--no-encrypt");
        }
        self.cli(&args)
    }

    pub fn get(&self, remote: &str, local: &Path, encrypt: bool) -> Output {
        let mut args = vec!["get", remote, local.to_str().unwrap()];
        if !encrypt {
            args.push("--no-encrypt");
        }
        self.cli(&args)
    }

    pub async fn health(&self, i: usize) -> ProviderHealth {
        reqwest::get(format!("{}/health", self.providers[i].url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Bytes received by all live providers.
    pub async fn bytes_received(&self) -> u64 {
        let mut total = 0;
        for i in 0..self.providers.len() {
            if let Ok(r) = reqwest::get(format!("{}/health", self.providers[i].url)).await {
                total += r
                    .json::<ProviderHealth>()
                    .await
                    .map(|h| h.bytes_received)
                    .unwrap_or(0);
            }
        }
        total
    }

    pub async fn layout(&self, path: &str) -> FileLayout {
        let r = reqwest::Client::new()
            .get(format!(
                "{}/api/ns/{}/{}/layout",
                self.meta.url, self.appid, self.uid
            ))
            .query(&[("path", path)])
            .header(tfsfs::proto::APPKEY_HEADER, &self.appkey)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "layout of {path}: {}", r.status());
        r.json().await.unwrap()
    }

    /// `{meta}/v2/{appkey}/{appid}/{uid}` — the base of this account's v2 routes.
    pub fn v2(&self) -> String {
        format!(
            "{}/v2/{}/{}/{}",
            self.meta.url, self.appkey, self.appid, self.uid
        )
    }

    /// `{meta}/v2/{appkey}/metadata/{appid}/{uid}`.
    pub fn v2_meta(&self) -> String {
        format!(
            "{}/v2/{}/metadata/{}/{}",
            self.meta.url, self.appkey, self.appid, self.uid
        )
    }
}

/// Deterministic pseudo-random bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

pub fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}
