//! The `/api/` routes: policy, grant key, provider registry, and the upload
//! session (CheckFileExist → UploadFilePrepare → UploadFileDone) with read
//! layouts.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::db::{unix_now, Kind, NewObject, Ns};
use super::path::TfsPath;
use super::placement::{place, spares};
use super::{Meta, MetaError, MetaResult};
use crate::codec::erasure::Scheme;
use crate::codec::{
    is_sha1_hex, object_stored_size, partition_count, sha1_hex, stored_len, INLINE_MAX,
};
use crate::grant::{now_secs, Op};
use crate::proto::*;

pub fn routes(meta: Arc<Meta>) -> Router {
    Router::new()
        .route("/api/pubkey", get(pubkey))
        .route("/api/policy", get(policy))
        .route("/api/providers", get(providers))
        .route("/api/providers/heartbeat", post(heartbeat))
        .route("/api/ns/{appid}/{uid}/check", post(check))
        .route("/api/ns/{appid}/{uid}/prepare", post(prepare))
        .route("/api/ns/{appid}/{uid}/done", post(done))
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
        m.db.providers()?
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

async fn heartbeat(State(m): State<Arc<Meta>>, b: Body<Heartbeat>) -> MetaResult<()> {
    let hb = body(b)?;
    let url_ok = hb.url.starts_with("http://") || hb.url.starts_with("https://");
    if hb.id.is_empty() || hb.id.len() > 64 || !url_ok {
        return Err(MetaError::BadRequest(
            "a heartbeat needs an id and an http(s) URL".into(),
        ));
    }
    m.db.heartbeat(&hb.id, hb.url.trim_end_matches('/'), hb.capacity, hb.used)?;
    Ok(())
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

/// Largest file an upload may announce: 4 TiB.
const MAX_FILE_SIZE: u64 = 1 << 42;

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Plan {
    Replica { copies: usize },
    Erasure { k: usize, m: usize },
}

/// What a session remembers between its steps.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Session {
    check: CheckRequest,
    plan: Plan,
    /// Partitions announced in UploadFilePrepare.
    prepared: BTreeMap<u64, PartitionMeta>,
}

fn new_session_id() -> String {
    use rand::RngCore;
    let mut raw = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut raw);
    hex::encode(raw)
}

impl Meta {
    fn save_session(&self, id: &str, ns: Ns, s: &Session) -> MetaResult<()> {
        let state = serde_json::to_string(s).map_err(|e| MetaError::Internal(e.to_string()))?;
        self.db.session_put(
            id,
            ns,
            unix_now() + self.cfg.session_ttl.as_secs() as i64,
            &state,
        )?;
        Ok(())
    }

    fn load_session(&self, id: &str, ns: Ns) -> MetaResult<Session> {
        let state = self.db.session_get(id, ns)?.ok_or_else(|| {
            MetaError::NotFound("no such upload session (expired, or not yours)".into())
        })?;
        serde_json::from_str(&state).map_err(|e| MetaError::Internal(e.to_string()))
    }

    /// Makes `object` the content of the checked file, unless the file has
    /// moved on from the version the upload started from (409).
    fn commit(&self, ns: Ns, c: &CheckRequest, object: i64) -> MetaResult<u64> {
        let key = c.key.as_deref();
        let committed = match c.node {
            Some(id) => {
                self.db
                    .commit_node(ns, id, object, c.file_size, key, &c.attrs, c.base_ver)?
            }
            None => {
                let path = TfsPath::parse(&c.path)?;
                self.db
                    .commit_file(ns, &path, object, c.file_size, key, &c.attrs, c.base_ver)?
            }
        };
        committed.ok_or_else(|| MetaError::Conflict(STALE_BASE.into()))
    }
}

