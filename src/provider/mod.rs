//! The provider: a content-addressed shard store on a local directory.
//! `PUT/GET/HEAD/DELETE /shards/{sha1}`, each only with a grant signed by the
//! metadata server for this provider. A PUT is hashed while it streams to a
//! temporary file, checked, fsynced and renamed, so no torn shard ever sits
//! under a real name, and answered with a receipt signed by the provider's
//! own key: the metadata server records only what receipts prove.
//!
//! A provider joins a cluster only with the operator's consent: its first
//! start presents a join token with its public key; every heartbeat after
//! that is signed with the key.

mod scrub;
mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ed25519_dalek::{SigningKey, VerifyingKey};
use futures::TryStreamExt;

use crate::grant::{self, Beat, Grant, GrantError, Op, Receipt, GRANT_HEADER};
use crate::proto::{EnrollRequest, ProviderHealth, ShardStored};
pub use store::{ShardStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("forbidden: {0}")]
    Forbidden(#[from] GrantError),
    #[error("no such shard")]
    NotFound,
    #[error("shard larger than {0} bytes")]
    TooLarge(u64),
    #[error("no space left for this shard")]
    Full,
    #[error("shard {0} was stored again after its deletion was decided; kept")]
    StoredSince(String),
    #[error("storage error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<StoreError> for ProviderError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::HashMismatch { .. } => ProviderError::BadRequest(e.to_string()),
            StoreError::TooLarge(n) => ProviderError::TooLarge(n),
            StoreError::NotFound => ProviderError::NotFound,
            StoreError::Body(m) => ProviderError::BadRequest(m),
            StoreError::Full => ProviderError::Full,
            StoreError::StoredSince(s) => ProviderError::StoredSince(s),
            StoreError::Io(e) => ProviderError::Io(e),
        }
    }
}

impl IntoResponse for ProviderError {
    fn into_response(self) -> Response {
        let status = match &self {
            ProviderError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProviderError::Forbidden(_) => StatusCode::FORBIDDEN,
            ProviderError::NotFound => StatusCode::NOT_FOUND,
            ProviderError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProviderError::Full => StatusCode::INSUFFICIENT_STORAGE,
            ProviderError::StoredSince(_) => StatusCode::CONFLICT,
            ProviderError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(error = %self, "provider request failed");
        }
        (status, self.to_string()).into_response()
    }
}

#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub data: PathBuf,
    /// Metadata server to register with and take the grant key from.
    pub meta: String,
    /// Capacity to announce; the disk's size when absent.
    pub capacity: Option<u64>,
    pub heartbeat: Duration,
    /// Largest shard accepted.
    pub max_shard: u64,
    /// Join token from `tfsfs admin provider token`, needed on the first
    /// start only (later starts are known by their key).
    pub join: Option<String>,
    /// Scrub read rate in bytes per second (0: unbounded).
    pub scrub_rate: u64,
    /// Pause between scrub passes.
    pub scrub_interval: Duration,
}

struct Provider {
    store: ShardStore,
    /// The metadata server's grant key.
    meta_key: VerifyingKey,
    /// This provider's own key: signs receipts and heartbeats.
    key: SigningKey,
    id: String,
    capacity: u64,
    received: AtomicU64,
    sent: AtomicU64,
    last_beat: AtomicU64,
    scrub: scrub::ScrubState,
}

/// A provider serving on a bound listener.
pub struct RunningProvider {
    pub id: String,
    pub url: String,
    pub task: tokio::task::JoinHandle<()>,
}

