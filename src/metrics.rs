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

use ::metrics::Label;
use axum::http::header;
use axum::response::IntoResponse;
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
pub const UPLOADS: &str = "tfsfs_uploads_total";
pub const UPLOAD_BYTES: &str = "tfsfs_upload_bytes_total";
pub const UPLOAD_SECONDS: &str = "tfsfs_upload_duration_seconds";
pub const PARTITION_READS: &str = "tfsfs_partition_reads_total";
pub const PARTITION_READ_BYTES: &str = "tfsfs_partition_read_bytes_total";
pub const PARTITION_READ_SECONDS: &str = "tfsfs_partition_read_duration_seconds";
pub const CACHE_HITS: &str = "tfsfs_cache_hits_total";
pub const CACHE_MISSES: &str = "tfsfs_cache_misses_total";
pub const CACHE_EVICTIONS: &str = "tfsfs_cache_evictions_total";
pub const CACHE_BYTES: &str = "tfsfs_cache_bytes";
pub const CACHE_CAPACITY: &str = "tfsfs_cache_capacity_bytes";
pub const STAGING_BYTES: &str = "tfsfs_staging_bytes";
pub const MOUNT_INODES: &str = "tfsfs_mount_inodes";
pub const PROVIDER_SHARDS: &str = "tfsfs_provider_shards";
pub const PROVIDER_STORED: &str = "tfsfs_provider_stored_bytes";
pub const PROVIDER_CAPACITY: &str = "tfsfs_provider_capacity_bytes";
pub const PROVIDER_RECEIVED: &str = "tfsfs_provider_shard_bytes_received_total";
pub const PROVIDER_SENT: &str = "tfsfs_provider_shard_bytes_sent_total";
pub const SCRUB_PASSES: &str = "tfsfs_scrub_passes_total";
pub const SCRUB_BAD: &str = "tfsfs_scrub_bad_shards_total";
pub const SCRUB_CHECKED: &str = "tfsfs_scrub_checked_shards";
pub const SCRUB_RUNNING: &str = "tfsfs_scrub_running";
pub const SCRUB_LAST_PASS_TIME: &str = "tfsfs_scrub_last_pass_timestamp_seconds";
pub const SCRUB_LAST_PASS_BYTES: &str = "tfsfs_scrub_last_pass_bytes";
pub const SCRUB_LAST_PASS_SECONDS: &str = "tfsfs_scrub_last_pass_duration_seconds";
pub const META_PROVIDER_UP: &str = "tfsfs_meta_provider_up";
pub const META_PROVIDER_ACTIVE: &str = "tfsfs_meta_provider_active";
pub const META_PROVIDER_CAPACITY: &str = "tfsfs_meta_provider_capacity_bytes";
pub const META_PROVIDER_USED: &str = "tfsfs_meta_provider_used_bytes";
pub const META_PROVIDER_PLACED: &str = "tfsfs_meta_provider_placed_shards";
pub const PARTITIONS: &str = "tfsfs_partitions";
pub const REPAIR_QUEUE: &str = "tfsfs_repair_queue_partitions";
pub const REPAIR_BACKOFF: &str = "tfsfs_repair_backoff_partitions";
pub const REPAIR_SHARDS: &str = "tfsfs_repair_shards_total";
pub const REPAIR_BYTES: &str = "tfsfs_repair_bytes_total";
pub const REPAIR_FAILURES: &str = "tfsfs_repair_failures_total";
pub const DB_TX_SECONDS: &str = "tfsfs_db_tx_seconds";
pub const DB_TX_RETRIES: &str = "tfsfs_db_tx_retries_total";

enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every series with its kind and `# HELP` text.
const SERIES: &[(&str, Kind, &str)] = &[
    (
        HTTP_REQUESTS,
        Kind::Counter,
        "HTTP requests answered, by server, method, route template and status.",
    ),
    (
        HTTP_SECONDS,
        Kind::Histogram,
        "Time from a request's arrival until its answer's body is sent.",
    ),
    (
        HTTP_BYTES_IN,
        Kind::Counter,
        "Request body bytes received, by server, method and route template.",
    ),
    (
        HTTP_BYTES_OUT,
        Kind::Counter,
        "Response body bytes sent, by server, method and route template.",
    ),
    (
        UPLOADS,
        Kind::Counter,
        "Uploads of a file or of a run of its partitions (encrypt, encode, store, commit), by result.",
    ),
    (
        UPLOAD_BYTES,
        Kind::Counter,
        "Plaintext bytes of files uploaded.",
    ),
    (
        UPLOAD_SECONDS,
        Kind::Histogram,
        "Time to upload a file, by result.",
    ),
    (
        PARTITION_READS,
        Kind::Counter,
        "Partitions read from providers (fetch, decode, decrypt), by result.",
    ),
    (
        PARTITION_READ_BYTES,
        Kind::Counter,
        "Plaintext bytes of partitions read.",
    ),
    (
        PARTITION_READ_SECONDS,
        Kind::Histogram,
        "Time to read a partition, by result.",
    ),
    (
        CACHE_HITS,
        Kind::Counter,
        "Partition reads served by the block cache or by a fetch already under way.",
    ),
    (
        CACHE_MISSES,
        Kind::Counter,
        "Partition reads that started a fetch.",
    ),
    (
        CACHE_EVICTIONS,
        Kind::Counter,
        "Partitions dropped from the block cache to stay within its size.",
    ),
    (
        CACHE_BYTES,
        Kind::Gauge,
        "Decoded bytes the block cache holds.",
    ),
    (CACHE_CAPACITY, Kind::Gauge, "The block cache's size limit."),
    (
        STAGING_BYTES,
        Kind::Gauge,
        "Disk space taken by staged files (written, not yet uploaded).",
    ),
    (
        MOUNT_INODES,
        Kind::Gauge,
        "Inode records a mount keeps (known to the kernel, open or staged).",
    ),
    (
        PROVIDER_SHARDS,
        Kind::Gauge,
        "Shard files a provider holds.",
    ),
    (
        PROVIDER_STORED,
        Kind::Gauge,
        "Bytes of shard files a provider holds.",
    ),
    (
        PROVIDER_CAPACITY,
        Kind::Gauge,
        "Capacity a provider announces.",
    ),
    (
        PROVIDER_RECEIVED,
        Kind::Counter,
        "Shard bytes a provider stored from PUTs.",
    ),
    (
        PROVIDER_SENT,
        Kind::Counter,
        "Shard bytes a provider served to GETs.",
    ),
    (SCRUB_PASSES, Kind::Counter, "Scrub passes finished."),
    (
        SCRUB_BAD,
        Kind::Counter,
        "Shards scrub found failing their hash (quarantined and reported).",
    ),
    (
        SCRUB_CHECKED,
        Kind::Gauge,
        "Shards hashed in the scrub pass under way (or the last).",
    ),
    (SCRUB_RUNNING, Kind::Gauge, "1 while a scrub pass runs."),
    (
        SCRUB_LAST_PASS_TIME,
        Kind::Gauge,
        "When the last scrub pass ended (Unix seconds; 0: none yet).",
    ),
    (
        SCRUB_LAST_PASS_BYTES,
        Kind::Gauge,
        "Bytes hashed by the last scrub pass.",
    ),
    (
        SCRUB_LAST_PASS_SECONDS,
        Kind::Gauge,
        "How long the last scrub pass took.",
    ),
    (
        META_PROVIDER_UP,
        Kind::Gauge,
        "1 if the provider beat within the provider timeout.",
    ),
    (
        META_PROVIDER_ACTIVE,
        Kind::Gauge,
        "1 if the provider is active (not draining or retired).",
    ),
    (
        META_PROVIDER_CAPACITY,
        Kind::Gauge,
        "Capacity the provider last announced.",
    ),
    (
        META_PROVIDER_USED,
        Kind::Gauge,
        "Bytes the provider last said it holds.",
    ),
    (
        META_PROVIDER_PLACED,
        Kind::Gauge,
        "Shard copies the metadata places on the provider.",
    ),
    (
        PARTITIONS,
        Kind::Gauge,
        "Partitions by health: full, degraded, one_from_loss, lost.",
    ),
    (
        REPAIR_QUEUE,
        Kind::Gauge,
        "Partitions with a lost copy, waiting for repair.",
    ),
    (
        REPAIR_BACKOFF,
        Kind::Gauge,
        "Queued partitions waiting out a backoff after a failed repair.",
    ),
    (
        REPAIR_SHARDS,
        Kind::Counter,
        "Shards (or replica copies) repair stored.",
    ),
    (REPAIR_BYTES, Kind::Counter, "Shard bytes repair stored."),
    (
        REPAIR_FAILURES,
        Kind::Counter,
        "Partition repairs that failed (retried later).",
    ),
    (
        DB_TX_SECONDS,
        Kind::Histogram,
        "Metadata store transaction latency.",
    ),
    (
        DB_TX_RETRIES,
        Kind::Counter,
        "Metadata store transactions retried after a serialization failure.",
    ),
];

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
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_string()), SECONDS_BUCKETS)
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
        for &(name, ref kind, help) in SERIES {
            match kind {
                Kind::Counter => ::metrics::describe_counter!(name, help),
                Kind::Gauge => ::metrics::describe_gauge!(name, help),
                Kind::Histogram => ::metrics::describe_histogram!(name, help),
            }
        }
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
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
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
    count: UPLOADS,
    bytes: UPLOAD_BYTES,
    seconds: UPLOAD_SECONDS,
};

pub static PARTITION_READ: TransferKind = TransferKind {
    count: PARTITION_READS,
    bytes: PARTITION_READ_BYTES,
    seconds: PARTITION_READ_SECONDS,
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
        ::metrics::histogram!(self.kind.seconds, "result" => result).record(self.started.elapsed());
    }
}
