//! The metadata server: TFS v2 REST, upload sessions, placement, grants and
//! the provider registry, over one SQL store.

mod accounts;
pub mod acl;
mod api;
mod api_fs;
mod api_store;
mod gc;
pub mod mail;
mod objects;
pub mod path;
mod placement;
pub mod repair;
mod rest_v1;
mod rest_v2;
pub mod store;
pub mod tfs_name;

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use ed25519_dalek::SigningKey;

use crate::client::provider::ShardClient;
use crate::codec::DEFAULT_PARTITION_SIZE;
use crate::grant::{now_secs, Grant, Op};
use crate::http::ServeConfig;
use crate::proto::MISSING_OBJECTS;
pub use accounts::{default_packages, package_json};
pub use rest_v2::MOVE_SOURCE_HEADER;
pub use store::{Db, DbError, Limits, Ns};

#[derive(Debug, Clone)]
pub struct MetaConfig {
    /// Local files (spool, outbox, `secret.key`), and the SQLite store
    /// unless `db` is given.
    pub data: PathBuf,
    /// A PostgreSQL URL: the store several metadata servers share.
    pub db: Option<String>,
    /// The key of mailed codes' HMAC (default `data/secret.key`); servers
    /// sharing a store share it, so a code mailed by one checks on another.
    pub secret_file: Option<PathBuf>,
    /// Let any app read any namespace (TFS's open behaviour).
    pub public_read: bool,
    pub partition_size: u64,
    /// Objects of at most this many stored bytes are replicated.
    pub replica_max: u64,
    pub replicas: usize,
    pub k: usize,
    pub m: usize,
    /// Spare providers offered per upload.
    pub spares: usize,
    /// A provider silent for this long is taken for dead.
    pub provider_timeout: Duration,
    pub limits: Limits,
    pub session_ttl: Duration,
    pub grant_ttl: Duration,
    /// Largest request body the REST routes accept.
    pub max_body: usize,
    /// Largest file: uploads and REST writes ending past it are refused.
    pub max_file_size: u64,
    /// Bytes every account may store before it buys more.
    pub free_capacity: u64,
    /// How often unused objects are collected, and how long unused first.
    pub gc_interval: Duration,
    pub gc_grace: Duration,
    /// How far a provider's clock may be behind this server's: a shard
    /// copy stored less than this before its deletion was decided is kept
    /// until a later round (it may belong to a newer upload).
    pub clock_skew: Duration,
    /// SMTP server for registration mail, `smtp://[user:pass@]host[:port]`;
    /// without one, mail is written to `DATA/outbox` and logged.
    pub smtp: Option<String>,
    /// Sender of registration mail.
    pub mail_from: String,
    /// How long a mailed code is accepted.
    pub code_ttl: Duration,
    /// Wrong codes accepted before the code is void.
    pub code_attempts: u32,
    /// Least time between two codes sent to one address.
    pub resend_interval: Duration,
    /// Codes sent to one address per day at most.
    pub codes_per_day: u32,
    /// Registration codes mailed per hour at most for one client address.
    pub registrations_per_ip: NonZeroU32,
    /// Header, idle and body timeouts of the server.
    pub serve: ServeConfig,
    /// A provider silent this long has its shard copies rebuilt elsewhere.
    pub repair_after: Duration,
    /// Repair bandwidth (shard bytes read and written) per second; 0: unbounded.
    pub repair_rate: u64,
    /// Partitions repaired at once.
    pub repair_parallel: usize,
    /// Pause between repair rounds (and first backoff after a failed repair).
    pub repair_interval: Duration,
    /// Placed shard copies the verifier HEADs per second.
    pub verify_rate: u64,
}