/// Binds nothing itself: serves on `listener`, enrolls with the metadata
/// server (retrying until it answers), then heartbeats forever.
pub async fn start(
    listener: tokio::net::TcpListener,
    cfg: ProviderConfig,
) -> anyhow::Result<RunningProvider> {
    let addr: SocketAddr = listener.local_addr()?;
    let url = format!("http://{addr}");
    crate::metrics::install();
    let store = ShardStore::open(&cfg.data, cfg.max_shard)?;
    let id = store.provider_id()?;
    let key = SigningKey::from_bytes(&crate::private::secret(&cfg.data.join("provider.key"))?);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let meta_key = fetch_meta_key(&http, &cfg.meta).await?;
    let capacity = cfg.capacity.unwrap_or_else(|| store.disk_capacity());
    let provider = Arc::new(Provider {
        store,
        meta_key,
        key,
        id: id.clone(),
        capacity,
        received: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        last_beat: AtomicU64::new(0),
        scrub: scrub::ScrubState::default(),
    });
    let app = Router::new()
        .route(
            "/shards/{sha1}",
            get(get_shard)
                .head(head_shard)
                .put(put_shard)
                .delete(delete_shard),
        )
        .route("/health", get(health))
        .route("/metrics", get(crate::metrics::scrape))
        .layer(DefaultBodyLimit::disable())
        .with_state(provider.clone());
    crate::metrics::on_scrape(&provider, record);
    enroll(&http, &cfg.meta, &provider, &url, cfg.join.as_deref()).await?;
    let labels = crate::metrics::provider_service(&provider.id);
    let task = tokio::spawn(async move {
        let scrubber = scrub::run(
            http.clone(),
            cfg.meta.clone(),
            provider.clone(),
            cfg.scrub_rate,
            cfg.scrub_interval,
        );
        let heartbeats = heartbeat_loop(http, cfg.meta, url.clone(), provider, cfg.heartbeat);
        let serve = crate::http::serve(listener, app, labels);
        tokio::select! {
            r = serve => if let Err(e) = r { tracing::error!(error = %e, "provider server stopped") },
            _ = heartbeats => {}
            _ = scrubber => {}
        }
    });
    Ok(RunningProvider {
        id,
        url: format!("http://{addr}"),
        task,
    })
}

impl Provider {
    fn beat(&self, url: &str) -> String {
        // Strictly increasing, even within one millisecond: the server takes
        // a beat that is not newer than the last for a replay.
        let ts_ms = grant::now_ms().max(self.last_beat.load(Ordering::Relaxed) + 1);
        self.last_beat.store(ts_ms, Ordering::Relaxed);
        grant::sign(
            &Beat {
                id: self.id.clone(),
                url: url.to_string(),
                capacity: self.capacity,
                used: self.store.used(),
                ts_ms,
            },
            &self.key,
        )
    }
}

/// Presents this provider's key (and the join token, if any) to the
/// metadata server; an unknown provider without a valid token is refused.
async fn enroll(
    http: &reqwest::Client,
    meta: &str,
    p: &Provider,
    url: &str,
    token: Option<&str>,
) -> anyhow::Result<()> {
    let req = EnrollRequest {
        beat: p.beat(url),
        pubkey: hex::encode(p.key.verifying_key().to_bytes()),
        token: token.map(str::to_string),
    };
    let r = http
        .post(format!("{meta}/api/providers/enroll"))
        .json(&req)
        .send()
        .await?;
    if r.status().is_success() {
        return Ok(());
    }
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    anyhow::bail!(
        "the metadata server refused provider {} ({status}: {body}); a new provider joins with \
         --join TOKEN from `tfsfs admin --data DIR provider token`",
        p.id
    )
}

