//! Prometheus metrics. Code records through the `metrics` facade; one
//! Prometheus recorder per process (installed by the first server that
//! starts: metadata server, provider, or the mount's `--metrics` listener)
//! holds every series, and each `GET /metrics` renders it. In the embedded
//! cluster meta, providers and mount share the recorder, so per-server
//! series carry a `service` label (and `provider` for a provider's own).
//!
//! Figures that already live elsewhere (the store's shard count, the
//! metadata server's provider registry, staged bytes on disk) are read by
//! collectors registered with [`on_scrape`], run before each render.

use std::sync::{Arc, LazyLock, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use axum::http::header;
use axum::response::IntoResponse;
use ::metrics::Label;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Buckets of every `_seconds` histogram: 1 ms to 2 minutes.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// How often histogram samples are folded into their buckets between
/// scrapes, so an unscraped process does not pile them up.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

pub const HTTP_REQUESTS: &str = "tfsfs_http_requests_total";
pub const HTTP_SECONDS: &str = "tfsfs_http_request_duration_seconds";
pub const HTTP_BYTES_IN: &str = "tfsfs_http_request_bytes_total";
pub const HTTP_BYTES_OUT: &str = "tfsfs_http_response_bytes_total";

/// A server's labels on its series: `service="meta"` etc.
pub fn service(name: &'static str) -> Vec<Label> {
    vec![Label::new("service", name)]
}

/// A provider's labels: several providers may share the process.
pub fn provider_service(id: &str) -> Vec<Label> {
    vec![
        Label::new("service", "provider"),
        Label::new("provider", id.to_string()),
    ]
}

fn builder() -> Result<PrometheusBuilder, metrics_exporter_prometheus::BuildError> {
    PrometheusBuilder::new().set_buckets_for_metric(
        Matcher::Suffix("_seconds".to_string()),
        SECONDS_BUCKETS,
    )
}

/// The process's recorder, installed on first use.
fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let installed = builder().and_then(|b| b.install_recorder());
        let handle = match installed {
            Ok(h) => h,
            Err(e) => {
                // Another recorder owns the facade: /metrics still answers,
                // with what this (unused) recorder holds.
                tracing::warn!(error = %e, "metrics recorder not installed");
                PrometheusBuilder::new().build_recorder().handle()
            }
        };
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            })
            .map_err(|e| tracing::warn!(error = %e, "no metrics upkeep thread"))
            .ok();
        handle
    })
}

/// Installs the process's recorder (once); series recorded before it are
/// lost, so servers call this first thing.
pub fn install() {
    handle();
}

type Collector = Box<dyn Fn() -> bool + Send + Sync>;

static COLLECTORS: LazyLock<Mutex<Vec<Collector>>> = LazyLock::new(Mutex::default);

/// Runs `collect(owner)` before every render, for as long as `owner` lives.
pub fn on_scrape<T: ?Sized + Send + Sync + 'static>(owner: &Arc<T>, collect: fn(&T)) {
    let owner: Weak<T> = Arc::downgrade(owner);
    COLLECTORS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Box::new(move || match owner.upgrade() {
            Some(o) => {
                collect(&o);
                true
            }
            None => false,
        }));
}

/// Every series of the process in Prometheus text format. Collectors may
/// query a database: call off the async workers.
pub fn render() -> String {
    COLLECTORS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|collect| collect());
    handle().render()
}

/// `GET /metrics`. Unauthenticated, like `/api/providers`: no label carries
/// account data (routes are templates; providers are known by their ids).
pub async fn scrape() -> axum::response::Response {
    match tokio::task::spawn_blocking(render).await {
        Ok(text) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "metrics render failed");
            axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// One upload or partition read: counted with its bytes and duration when
/// `done`; dropped unfinished (an error, a cancelled future) it counts as
/// failed.
pub struct Transfer {
    kind: &'static TransferKind,
    started: Instant,
    finished: bool,
}

/// The series of one kind of transfer.
pub struct TransferKind {
    count: &'static str,
    bytes: &'static str,
    seconds: &'static str,
}

pub static UPLOAD: TransferKind = TransferKind {
    count: "tfsfs_uploads_total",
    bytes: "tfsfs_upload_bytes_total",
    seconds: "tfsfs_upload_duration_seconds",
};

pub static PARTITION_READ: TransferKind = TransferKind {
    count: "tfsfs_partition_reads_total",
    bytes: "tfsfs_partition_read_bytes_total",
    seconds: "tfsfs_partition_read_duration_seconds",
};

impl Transfer {
    pub fn start(kind: &'static TransferKind) -> Self {
        Transfer {
            kind,
            started: Instant::now(),
            finished: false,
        }
    }

    /// The transfer succeeded with `bytes` (plaintext) moved.
    pub fn done(mut self, bytes: u64) {
        self.finished = true;
        ::metrics::counter!(self.kind.bytes).increment(bytes);
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        let result = if self.finished { "ok" } else { "error" };
        ::metrics::counter!(self.kind.count, "result" => result).increment(1);
        ::metrics::histogram!(self.kind.seconds, "result" => result)
            .record(self.started.elapsed().as_secs_f64());
    }
}
