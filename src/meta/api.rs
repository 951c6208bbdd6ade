//! The `/api/` routes: policy, grant key, provider enrollment and signed
//! heartbeats, and the upload session (CheckFileExist → UploadFilePrepare →
//! UploadFileDone) with read layouts. A session commits only shards that
//! providers' receipts prove stored for it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::path::TfsPath;
use super::placement::choose;
use super::store::{unix_now, CommitObject, CommitTarget, Kind, NewObject, Ns};
use super::{Meta, MetaError, MetaResult};
use crate::codec::erasure::Scheme;
use crate::codec::{
    is_sha1_hex, is_shard_id, object_stored_size, partition_count, sha1_hex, stored_len, INLINE_MAX,
};
use crate::grant::{self, now_ms, now_secs, Beat, Grant, Op, ProviderSigned, Receipt};
use crate::proto::*;

pub fn routes(meta: Arc<Meta>) -> Router {
    Router::new()
        .route("/api/pubkey", get(pubkey))
        .route("/api/policy", get(policy))
        .route("/api/providers", get(providers))
        .route("/api/providers/enroll", post(enroll))
        .route("/api/providers/heartbeat", post(heartbeat))
        .route("/api/providers/report", post(provider_report))
        .route("/api/health", get(health))
        .route("/api/ns/{appid}/{uid}/report", post(reader_report))
        .route("/api/ns/{appid}/{uid}/check", post(check))
        .route("/api/ns/{appid}/{uid}/prepare", post(prepare))
        .route("/api/ns/{appid}/{uid}/done", post(done))
        .route(
            "/api/ns/{appid}/{uid}/partitions/check",
            post(partitions_check),
        )
        .route(
            "/api/ns/{appid}/{uid}/partitions/done",
            post(partitions_done),
        )
        .route("/api/ns/{appid}/{uid}/commit", post(commit))
        .route("/api/ns/{appid}/{uid}/layout", get(layout))
        .with_state(meta)
}

type Body<T> = Result<Json<T>, JsonRejection>;

fn body<T>(b: Body<T>) -> MetaResult<T> {
    b.map(|Json(v)| v)
        .map_err(|e| MetaError::BadRequest(e.body_text()))
}

async fn pubkey(State(m): State<Arc<Meta>>) -> String {
    hex::encode(m.key.verifying_key().to_bytes())
}

async fn policy(State(m): State<Arc<Meta>>) -> Json<Policy> {
    Json(Policy {
        partition_size: m.cfg.partition_size,
        inline_max: INLINE_MAX,
    })
}

async fn providers(State(m): State<Arc<Meta>>) -> MetaResult<Json<Vec<ProviderStatus>>> {
    let horizon = now_secs().saturating_sub(m.cfg.provider_timeout.as_secs());
    Ok(Json(
        m.store(|db| db.providers())?
            .into_iter()
            .map(|p| ProviderStatus {
                alive: p.last_seen >= horizon,
                id: p.id,
                url: p.url,
                capacity: p.capacity,
                used: p.used,
            })
            .collect(),
    ))
}

/// How far a heartbeat's timestamp may be from this server's clock.
const BEAT_WINDOW_MS: u64 = 300_000;

/// Refuses a provider's message stamped too far from this server's clock.
fn fresh(ts_ms: u64, what: &str) -> MetaResult<()> {
    if now_ms().abs_diff(ts_ms) > BEAT_WINDOW_MS {
        return Err(MetaError::Unauthorized(format!(
            "{what} timestamp is too far from the server's clock"
        )));
    }
    Ok(())
}

/// Checks a beat's fields and freshness (its signature is checked by the caller).
fn valid_beat(beat: &Beat) -> MetaResult<()> {
    let url_ok = beat.url.starts_with("http://") || beat.url.starts_with("https://");
    if beat.id.is_empty() || beat.id.len() > 64 || !url_ok {
        return Err(MetaError::BadRequest(
            "a heartbeat needs an id and an http(s) URL".into(),
        ));
    }
    fresh(beat.ts_ms, "heartbeat")
}

/// The value of `token`, signed by the enrolled provider it names.
fn open_signed<T: ProviderSigned>(
    keys: &HashMap<String, String>,
    token: &str,
) -> Result<T, String> {
    let claimed: T = grant::peek(token).map_err(|e| e.to_string())?;
    let key = keys
        .get(claimed.provider())
        .and_then(|k| grant::verifying_key_from_hex(k))
        .ok_or_else(|| format!("provider {} is not enrolled", claimed.provider()))?;
    grant::open(token, &key).map_err(|e| e.to_string())
}