async fn fetch_meta_key(http: &reqwest::Client, meta: &str) -> anyhow::Result<VerifyingKey> {
    let url = format!("{meta}/api/pubkey");
    let mut last = String::new();
    for _ in 0..100 {
        match http.get(&url).send().await {
            Ok(r) if r.status().is_success() => {
                let text = r.text().await?;
                return grant::verifying_key_from_hex(&text)
                    .ok_or_else(|| anyhow::anyhow!("metadata server sent a malformed key"));
            }
            Ok(r) => last = format!("status {}", r.status()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("cannot reach metadata server at {meta}: {last}")
}

async fn heartbeat_loop(
    http: reqwest::Client,
    meta: String,
    url: String,
    p: Arc<Provider>,
    every: Duration,
) {
    let to = format!("{meta}/api/providers/heartbeat");
    loop {
        if let Err(e) = http
            .post(&to)
            .body(p.beat(&url))
            .send()
            .await
            .and_then(|r| r.error_for_status())
        {
            tracing::warn!(error = %e, "heartbeat failed");
        }
        tokio::time::sleep(every).await;
    }
}

fn grant_of(headers: &HeaderMap) -> Option<&str> {
    headers.get(GRANT_HEADER).and_then(|v| v.to_str().ok())
}

fn check(p: &Provider, headers: &HeaderMap, op: Op, sha1: &str) -> Result<Grant, ProviderError> {
    if !crate::codec::is_shard_id(sha1) {
        return Err(ProviderError::BadRequest(format!(
            "{sha1:?} is not a SHA-1"
        )));
    }
    Ok(Grant::verify(
        grant_of(headers),
        &p.meta_key,
        &p.id,
        op,
        sha1,
    )?)
}

async fn put_shard(
    State(p): State<Arc<Provider>>,
    Path(sha1): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<ShardStored>), ProviderError> {
    let grant = check(&p, &headers, Op::Put, &sha1)?;
    let session = grant
        .session
        .ok_or_else(|| ProviderError::BadRequest("a PUT grant names its upload session".into()))?;
    let announced = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .unwrap_or(0);
    if p.store.used().saturating_add(announced) > p.capacity {
        return Err(ProviderError::Full);
    }
    let stream = body
        .into_data_stream()
        .map_err(|e| std::io::Error::other(e.to_string()));
    let written = p.store.put(&sha1, stream).await?;
    p.received.fetch_add(written, Ordering::Relaxed);
    let receipt = Receipt {
        shard: sha1,
        size: written,
        provider: p.id.clone(),
        session,
    };
    Ok((
        StatusCode::CREATED,
        Json(ShardStored {
            receipt: grant::sign(&receipt, &p.key),
        }),
    ))
}

async fn get_shard(
    State(p): State<Arc<Provider>>,
    Path(sha1): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ProviderError> {
    check(&p, &headers, Op::Get, &sha1)?;
    let data = p.store.read_shard(&sha1).await?;
    p.sent.fetch_add(data.len() as u64, Ordering::Relaxed);
    Ok(Body::from(data).into_response())
}

async fn head_shard(
    State(p): State<Arc<Provider>>,
    Path(sha1): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ProviderError> {
    check(&p, &headers, Op::Get, &sha1)?;
    let len = p.store.len(&sha1).await?;
    Ok((
        [(axum::http::header::CONTENT_LENGTH, len.to_string())],
        Body::empty(),
    )
        .into_response())
}

async fn delete_shard(
    State(p): State<Arc<Provider>>,
    Path(sha1): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ProviderError> {
    let grant = check(&p, &headers, Op::Delete, &sha1)?;
    p.store.delete(&sha1, grant.stored_before_ms).await?;
    Ok(StatusCode::OK)
}

impl Provider {
    fn health(&self) -> ProviderHealth {
        ProviderHealth {
            id: self.id.clone(),
            shards: self.store.count(),
            bytes_used: self.store.used(),
            bytes_received: self.received.load(Ordering::Relaxed),
            bytes_sent: self.sent.load(Ordering::Relaxed),
            capacity: self.capacity,
            scrub: self.scrub.health(),
        }
    }
}

async fn health(State(p): State<Arc<Provider>>) -> Json<ProviderHealth> {
    Json(p.health())
}

/// `/health`'s figures as metrics, at each scrape.
fn record(p: &Provider) {
    let h = p.health();
    let labels = crate::metrics::provider_service(&h.id);
    metrics::gauge!(crate::metrics::PROVIDER_SHARDS, labels.clone()).set(h.shards as f64);
    metrics::gauge!(crate::metrics::PROVIDER_STORED, labels.clone()).set(h.bytes_used as f64);
    metrics::gauge!(crate::metrics::PROVIDER_CAPACITY, labels.clone()).set(h.capacity as f64);
    metrics::counter!(crate::metrics::PROVIDER_RECEIVED, labels.clone()).absolute(h.bytes_received);
    metrics::counter!(crate::metrics::PROVIDER_SENT, labels.clone()).absolute(h.bytes_sent);
    scrub::record(&h.scrub, labels);
}