/// Checks an upload's announcement and that its target can be a file.
fn validate_check(m: &Meta, ns: Ns, c: &CheckRequest) -> MetaResult<()> {
    match c.node {
        Some(id) => {
            if m.db.node(ns, id)?.kind != Kind::File {
                return Err(MetaError::Conflict(format!("node {id} is not a file")));
            }
        }
        None => {
            let path = TfsPath::parse(&c.path)?;
            if path.is_root() {
                return Err(MetaError::BadRequest("cannot upload to the root".into()));
            }
            if matches!(m.db.stat(ns, &path), Ok(node) if node.kind == Kind::Dir) {
                return Err(MetaError::Conflict(format!("{path} is a directory")));
            }
        }
    }
    if !is_sha1_hex(&c.object_sha1) {
        return Err(MetaError::BadRequest(
            "object_sha1 is not a lower-case hex SHA-1".into(),
        ));
    }
    if c.file_size > MAX_FILE_SIZE {
        return Err(MetaError::BadRequest(format!(
            "a file is at most {MAX_FILE_SIZE} bytes"
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
    let known =
        m.db.find_object(ns, &c.object_sha1)?
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
        let object = m.db.insert_object(
            ns,
            &NewObject {
                sha1: &c.object_sha1,
                scheme: StoreScheme::Inline,
                plain_size: c.file_size,
                stored_size: c.object_size,
                partition_size: c.partition_size,
                k: 1,
                m: 0,
                data: Some(&data),
                partitions: &[],
            },
        )?;
        return Ok(Json(CheckResponse::Done {
            ver_no: m.commit(ns, &c, object)?,
        }));
    }
    if c.data.is_some() {
        return Err(MetaError::BadRequest(format!(
            "only files of at most {INLINE_MAX} bytes travel inline"
        )));
    }
    if let Some(o) = known {
        return Ok(Json(CheckResponse::Done {
            ver_no: m.commit(ns, &c, o.id)?,
        }));
    }
    let alive = m.alive()?;
    let session = new_session_id();
    // Replicas hold the whole object as one shard, so it must be one partition.
    let one_partition = c.object_size <= stored_len(c.partition_size, c.key.is_some());
    let (plan, answer) = if c.object_size <= m.cfg.replica_max && one_partition {
        let copies = m.cfg.replicas.min(alive.len());
        let providers = place(&alive, 0, (copies + m.cfg.spares).min(alive.len()));
        let grant = m.grant(Op::Put, vec![c.object_sha1.clone()]);
        (
            Plan::Replica { copies },
            CheckResponse::Replica {
                session: session.clone(),
                copies,
                providers,
                grant,
            },
        )
    } else {
        let s = m.scheme_for(alive.len());
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
            check: c,
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
    let Plan::Erasure { k, m: parity } = s.plan else {
        return Err(MetaError::BadRequest(
            "a replicated upload has no prepare step".into(),
        ));
    };
    let scheme = Scheme::new(k, parity).map_err(|e| MetaError::Internal(e.to_string()))?;
    let count = partition_count(s.check.file_size, s.check.partition_size);
    for p in &req.partitions {
        if p.index >= count {
            return Err(MetaError::BadRequest(format!(
                "the file has {count} partitions, not {}",
                p.index + 1
            )));
        }
        let size = partition_stored(&s.check, p.index);
        let shard = scheme.shard_len(size as usize) as u64;
        if p.size != size || p.shards.len() != k + parity {
            return Err(MetaError::BadRequest(format!(
                "partition {} must be {size} bytes in {} shards",
                p.index,
                k + parity
            )));
        }
        if p.shards
            .iter()
            .any(|sh| sh.size != shard || !is_sha1_hex(&sh.sha1))
        {
            return Err(MetaError::BadRequest(format!(
                "shards of partition {} must be {shard} bytes with a SHA-1",
                p.index
            )));
        }
    }
    let alive = m.alive()?;
    let mut placed = Vec::new();
    let mut partitions = Vec::new();
    for p in &req.partitions {
        let providers = place(&alive, p.index, k + parity);
        let grant = m.grant(Op::Put, p.shards.iter().map(|sh| sh.sha1.clone()).collect());
        partitions.push(PreparedPartition {
            index: p.index,
            providers: providers.clone(),
            grant,
        });
        placed.push(providers);
        s.prepared.insert(p.index, p.clone());
    }
    m.save_session(&req.session, ns, &s)?;
    Ok(Json(PrepareResponse {
        partitions,
        spares: spares(&alive, &placed, m.cfg.spares),
    }))
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
    let known: std::collections::HashSet<String> =
        m.db.providers()?.into_iter().map(|p| p.id).collect();
    let bad = |msg: String| Err(MetaError::BadRequest(msg));
    for p in &req.partitions {
        for sh in &p.shards {
            if sh.providers.is_empty() || sh.providers.iter().any(|id| !known.contains(id)) {
                return bad(format!(
                    "shard {} names no provider, or an unknown one",
                    sh.sha1
                ));
            }
        }
    }
    let c = &s.check;
    let (scheme, k, parity) = match s.plan {
        Plan::Replica { .. } => {
            let ok = matches!(req.partitions.as_slice(), [p] if p.index == 0 && p.size == c.object_size
                && matches!(p.shards.as_slice(), [sh] if sh.sha1 == c.object_sha1 && sh.size == c.object_size));
            if !ok {
                return bad(
                    "a replicated upload is one partition with one shard: the object".into(),
                );
            }
            (StoreScheme::Replica, 1, 0)
        }
        Plan::Erasure { k, m: parity } => {
            let count = partition_count(c.file_size, c.partition_size);
            if req.partitions.len() as u64 != count {
                return bad(format!(
                    "the file has {count} partitions, {} were reported",
                    req.partitions.len()
                ));
            }
            for (i, p) in req.partitions.iter().enumerate() {
                let Some(prep) = s.prepared.get(&(i as u64)).filter(|_| p.index == i as u64) else {
                    return bad(format!(
                        "partition {i} was not prepared, or is out of order"
                    ));
                };
                let same = p.size == prep.size
                    && p.shards.len() == prep.shards.len()
                    && p.shards.iter().zip(&prep.shards).all(|(a, b)| {
                        a.sha1 == b.sha1 && a.size == b.size && a.providers.len() == 1
                    });
                if !same {
                    return bad(format!("partition {i} differs from what was prepared"));
                }
            }
            (StoreScheme::Erasure, k, parity)
        }
    };
    let object = m.db.insert_object(
        ns,
        &NewObject {
            sha1: &c.object_sha1,
            scheme,
            plain_size: c.file_size,
            stored_size: c.object_size,
            partition_size: c.partition_size,
            k,
            m: parity,
            data: None,
            partitions: &req.partitions,
        },
    )?;
    let ver_no = m.commit(ns, c, object)?;
    m.db.session_delete(&req.session)?;
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
    let node = m.db.stat(ns, &TfsPath::parse(&q.path)?)?;
    if node.kind != Kind::File {
        return Err(MetaError::NotFound(format!("{} is not a file", q.path)));
    }
    Ok(Json(m.file_layout(&node)?))
}