fn unauthorized(e: crate::meta::DbError) -> MetaError {
    match e {
        crate::meta::DbError::Forbidden(m) => MetaError::Unauthorized(m),
        e => e.into(),
    }
}

/// A provider presents its key, proven by a beat signed with it, and a join
/// token unless the key is already enrolled under its id.
async fn enroll(State(m): State<Arc<Meta>>, b: Body<EnrollRequest>) -> MetaResult<()> {
    let req = body(b)?;
    let key = grant::verifying_key_from_hex(&req.pubkey)
        .ok_or_else(|| MetaError::BadRequest("pubkey is not an Ed25519 key in hex".into()))?;
    let beat: Beat = grant::open(&req.beat, &key)
        .map_err(|e| MetaError::Unauthorized(format!("enrollment beat: {e}")))?;
    valid_beat(&beat)?;
    let token = req.token.as_deref().map(super::token_hash);
    m.store(|db| db.enroll(&beat.id, &req.pubkey, token.as_deref()))
        .map_err(unauthorized)?;
    record_beat(&m, &beat)
}

/// A heartbeat: a `Beat` signed by an enrolled provider, newer than its last.
async fn heartbeat(State(m): State<Arc<Meta>>, token: String) -> MetaResult<()> {
    let beat: Beat = open_signed(&m.store(|db| db.provider_keys())?, token.trim())
        .map_err(|e| MetaError::Unauthorized(format!("heartbeat: {e}")))?;
    valid_beat(&beat)?;
    record_beat(&m, &beat)
}

/// A provider's scrub findings, signed with its key: its bad copies are
/// lost from now on, and repair rebuilds them.
async fn provider_report(State(m): State<Arc<Meta>>, token: String) -> MetaResult<()> {
    let r: ScrubReport = open_signed(&m.store(|db| db.provider_keys())?, token.trim())
        .map_err(|e| MetaError::Unauthorized(format!("report: {e}")))?;
    fresh(r.ts_ms, "report")?;
    for sha1 in r.bad.iter().filter(|s| is_shard_id(s)) {
        if m.store(|db| db.shard_bad(sha1, &r.id, "corrupt (provider scrub)"))? {
            tracing::warn!(shard = %sha1, provider = %r.id, "scrub found a bad shard copy");
        }
    }
    if let Some(checked) = r.pass_checked {
        m.store(|db| db.scrub_report(&r.id, checked, r.pass_bad))?;
    }
    Ok(())
}

/// A reader routed around a copy: the server checks the claim itself
/// before it counts the copy as lost. Answers whether it was bad.
async fn reader_report(
    State(m): State<Arc<Meta>>,
    Path((appid, uid)): Path<(u64, u64)>,
    headers: HeaderMap,
    b: Body<ShardReport>,
) -> MetaResult<Json<bool>> {
    let ns = ns(&m, &headers, appid, uid, false)?;
    if m.reader_reports.check_key(&(ns.appid, ns.uid)).is_err() {
        return Err(MetaError::TooMany("too many reports; try later".into()));
    }
    m.reader_reports.retain_recent();
    let r = body(b)?;
    if !is_shard_id(&r.sha1) {
        return Err(MetaError::BadRequest("sha1 is not a shard id".into()));
    }
    Ok(Json(m.check_reported(ns, &r.sha1, &r.provider).await?))
}

/// Partitions by redundancy, the repair queue and every provider.
async fn health(State(m): State<Arc<Meta>>) -> MetaResult<Json<super::store::HealthReport>> {
    let mut r = m.store(|db| db.health_report(m.horizons(), m.cfg.replicas))?;
    (r.repaired_shards, r.repaired_bytes) = m.repaired();
    (r.last_round_bytes, r.last_round_ms) = m.last_round();
    Ok(Json(r))
}

fn record_beat(m: &Meta, beat: &Beat) -> MetaResult<()> {
    m.store(|db| {
        db.heartbeat(
            &beat.id,
            beat.url.trim_end_matches('/'),
            beat.capacity,
            beat.used,
            beat.ts_ms,
        )
    })
    .map_err(unauthorized)
}