impl MetaConfig {
    pub fn new(data: PathBuf) -> Self {
        MetaConfig {
            data,
            db: None,
            secret_file: None,
            public_read: false,
            partition_size: DEFAULT_PARTITION_SIZE,
            replica_max: 1 << 20,
            replicas: 3,
            k: 4,
            m: 2,
            spares: 2,
            provider_timeout: Duration::from_secs(15),
            limits: Limits::default(),
            session_ttl: Duration::from_secs(3600),
            grant_ttl: Duration::from_secs(600),
            max_body: 256 << 20,
            max_file_size: 1 << 40,
            free_capacity: 100 << 30,
            gc_interval: Duration::from_secs(30),
            gc_grace: Duration::from_secs(600),
            clock_skew: Duration::from_secs(120),
            smtp: None,
            mail_from: "tfsfs <noreply@localhost>".into(),
            code_ttl: Duration::from_secs(900),
            code_attempts: 5,
            resend_interval: Duration::from_secs(60),
            codes_per_day: 20,
            registrations_per_ip: NonZeroU32::new(20).expect("not zero"),
            serve: ServeConfig::default(),
            repair_after: Duration::from_secs(1800),
            repair_rate: 50 << 20,
            repair_parallel: 4,
            repair_interval: Duration::from_secs(10),
            verify_rate: 50,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("{0}")]
    BadRequest(String),
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("quota exceeded: {0}")]
    Quota(String),
    #[error("{0}")]
    TooMany(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<DbError> for MetaError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::NotFound => MetaError::NotFound("no such file or directory".into()),
            DbError::NoAttr => MetaError::NotFound(e.to_string()),
            DbError::Exists => MetaError::Conflict("already exists".into()),
            DbError::NotEmpty => MetaError::Forbidden("directory not empty".into()),
            DbError::Forbidden(m) | DbError::NotPermitted(m) => MetaError::Forbidden(m),
            DbError::Invalid(m) => MetaError::BadRequest(m),
            DbError::Overlap => MetaError::Conflict("data already exists at that offset".into()),
            DbError::Missing(sha1s) => {
                MetaError::Conflict(format!("{MISSING_OBJECTS}{}", sha1s.join(" ")))
            }
            DbError::NotDir | DbError::IsDir => MetaError::Conflict(e.to_string()),
            DbError::NameTooLong => MetaError::BadRequest(e.to_string()),
            DbError::Sql(e) | DbError::Conflict(e) => MetaError::Internal(e),
        }
    }
}

impl From<path::PathError> for MetaError {
    fn from(e: path::PathError) -> Self {
        MetaError::BadRequest(e.to_string())
    }
}

