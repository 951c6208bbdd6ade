//! A local cluster: one metadata server and N providers on loopback, in
//! this process. For trying tfsfs out, for tests, and for `mount` with no
//! `--meta`.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::meta::{self, MetaConfig, RunningMeta};
use crate::provider::{self, ProviderConfig, RunningProvider};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterProvider {
    pub id: String,
    pub url: String,
}

/// What `DIR/cluster.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub meta_url: String,
    pub appkey: String,
    pub appid: u64,
    pub uid: u64,
    pub providers: Vec<ClusterProvider>,
}

pub struct Cluster {
    pub info: ClusterInfo,
    pub meta: RunningMeta,
    pub providers: Vec<RunningProvider>,
}

impl Cluster {
    /// Starts everything under `data` (mode 0700); the app made on first
    /// start is kept in `cluster.json` (0600: the appkey is the embedded
    /// client's credential) and reused after.
    pub async fn start(
        data: &Path,
        providers: usize,
        listen: &str,
        meta_cfg: Option<MetaConfig>,
    ) -> anyhow::Result<Self> {
        crate::private::dir(data)?;
        let cfg = meta_cfg.unwrap_or_else(|| MetaConfig::new(data.join("meta")));
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let meta = meta::start(listener, cfg).await?;
        let info_path = data.join("cluster.json");
        let previous: Option<ClusterInfo> = std::fs::read(&info_path)
            .ok()
            .and_then(|raw| serde_json::from_slice(&raw).ok());
        let (appkey, appid) = match previous {
            Some(p) if meta.meta.db().appid_of(&p.appkey)? == Some(p.appid) => (p.appkey, p.appid),
            _ => meta::create_app(meta.meta.db(), None)?,
        };
        let mut running = Vec::new();
        for i in 0..providers {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let cfg = ProviderConfig {
                data: data.join(format!("provider-{i}")),
                meta: meta.url.clone(),
                capacity: None,
                heartbeat: Duration::from_secs(2),
                max_shard: 256 << 20,
                // The cluster's own providers join with a token it makes
                // (spent on their first start; later starts need none).
                join: Some(meta::join_token(
                    meta.meta.db(),
                    false,
                    Duration::from_secs(600),
                )?),
                scrub_rate: 8 << 20,
                scrub_interval: Duration::from_secs(86_400),
            };
            running.push(provider::start(listener, cfg).await?);
        }
        let urls: Vec<String> = running.iter().map(|p| p.url.clone()).collect();
        wait_for_providers(&meta.url, &urls).await?;
        let info = ClusterInfo {
            meta_url: meta.url.clone(),
            appkey,
            appid,
            uid: 1,
            providers: running
                .iter()
                .map(|p| ClusterProvider {
                    id: p.id.clone(),
                    url: p.url.clone(),
                })
                .collect(),
        };
        crate::private::write_atomic(&info_path, &serde_json::to_vec_pretty(&info)?)?;
        Ok(Cluster {
            info,
            meta,
            providers: running,
        })
    }
}

/// Waits until the metadata server lists every one of `urls` as alive (a
/// restarted provider's new address included).
pub async fn wait_for_providers(meta_url: &str, urls: &[String]) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(r) = http.get(format!("{meta_url}/api/providers")).send().await {
            if let Ok(list) = r.json::<Vec<crate::proto::ProviderStatus>>().await {
                if urls
                    .iter()
                    .all(|u| list.iter().any(|p| p.alive && &p.url == u))
                {
                    return Ok(());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("providers did not register with {meta_url}")
}