/// Namespace of an `/api/ns/{appid}/{uid}` route, checked against the caller.
pub(super) fn ns(
    m: &Meta,
    headers: &HeaderMap,
    appid: u64,
    uid: u64,
    write: bool,
) -> MetaResult<Ns> {
    if appid == 0 || uid == 0 {
        return Err(MetaError::BadRequest("appid and uid are non-zero".into()));
    }
    let appkey = headers
        .get(APPKEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    m.authorize(appkey, appid, write)?;
    Ok(Ns { appid, uid })
}

/// Most partitions one `partitions/check` may announce.
const MAX_BATCH: usize = 256;

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Plan {
    Replica {
        copies: usize,
    },
    /// The scheme the upload began with; later partitions may have fewer
    /// data shards, never fewer parity shards.
    Erasure {
        k: usize,
        m: usize,
    },
}

/// What a session uploads: one file's object (its partitions), or a
/// window of partition objects (one partition each).
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Upload {
    File(Box<CheckRequest>),
    Partitions(Vec<PartitionCheck>),
}

impl Upload {
    /// How many partitions the session uploads.
    fn count(&self) -> u64 {
        match self {
            Upload::File(c) => partition_count(c.file_size, c.partition_size),
            Upload::Partitions(p) => p.len() as u64,
        }
    }

    /// Stored size of partition `index`.
    fn stored(&self, index: u64) -> u64 {
        match self {
            Upload::File(c) => partition_stored(c, index),
            Upload::Partitions(p) => p[index as usize].stored_size,
        }
    }
}

/// What a session remembers between its steps.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Session {
    upload: Upload,
    plan: Plan,
    /// Partitions announced in UploadFilePrepare.
    prepared: BTreeMap<u64, PartitionMeta>,
}

pub(super) fn new_session_id() -> String {
    use rand::RngCore;
    let mut raw = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut raw);
    hex::encode(raw)
}

impl Meta {
    fn save_session(&self, id: &str, ns: Ns, s: &Session) -> MetaResult<()> {
        let state = serde_json::to_string(s).map_err(|e| MetaError::Internal(e.to_string()))?;
        self.store(|db| {
            db.session_put(
                id,
                ns,
                unix_now() + self.cfg.session_ttl.as_secs() as i64,
                &state,
            )
        })?;
        Ok(())
    }

    fn session_expiry(&self) -> i64 {
        unix_now() + self.cfg.session_ttl.as_secs() as i64
    }

    /// PUT grants for `targets` under `session`, each for `shards`, and the
    /// promise that those copies are not deleted while the session lives.
    pub(super) fn put_targets(
        &self,
        session: &str,
        providers: Vec<ProviderInfo>,
        shards: impl Fn(usize) -> Vec<String>,
    ) -> MetaResult<Vec<Target>> {
        let mut copies = Vec::new();
        let targets: Vec<Target> = providers
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let shards = shards(i);
                copies.extend(shards.iter().map(|s| (s.clone(), p.id.clone())));
                let grant = self.sign(&Grant {
                    session: Some(session.to_string()),
                    ..self.grant(Op::Put, &p.id, shards)
                });
                Target { provider: p, grant }
            })
            .collect();
        let refs: Vec<(&str, &str)> = copies
            .iter()
            .map(|(s, p)| (s.as_str(), p.as_str()))
            .collect();
        self.store(|db| db.pending_add(session, &refs, self.session_expiry()))?;
        Ok(targets)
    }

    fn load_session(&self, id: &str, ns: Ns) -> MetaResult<Session> {
        let state = self.store(|db| db.session_get(id, ns))?.ok_or_else(|| {
            MetaError::NotFound("no such upload session (expired, or not yours)".into())
        })?;
        serde_json::from_str(&state).map_err(|e| MetaError::Internal(e.to_string()))
    }

    /// Makes `object` the content of the checked file, unless the file has
    /// moved on from the version the upload started from (409).
    fn commit(
        &self,
        ns: Ns,
        c: &CheckRequest,
        object: CommitObject,
    ) -> MetaResult<(u64, Option<DirChange>)> {
        let key = c.key.as_deref();
        let target = match &c.create {
            Some(f) => CommitTarget::Create(f.clone()),
            None => commit_target(c.node, &c.path)?,
        };
        let committed = self.point_write(|db| {
            db.commit_object(ns, &target, object, c.file_size, key, &c.attrs, c.base_ver)
        })?;
        committed.ok_or_else(|| MetaError::Conflict(STALE_BASE.into()))
    }
}

/// The file an upload commits to: `node` when given, else the one at `path`.
fn commit_target(node: Option<i64>, path: &str) -> MetaResult<CommitTarget> {
    Ok(match node {
        Some(id) => CommitTarget::Node(id),
        None => CommitTarget::Path(TfsPath::parse(path)?),
    })
}