impl MetaError {
    /// The status this error answers with; server faults are logged here,
    /// once, whichever rendering follows.
    fn status(&self) -> StatusCode {
        let status = match self {
            MetaError::BadRequest(_) => StatusCode::BAD_REQUEST,
            MetaError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            MetaError::Forbidden(_) => StatusCode::FORBIDDEN,
            MetaError::NotFound(_) => StatusCode::NOT_FOUND,
            MetaError::Conflict(_) => StatusCode::CONFLICT,
            MetaError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            MetaError::Quota(_) => StatusCode::PAYLOAD_TOO_LARGE,
            MetaError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            MetaError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        status
    }

    /// The answer of the TFS REST routes: nginx's error page, as nginx-tfs
    /// clients expect, with the explanation inside.
    pub(super) fn into_tfs_response(self) -> Response {
        nginx_error_page(self.status(), &self.to_string())
    }
}

/// nginx's error page for `status` (ngx_http_special_response.c: its
/// title texts, CRLF lines, text/html), with `explanation` (escaped) after
/// the heading and tfsfs in nginx's place at the foot.
pub(super) fn nginx_error_page(status: StatusCode, explanation: &str) -> Response {
    // nginx's wording where it differs from the standard reason phrase.
    let reason = match status.as_u16() {
        401 => "Authorization Required",
        413 => "Request Entity Too Large",
        503 => "Service Temporarily Unavailable",
        _ => status.canonical_reason().unwrap_or("Error"),
    };
    let title = format!("{} {reason}", status.as_u16());
    let body = format!(
        "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n\
         <center><h1>{title}</h1></center>\r\n<p>{}</p>\r\n\
         <hr><center>tfsfs</center>\r\n</body>\r\n</html>\r\n",
        html_escape::encode_text(explanation)
    );
    (status, [(header::CONTENT_TYPE, "text/html")], body).into_response()
}

/// The explanation inside a page of `nginx_error_page`, for tfsfs's own
/// clients to show.
pub fn error_page_explanation(page: &str) -> Option<String> {
    let (_, rest) = page.split_once("<p>")?;
    let (text, _) = rest.split_once("</p>")?;
    Some(html_escape::decode_html_entities(text).into_owned())
}

impl IntoResponse for MetaError {
    fn into_response(self) -> Response {
        (self.status(), self.to_string()).into_response()
    }
}

pub type MetaResult<T> = Result<T, MetaError>;

/// Reports of bad copies a namespace's readers may make: 5 a second, 50 at
/// once (a read that routes around a dead provider reports a few).
const READER_REPORTS: governor::Quota = governor::Quota::per_second(NonZeroU32::new(5).unwrap())
    .allow_burst(NonZeroU32::new(50).unwrap());

pub struct Meta {
    db: Db,
    key: SigningKey,
    /// Keys the HMAC of mailed codes; kept beside the database, not in it.
    secret: [u8; 32],
    cfg: MetaConfig,
    shards: ShardClient,
    /// For the verifier's HEADs.
    http: reqwest::Client,
    repair_stats: repair::RepairStats,
    mailer: mail::Mailer,
    /// This server's name in the background jobs' lease (its host and data
    /// dir: the same after a restart, so a restarted server resumes at once),
    /// and whether it holds the lease now.
    jobs_holder: String,
    runs_jobs: std::sync::atomic::AtomicBool,
    /// Registration mails sent per client address.
    registrations: governor::DefaultKeyedRateLimiter<IpAddr>,
    /// Readers' reports checked per namespace: each check fetches a shard,
    /// so a client must not make the server fetch without bound.
    reader_reports: governor::DefaultKeyedRateLimiter<(u64, u64)>,
    /// Appids by the SHA-256 of their appkey, as found so far: every
    /// request names its app, and apps are never removed or rekeyed.
    apps: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

/// Appkeys remembered at most; more are looked up each time.
const APPS_KNOWN: usize = 4096;

impl Meta {
    /// Opens the store under `cfg.data`, making the signing key and
    /// `secret.key` (0600) on first start.
    pub fn open(cfg: MetaConfig) -> anyhow::Result<Self> {
        // Local files live here whichever engine holds the store.
        crate::private::dir(&cfg.data)?;
        let db = Db::open_or_connect(cfg.db.as_deref(), &cfg.data)?.with_limits(cfg.limits);
        let secret_file = cfg.secret_file.clone();
        let secret =
            crate::private::secret(&secret_file.unwrap_or_else(|| cfg.data.join("secret.key")))?;
        // Every server of one store signs with the same key (providers
        // take grants from any of them).
        let raw = db.config_get_or_init("signing_key", || {
            SigningKey::generate(&mut rand::rngs::OsRng)
                .to_bytes()
                .to_vec()
        })?;
        let key = SigningKey::from_bytes(
            &raw.try_into()
                .map_err(|_| anyhow::anyhow!("stored signing key is malformed"))?,
        );
        db.seed_packages(&default_packages())?;
        let mailer =
            mail::Mailer::new(cfg.smtp.as_deref(), &cfg.mail_from, cfg.data.join("outbox"))?;
        objects::clean_spool(&cfg.data)?;
        let registrations =
            governor::RateLimiter::keyed(governor::Quota::per_hour(cfg.registrations_per_ip));
        let jobs_holder = jobs_holder(&cfg.data);
        Ok(Meta {
            db,
            key,
            secret,
            cfg,
            shards: ShardClient::new(Duration::from_secs(30)),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .connect_timeout(Duration::from_secs(3))
                .build()?,
            repair_stats: repair::RepairStats::default(),
            jobs_holder,
            runs_jobs: std::sync::atomic::AtomicBool::new(false),
            mailer,
            registrations,
            reader_reports: governor::RateLimiter::keyed(READER_REPORTS),
            apps: Default::default(),
        })
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Runs store calls (blocking I/O) from handlers and jobs without
    /// holding up the runtime's other tasks: on a multi-threaded runtime
    /// this worker hands its queue to another thread while `f` runs.
    pub fn store<T>(&self, f: impl FnOnce(&Db) -> T) -> T {
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                tokio::task::block_in_place(|| f(&self.db))
            }
            _ => f(&self.db),
        }
    }

