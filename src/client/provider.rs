//! HTTP client for providers' shard routes.

use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;

use crate::grant::GRANT_HEADER;
use crate::proto::ProviderInfo;

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("provider {provider} answered {status}: {body}")]
    Status {
        provider: String,
        status: StatusCode,
        body: String,
    },
    #[error("provider {provider} unreachable: {source}")]
    Transport {
        provider: String,
        source: reqwest::Error,
    },
    #[error("shard {sha1} from provider {provider} is corrupt")]
    Corrupt { provider: String, sha1: String },
}

/// Talks to providers. Cheap to clone; shares one connection pool.
#[derive(Clone)]
pub struct ShardClient {
    http: reqwest::Client,
}

impl ShardClient {
    /// `timeout` bounds each request, so a stalled provider counts as failed.
    pub fn new(timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(3))
            .pool_max_idle_per_host(16)
            .build()
            .expect("HTTP client builds");
        ShardClient { http }
    }

    fn url(p: &ProviderInfo, sha1: &str) -> String {
        format!("{}/shards/{sha1}", p.url)
    }

    fn transport(p: &ProviderInfo) -> impl FnOnce(reqwest::Error) -> ShardError + '_ {
        move |source| ShardError::Transport {
            provider: p.id.clone(),
            source,
        }
    }

    async fn status(
        p: &ProviderInfo,
        r: reqwest::Response,
    ) -> Result<reqwest::Response, ShardError> {
        if r.status().is_success() {
            return Ok(r);
        }
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        Err(ShardError::Status {
            provider: p.id.clone(),
            status,
            body,
        })
    }

    /// Stores a shard; returns the provider's signed receipt.
    pub async fn put(
        &self,
        p: &ProviderInfo,
        sha1: &str,
        grant: &str,
        data: Bytes,
    ) -> Result<String, ShardError> {
        let r = self
            .http
            .put(Self::url(p, sha1))
            .header(GRANT_HEADER, grant)
            .body(data)
            .send()
            .await
            .map_err(Self::transport(p))?;
        let stored: crate::proto::ShardStored = Self::status(p, r)
            .await?
            .json()
            .await
            .map_err(Self::transport(p))?;
        Ok(stored.receipt)
    }

    /// Fetches a shard. With `verify`, its SHA-1 is checked and a corrupt
    /// shard is an error, never data; without, the caller authenticates the
    /// bytes otherwise (an encrypted partition's GCM tag).
    pub async fn get(
        &self,
        p: &ProviderInfo,
        sha1: &str,
        grant: &str,
        verify: bool,
    ) -> Result<Bytes, ShardError> {
        let r = self
            .http
            .get(Self::url(p, sha1))
            .header(GRANT_HEADER, grant)
            .send()
            .await
            .map_err(Self::transport(p))?;
        let data = Self::status(p, r)
            .await?
            .bytes()
            .await
            .map_err(Self::transport(p))?;
        if verify && crate::codec::sha1_hex(&data) != sha1 {
            return Err(ShardError::Corrupt {
                provider: p.id.clone(),
                sha1: sha1.to_string(),
            });
        }
        Ok(data)
    }

    pub async fn delete(
        &self,
        p: &ProviderInfo,
        sha1: &str,
        grant: &str,
    ) -> Result<(), ShardError> {
        let r = self
            .http
            .delete(Self::url(p, sha1))
            .header(GRANT_HEADER, grant)
            .send()
            .await
            .map_err(Self::transport(p))?;
        Self::status(p, r).await.map(drop)
    }
}