/// Checks an upload's announcement and that its target can be a file.
fn validate_check(m: &Meta, ns: Ns, c: &CheckRequest) -> MetaResult<()> {
    match c.node {
        _ if c.create.is_some() => {
            // The file is made by the commit of this request: it must not
            // need another (a session's upload and UploadFileDone).
            if c.node.is_some() || c.base_ver.is_some() || c.file_size > INLINE_MAX {
                return Err(MetaError::BadRequest(format!(
                    "create is for a new file of at most {INLINE_MAX} bytes, without node or base_ver"
                )));
            }
        }
        Some(id) => {
            let node = m.point_read(|db| db.node(ns, id))?;
            if node.kind != Kind::File {
                return Err(MetaError::Conflict(format!("node {id} is not a file")));
            }
            // Refused before any shard moves; the commit checks again.
            if c.base_ver.is_some_and(|base| base != node.ver_no) {
                return Err(MetaError::Conflict(STALE_BASE.into()));
            }
        }
        None => {
            let path = TfsPath::parse(&c.path)?;
            if path.is_root() {
                return Err(MetaError::BadRequest("cannot upload to the root".into()));
            }
            if matches!(m.store(|db| db.stat(ns, &path)), Ok(node) if node.kind == Kind::Dir) {
                return Err(MetaError::Conflict(format!("{path} is a directory")));
            }
        }
    }
    if !is_sha1_hex(&c.object_sha1) {
        return Err(MetaError::BadRequest(
            "object_sha1 is not a lower-case hex SHA-1".into(),
        ));
    }
    if c.file_size > m.cfg.max_file_size {
        return Err(MetaError::BadRequest(format!(
            "a file is at most {} bytes",
            m.cfg.max_file_size
        )));
    }
    if c.partition_size != m.cfg.partition_size {
        return Err(MetaError::BadRequest(format!(
            "partition_size must be {}",
            m.cfg.partition_size
        )));
    }
    let expected = object_stored_size(c.file_size, c.partition_size, c.key.is_some());
    if c.object_size != expected {
        return Err(MetaError::BadRequest(format!(
            "object_size {} does not fit file_size {}",
            c.object_size, c.file_size
        )));
    }
    Ok(())
}

async fn check(
    State(m): State<Arc<Meta>>,
    Path((appid, uid)): Path<(u64, u64)>,
    headers: HeaderMap,
    b: Body<CheckRequest>,
) -> MetaResult<Json<CheckResponse>> {
    let ns = ns(&m, &headers, appid, uid, true)?;
    let c = body(b)?;
    validate_check(&m, ns, &c)?;
    let known = m
        .point_read(|db| db.find_object(ns, &c.object_sha1))?
        .filter(|o| o.stored_size == c.object_size && o.plain_size == c.file_size);
    if known.is_none() {
        m.check_quota(ns, c.object_size)?;
    }
    if c.file_size <= INLINE_MAX {
        let data = c.data.as_deref().ok_or_else(|| {
            MetaError::BadRequest("a small file travels inline: data is missing".into())
        })?;
        let data = B64
            .decode(data)
            .map_err(|_| MetaError::BadRequest("data is not base64".into()))?;
        if data.len() as u64 != c.object_size || sha1_hex(&data) != c.object_sha1 {
            return Err(MetaError::BadRequest(
                "inline data does not match object_size and object_sha1".into(),
            ));
        }
        let object = NewObject {
            sha1: &c.object_sha1,
            scheme: StoreScheme::Inline,
            plain_size: c.file_size,
            stored_size: c.object_size,
            partition_size: c.partition_size,
            k: 1,
            m: 0,
            data: Some(&data),
            partitions: &[],
        };
        let (ver_no, dir_change) = m.commit(ns, &c, CommitObject::New(&object))?;
        return Ok(Json(CheckResponse::Done { ver_no, dir_change }));
    }
    if c.data.is_some() {
        return Err(MetaError::BadRequest(format!(
            "only files of at most {INLINE_MAX} bytes travel inline"
        )));
    }
    if let Some(o) = known {
        let (ver_no, dir_change) = m.commit(ns, &c, CommitObject::Known(o.id))?;
        return Ok(Json(CheckResponse::Done { ver_no, dir_change }));
    }
    let writable = m.writable(&HashSet::new())?;
    let session = new_session_id();
    // Replicas hold the whole object as one shard, so it must be one partition.
    let one_partition = c.object_size <= stored_len(c.partition_size, c.key.is_some());
    let (plan, answer) = if c.object_size <= m.cfg.replica_max && one_partition {
        let copies = m.copies_for(writable.len())?;
        let providers = choose(&writable, copies + m.cfg.spares);
        let targets = m.put_targets(&session, providers, |_| vec![c.object_sha1.clone()])?;
        (
            Plan::Replica { copies },
            CheckResponse::Replica {
                session: session.clone(),
                copies,
                targets,
            },
        )
    } else {
        let s = m.scheme_for(writable.len())?;
        (
            Plan::Erasure { k: s.k, m: s.m },
            CheckResponse::Erasure {
                session: session.clone(),
                k: s.k,
                m: s.m,
                partition_size: c.partition_size,
            },
        )
    };
    m.save_session(
        &session,
        ns,
        &Session {
            upload: Upload::File(Box::new(c)),
            plan,
            prepared: BTreeMap::new(),
        },
    )?;
    Ok(Json(answer))
}