    /// A read of a few rows by key. On SQLite (a local file) it takes
    /// microseconds, less than the thread wake-up of handing the worker
    /// over as `store` does, so it runs here; on PostgreSQL (a network
    /// round trip) as `store`.
    pub fn point_read<T>(&self, f: impl FnOnce(&Db) -> T) -> T {
        if self.db.reads_locally() {
            f(&self.db)
        } else {
            self.store(f)
        }
    }

    /// A write of a few rows. On SQLite with no other write under way it
    /// runs here: one WAL append and fsync, which a worker may wait out
    /// rather than pay a thread wake-up to hand itself over. Behind
    /// another write it waits handed over, as `store`; on PostgreSQL it
    /// always goes as `store`. So a worker seldom waits on the SQLite
    /// writer (only when another write takes it between the check and
    /// the transaction).
    pub fn point_write<T>(&self, f: impl FnOnce(&Db) -> T) -> T {
        if self.db.writer_free() {
            f(&self.db)
        } else {
            self.store(f)
        }
    }

    /// A grant for `provider` to do `op` on `shards`, valid for the grant
    /// lifetime; callers add a session or a delete condition.
    fn grant(&self, op: Op, provider: &str, shards: Vec<String>) -> Grant {
        Grant {
            op,
            provider: provider.to_string(),
            shards,
            exp: now_secs() + self.cfg.grant_ttl.as_secs(),
            session: None,
            stored_before_ms: None,
        }
    }

    fn sign(&self, grant: &Grant) -> String {
        grant.sign(&self.key)
    }

    /// The appid an appkey belongs to.
    fn app(&self, appkey: &str) -> MetaResult<u64> {
        let hash = store::appkey_hash(appkey);
        if let Some(&appid) = crate::lock(&self.apps).get(&hash) {
            return Ok(appid);
        }
        let appid = self
            .db
            .appid_of(appkey)?
            .ok_or_else(|| MetaError::Unauthorized("unknown appkey".into()))?;
        let mut apps = crate::lock(&self.apps);
        if apps.len() < APPS_KNOWN {
            apps.insert(hash, appid);
        }
        Ok(appid)
    }

    /// Checks that `appkey` may read (or write) the namespace of `appid`.
    fn authorize(&self, appkey: &str, appid: u64, write: bool) -> MetaResult<()> {
        let own = self.app(appkey)?;
        if own != appid && (write || !self.cfg.public_read) {
            return Err(MetaError::Unauthorized(
                "an app may change only its own appid's namespace".into(),
            ));
        }
        Ok(())
    }
}

impl Meta {
    /// An account's capacity in bytes: the free tier plus its active orders.
    fn capacity(&self, ns: Ns) -> MetaResult<u64> {
        let (ordered, _) = self.db.ordered_capacity(ns, store::unix_now())?;
        Ok(self.cfg.free_capacity.saturating_add(ordered))
    }

    /// Refuses to store `more` bytes that would take `ns` past its capacity.
    fn check_quota(&self, ns: Ns, more: u64) -> MetaResult<()> {
        let used = self.db.used_bytes(ns)?;
        let capacity = self.capacity(ns)?;
        if used.saturating_add(more) > capacity {
            return Err(MetaError::Quota(format!(
                "{used} of {capacity} bytes used; {more} more do not fit"
            )));
        }
        Ok(())
    }
}

/// Creates an app; a random 32-byte appkey unless one is given.
pub fn create_app(db: &Db, appkey: Option<String>) -> MetaResult<(String, u64)> {
    let appkey = appkey.unwrap_or_else(|| {
        use rand::RngCore;
        let mut raw = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut raw);
        hex::encode(raw)
    });
    if appkey.is_empty()
        || appkey.len() > 128
        || !appkey
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(MetaError::BadRequest(
            "an appkey is 1-128 letters, digits, '-' or '_'".into(),
        ));
    }
    let appid = db.create_app(&appkey)?;
    Ok((appkey, appid))
}