/// Stored size of partition `index` of the checked file.
fn partition_stored(c: &CheckRequest, index: u64) -> u64 {
    let plain = c
        .file_size
        .saturating_sub(index * c.partition_size)
        .min(c.partition_size);
    stored_len(plain, c.key.is_some())
}

async fn prepare(
    State(m): State<Arc<Meta>>,
    Path((appid, uid)): Path<(u64, u64)>,
    headers: HeaderMap,
    b: Body<PrepareRequest>,
) -> MetaResult<Json<PrepareResponse>> {
    let ns = ns(&m, &headers, appid, uid, true)?;
    let req = body(b)?;
    let mut s = m.load_session(&req.session, ns)?;
    let Plan::Erasure {
        k: first_k,
        m: parity,
    } = s.plan
    else {
        return Err(MetaError::BadRequest(
            "a replicated upload has no prepare step".into(),
        ));
    };
    let count = s.upload.count();
    for p in &req.partitions {
        if p.index >= count {
            return Err(MetaError::BadRequest(format!(
                "the file has {count} partitions, not {}",
                p.index + 1
            )));
        }
        if p.m != parity || p.k == 0 || p.k > first_k {
            return Err(MetaError::BadRequest(format!(
                "partition {} must have {parity} parity shards and 1 to {first_k} data shards",
                p.index
            )));
        }
        let scheme = Scheme::new(p.k, p.m).map_err(|e| MetaError::BadRequest(e.to_string()))?;
        let size = s.upload.stored(p.index);
        let shard = scheme.shard_len(size as usize) as u64;
        if p.size != size || p.shards.len() != p.k + p.m {
            return Err(MetaError::BadRequest(format!(
                "partition {} must be {size} bytes in {} shards",
                p.index,
                p.k + p.m
            )));
        }
        if p.shards
            .iter()
            .any(|sh| sh.size != shard || !is_shard_id(&sh.sha1))
        {
            return Err(MetaError::BadRequest(format!(
                "shards of partition {} must be {shard} bytes with a SHA-1",
                p.index
            )));
        }
    }
    let avoid: HashSet<String> = req.avoid.iter().cloned().collect();
    let writable = m.writable(&avoid)?;
    let now = m.scheme_for(writable.len())?;
    let mut partitions = Vec::new();
    for p in &req.partitions {
        if p.k > now.k {
            // Too few providers left for this many data shards: the client
            // encodes the partition again with fewer.
            partitions.push(PreparedPartition {
                index: p.index,
                k: now.k,
                m: now.m,
                targets: vec![],
                spares: vec![],
            });
            continue;
        }
        let n = p.k + p.m;
        let mut chosen = choose(&writable, n + m.cfg.spares);
        if chosen.len() < n {
            return Err(MetaError::Unavailable(format!(
                "partition {} needs {n} distinct providers",
                p.index
            )));
        }
        let spare_providers = chosen.split_off(n);
        let all: Vec<String> = p.shards.iter().map(|sh| sh.sha1.clone()).collect();
        let targets = m.put_targets(&req.session, chosen, |i| vec![all[i].clone()])?;
        let spares = m.put_targets(&req.session, spare_providers, |_| all.clone())?;
        partitions.push(PreparedPartition {
            index: p.index,
            k: p.k,
            m: p.m,
            targets,
            spares,
        });
        s.prepared.insert(p.index, p.clone());
    }
    m.save_session(&req.session, ns, &s)?;
    Ok(Json(PrepareResponse { partitions }))
}

/// The distinct enrolled providers whose valid receipts prove they stored
/// `shard` for `session`.
pub(super) fn proven_providers(
    keys: &HashMap<String, String>,
    session: &str,
    shard: &StoredShard,
) -> MetaResult<Vec<String>> {
    let mut providers = Vec::new();
    for token in &shard.receipts {
        let r: Receipt = open_signed(keys, token)
            .map_err(|e| MetaError::BadRequest(format!("receipt for {}: {e}", shard.sha1)))?;
        if r.shard != shard.sha1 || r.size != shard.size || r.session != session {
            return Err(MetaError::BadRequest(format!(
                "receipt for {} is for another shard or session",
                shard.sha1
            )));
        }
        if !providers.contains(&r.provider) {
            providers.push(r.provider);
        }
    }
    Ok(providers)
}

/// A reported partition checked against what was prepared for it, with
/// each shard's provider proven by its receipt, one shard per provider.
fn placed_partition(
    keys: &HashMap<String, String>,
    session: &str,
    p: &StoredPartition,
    prep: Option<&PartitionMeta>,
) -> MetaResult<PlacedPartition> {
    let bad = |msg: String| Err(MetaError::BadRequest(msg));
    let i = p.index;
    let Some(prep) = prep else {
        return bad(format!(
            "partition {i} was not prepared, or is out of order"
        ));
    };
    let same = p.size == prep.size
        && (p.k, p.m) == (prep.k, prep.m)
        && p.shards.len() == prep.shards.len()
        && p.shards
            .iter()
            .zip(&prep.shards)
            .all(|(a, b)| a.sha1 == b.sha1 && a.size == b.size);
    if !same {
        return bad(format!("partition {i} differs from what was prepared"));
    }
    let mut seen = HashSet::new();
    let mut shards = Vec::with_capacity(p.shards.len());
    for sh in &p.shards {
        let providers = proven_providers(keys, session, sh)?;
        let [provider] = providers.as_slice() else {
            return bad(format!(
                "shard {} needs exactly one provider's receipt",
                sh.sha1
            ));
        };
        if !seen.insert(provider.clone()) {
            return bad(format!(
                "partition {i} has two shards on provider {provider}"
            ));
        }
        shards.push(PlacedShard {
            sha1: sh.sha1.clone(),
            size: sh.size,
            providers,
        });
    }
    Ok(PlacedPartition {
        index: p.index,
        size: p.size,
        k: p.k,
        m: p.m,
        shards,
    })
}

async fn done(
    State(m): State<Arc<Meta>>,
    Path((appid, uid)): Path<(u64, u64)>,
    headers: HeaderMap,
    b: Body<DoneRequest>,
) -> MetaResult<Json<DoneResponse>> {
    let ns = ns(&m, &headers, appid, uid, true)?;
    let req = body(b)?;
    let s = m.load_session(&req.session, ns)?;
    let keys = m.store(|db| db.provider_keys())?;
    let bad = |msg: String| Err(MetaError::BadRequest(msg));
    let Upload::File(c) = &s.upload else {
        return bad("a session of partitions ends with partitions/done".into());
    };
    let mut placed = Vec::with_capacity(req.partitions.len());
    let (scheme, k, parity) = match s.plan {
        Plan::Replica { copies } => {
            let ok = matches!(req.partitions.as_slice(), [p] if p.index == 0 && p.size == c.object_size
                && matches!(p.shards.as_slice(), [sh] if sh.sha1 == c.object_sha1 && sh.size == c.object_size));
            if !ok {
                return bad(
                    "a replicated upload is one partition with one shard: the object".into(),
                );
            }
            let shard = &req.partitions[0].shards[0];
            let providers = proven_providers(&keys, &req.session, shard)?;
            if providers.len() < copies {
                return bad(format!(
                    "receipts prove {} of {copies} copies",
                    providers.len()
                ));
            }
            placed.push(PlacedPartition {
                index: 0,
                size: c.object_size,
                k: 1,
                m: 0,
                shards: vec![PlacedShard {
                    sha1: shard.sha1.clone(),
                    size: shard.size,
                    providers,
                }],
            });
            (StoreScheme::Replica, 1, 0)
        }
        Plan::Erasure { k, m: parity } => {
            let count = s.upload.count();
            if req.partitions.len() as u64 != count {
                return bad(format!(
                    "the file has {count} partitions, {} were reported",
                    req.partitions.len()
                ));
            }
            for (i, p) in req.partitions.iter().enumerate() {
                let prep = s.prepared.get(&(i as u64)).filter(|_| p.index == i as u64);
                placed.push(placed_partition(&keys, &req.session, p, prep)?);
            }
            (StoreScheme::Erasure, k, parity)
        }
    };
    let object = NewObject {
        sha1: &c.object_sha1,
        scheme,
        plain_size: c.file_size,
        stored_size: c.object_size,
        partition_size: c.partition_size,
        k,
        m: parity,
        data: None,
        partitions: &placed,
    };
    let (ver_no, _) = m.commit(ns, c, CommitObject::New(&object))?;
    m.store(|db| db.session_end(&req.session))?;
    Ok(Json(DoneResponse { ver_no }))
}