/// Makes a provider join token; the store keeps only its hash.
pub fn join_token(db: &Db, reusable: bool, ttl: Duration) -> MetaResult<String> {
    use rand::RngCore;
    let mut raw = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut raw);
    let token = format!("join-{}", hex::encode(raw));
    db.join_token_add(
        &token_hash(&token),
        reusable,
        store::unix_now() + ttl.as_secs() as i64,
    )?;
    Ok(token)
}

/// Join tokens are random, so a plain SHA-256 keeps them unguessable at rest.
fn token_hash(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// A metadata server serving on a bound listener.
pub struct RunningMeta {
    pub url: String,
    pub meta: Arc<Meta>,
    pub task: tokio::task::JoinHandle<()>,
}

/// How long the background jobs' lease lasts unless renewed: the longest a
/// dead holder keeps the jobs from running elsewhere.
const JOBS_LEASE: Duration = Duration::from_secs(10);

impl Meta {
    /// Whether this server runs the background jobs now (with several
    /// servers on one store, exactly one does).
    pub fn runs_jobs(&self) -> bool {
        self.runs_jobs.load(std::sync::atomic::Ordering::Relaxed)
    }
}

fn jobs_holder(data: &std::path::Path) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}:{}", host.trim(), data.display())
}

/// Takes the background jobs' lease when it is free and renews it while
/// this server holds it, a third of its life at a time.
async fn hold_jobs_lease(meta: Arc<Meta>) {
    loop {
        let now = crate::grant::now_ms() as i64;
        let until = now + JOBS_LEASE.as_millis() as i64;
        let held = meta.store(|db| db.lease_jobs(&meta.jobs_holder, now, until));
        let held = held.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot renew the background jobs lease");
            false
        });
        if held
            != meta
                .runs_jobs
                .swap(held, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::info!(holder = %meta.jobs_holder, held, "background jobs lease");
        }
        tokio::time::sleep(JOBS_LEASE / 3).await;
    }
}

pub async fn start(
    listener: tokio::net::TcpListener,
    cfg: MetaConfig,
) -> anyhow::Result<RunningMeta> {
    let url = format!("http://{}", listener.local_addr()?);
    crate::metrics::install();
    let meta = Arc::new(Meta::open(cfg)?);
    crate::metrics::on_scrape(&meta, repair::record_health);
    let app = api::routes(meta.clone())
        .merge(api_fs::routes(meta.clone()))
        .merge(rest_v2::routes(meta.clone()))
        .merge(accounts::routes(meta.clone()))
        .merge(api_store::routes(meta.clone()))
        .route("/metrics", axum::routing::get(crate::metrics::scrape));
    // `tfsfs admin health` classifies shard copies as this server does.
    meta.db.config_set(
        "provider_timeout_secs",
        meta.cfg.provider_timeout.as_secs().to_string().as_bytes(),
    )?;
    meta.db.config_set(
        "repair_after_secs",
        meta.cfg.repair_after.as_secs().to_string().as_bytes(),
    )?;
    meta.db
        .config_set("replicas", meta.cfg.replicas.to_string().as_bytes())?;
    let lease = hold_jobs_lease(meta.clone());
    let collector = gc::run(meta.clone(), meta.cfg.gc_interval);
    let repairer = repair::run(meta.clone());
    let serve = crate::http::serve_with(
        listener,
        app,
        meta.cfg.serve,
        crate::metrics::service("meta"),
    );
    let task = tokio::spawn(async move {
        tokio::select! {
            r = serve => if let Err(e) = r {
                tracing::error!(error = %e, "metadata server stopped");
            },
            _ = lease => {}
            _ = collector => {}
            _ = repairer => {}
        }
    });
    Ok(RunningMeta { url, meta, task })
}