/// Step 1 for a window of partition objects: those the account stores
/// already (or that travel inline, stored now) need no upload; the others
/// get a session, erasure-coded whatever their size.
async fn partitions_check(
    State(m): State<Arc<Meta>>,
    Path((appid, uid)): Path<(u64, u64)>,
    headers: HeaderMap,
    b: Body<PartitionsCheckRequest>,
) -> MetaResult<Json<PartitionsCheckResponse>> {
    let ns = ns(&m, &headers, appid, uid, true)?;
    let req = body(b)?;
    if req.partition_size != m.cfg.partition_size {
        return Err(MetaError::BadRequest(format!(
            "partition_size must be {}",
            m.cfg.partition_size
        )));
    }
    if req.partitions.is_empty() || req.partitions.len() > MAX_BATCH {
        return Err(MetaError::BadRequest(format!(
            "a batch holds 1 to {MAX_BATCH} partitions"
        )));
    }
    let mut stored = Vec::with_capacity(req.partitions.len());
    let mut missing = 0u64;
    for p in &req.partitions {
        let fits = p.plain_size > 0
            && p.plain_size <= req.partition_size
            && p.stored_size == stored_len(p.plain_size, req.encrypted);
        if !fits || !is_sha1_hex(&p.sha1) {
            return Err(MetaError::BadRequest(format!(
                "partition {} must be 1 to {} plain bytes, stored in {} with a SHA-1",
                p.sha1,
                req.partition_size,
                stored_len(p.plain_size, req.encrypted)
            )));
        }
        let known = m
            .point_read(|db| db.find_object(ns, &p.sha1))?
            .is_some_and(|o| o.stored_size == p.stored_size && o.plain_size == p.plain_size);
        if known {
            // Counted as stored: kept for the commit that names it.
            m.store(|db| db.renew_unused(ns, &p.sha1))?;
        }
        let inline = match (&p.data, known) {
            (Some(data), false) if p.plain_size <= INLINE_MAX => Some(
                B64.decode(data)
                    .map_err(|_| MetaError::BadRequest("data is not base64".into()))?,
            ),
            (Some(_), false) => {
                return Err(MetaError::BadRequest(format!(
                    "only partitions of at most {INLINE_MAX} bytes travel inline"
                )))
            }
            _ => None,
        };
        if let Some(data) = &inline {
            if data.len() as u64 != p.stored_size || sha1_hex(data) != p.sha1 {
                return Err(MetaError::BadRequest(
                    "inline data does not match stored_size and sha1".into(),
                ));
            }
            m.check_quota(ns, p.stored_size)?;
            m.store(|db| {
                db.insert_object(
                    ns,
                    &NewObject {
                        sha1: &p.sha1,
                        scheme: StoreScheme::Inline,
                        plain_size: p.plain_size,
                        stored_size: p.stored_size,
                        partition_size: req.partition_size,
                        k: 1,
                        m: 0,
                        data: Some(data),
                        partitions: &[],
                    },
                )
            })?;
        }
        if !known && inline.is_none() {
            missing += p.stored_size;
        }
        stored.push(known || inline.is_some());
    }
    if missing == 0 {
        return Ok(Json(PartitionsCheckResponse {
            stored,
            session: None,
            k: 0,
            m: 0,
        }));
    }
    m.check_quota(ns, missing)?;
    let scheme = m.scheme_for(m.writable(&HashSet::new())?.len())?;
    let session = new_session_id();
    m.save_session(
        &session,
        ns,
        &Session {
            upload: Upload::Partitions(req.partitions),
            plan: Plan::Erasure {
                k: scheme.k,
                m: scheme.m,
            },
            prepared: BTreeMap::new(),
        },
    )?;
    Ok(Json(PartitionsCheckResponse {
        stored,
        session: Some(session),
        k: scheme.k,
        m: scheme.m,
    }))
}

/// Step 3 for a window of partition objects: each reported partition
/// (indexed by its place in the check) becomes an object of the account.
/// Nothing is committed to a file: `commit` does that.
async fn partitions_done(
    State(m): State<Arc<Meta>>,
    Path((appid, uid)): Path<(u64, u64)>,
    headers: HeaderMap,
    b: Body<DoneRequest>,
) -> MetaResult<()> {
    let ns = ns(&m, &headers, appid, uid, true)?;
    let req = body(b)?;
    let s = m.load_session(&req.session, ns)?;
    let Upload::Partitions(checked) = &s.upload else {
        return Err(MetaError::BadRequest(
            "a file's session ends with done".into(),
        ));
    };
    let keys = m.store(|db| db.provider_keys())?;
    for p in &req.partitions {
        let placed = placed_partition(&keys, &req.session, p, s.prepared.get(&p.index))?;
        let c = &checked[p.index as usize];
        m.store(|db| {
            db.insert_object(
                ns,
                &NewObject {
                    sha1: &c.sha1,
                    scheme: StoreScheme::Erasure,
                    plain_size: c.plain_size,
                    stored_size: c.stored_size,
                    partition_size: m.cfg.partition_size,
                    k: placed.k,
                    m: placed.m,
                    data: None,
                    partitions: &[PlacedPartition { index: 0, ..placed }],
                },
            )
        })?;
    }
    m.store(|db| db.session_end(&req.session))?;
    Ok(())
}

/// Commits a version of a file as a list of stored objects, if the file is
/// still at the version its writer started from.
async fn commit(
    State(m): State<Arc<Meta>>,
    Path((appid, uid)): Path<(u64, u64)>,
    headers: HeaderMap,
    b: Body<CommitRequest>,
) -> MetaResult<Json<DoneResponse>> {
    let ns = ns(&m, &headers, appid, uid, true)?;
    let req = body(b)?;
    if req.size > m.cfg.max_file_size {
        return Err(MetaError::BadRequest(format!(
            "a file is at most {} bytes",
            m.cfg.max_file_size
        )));
    }
    let mut end = 0;
    for f in &req.fragments {
        let ok = f.offset >= end
            && f.length > 0
            && f.offset
                .checked_add(f.length)
                .is_some_and(|e| e <= req.size)
            && is_sha1_hex(&f.object);
        if !ok {
            return Err(MetaError::BadRequest(
                "fragments are sorted, disjoint, non-empty, inside the file and name objects by SHA-1"
                    .into(),
            ));
        }
        end = f.offset + f.length;
    }
    if req.sha1.as_deref().is_some_and(|h| !is_sha1_hex(h)) {
        return Err(MetaError::BadRequest(
            "sha1 is a lower-case hex SHA-1".into(),
        ));
    }
    // Partitions are stored before any file uses them: the quota binds here.
    let objects: Vec<&str> = req.fragments.iter().map(|f| f.object.as_str()).collect();
    m.check_quota(ns, m.store(|db| db.unused_bytes(ns, &objects))?)?;
    let target = commit_target(req.node, &req.path)?;
    let committed = m.store(|db| {
        db.commit_fragments(
            ns,
            &target,
            req.size,
            &req.fragments,
            req.sha1.as_deref(),
            &req.attrs,
            req.base_ver,
        )
    })?;
    let (ver_no, _) = committed.ok_or_else(|| MetaError::Conflict(STALE_BASE.into()))?;
    Ok(Json(DoneResponse { ver_no }))
}

#[derive(Deserialize)]
struct LayoutQuery {
    path: String,
}

async fn layout(
    State(m): State<Arc<Meta>>,
    Path((appid, uid)): Path<(u64, u64)>,
    headers: HeaderMap,
    q: Result<Query<LayoutQuery>, axum::extract::rejection::QueryRejection>,
) -> MetaResult<Json<FileLayout>> {
    let ns = ns(&m, &headers, appid, uid, false)?;
    let Query(q) = q.map_err(|e| MetaError::BadRequest(e.body_text()))?;
    let path = TfsPath::parse(&q.path)?;
    let node = m.store(|db| db.stat(ns, &path))?;
    if node.kind != Kind::File {
        return Err(MetaError::NotFound(format!("{} is not a file", q.path)));
    }
    Ok(Json(m.file_layout(&node)?))
}
