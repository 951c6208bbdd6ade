//! Routes for the sidecar's `/store/*`, under `/api/ns/{appid}/{uid}/store/`
//! with header `x-tfs-appkey`: a sorted, paged listing with content hashes
//! (`list`), one entry (`entry`), and removing a tree (`remove_tree`).
//!
//! The content hash of a file is the SHA-1 of its stored object: for an
//! unencrypted file that is the SHA-1 of its bytes; for an encrypted one the
//! SHA-1 of the ciphertext, which within one account is a function of the
//! plaintext (convergent encryption), so equal hashes mean equal content.
//! A file of several partition objects hashes as the SHA-1 of their stored
//! bytes in order, as its writer computed them while uploading; where the
//! writer could not (an edit that left partitions it never read), as the
//! SHA-1 of its fragment list, as do files written in several fragments
//! through REST. An empty file hashes as SHA-1 of nothing.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::api::ns;
use super::path::TfsPath;
use super::store::{DbError, FragmentRow, Kind, Node, SortKey};
use super::{Meta, MetaError, MetaResult, Ns};
use crate::codec::sha1_hex;
use crate::proto::*;

pub fn routes(meta: Arc<Meta>) -> Router {
    Router::new()
        .route("/api/ns/{appid}/{uid}/store/list", get(list))
        .route("/api/ns/{appid}/{uid}/store/entry", get(entry))
        .route("/api/ns/{appid}/{uid}/store/remove_tree", post(remove_tree))
        .with_state(meta)
}

/// Most entries one page holds.
const MAX_PAGE: u64 = 10_000;

/// The content hash of a file of `size` bytes made of `frags`, whose
/// writer gave `stored_sha1` (see the module comment).
pub fn content_hash(frags: &[FragmentRow], size: u64, stored_sha1: Option<String>) -> String {
    match (frags, stored_sha1) {
        ([], _) => sha1_hex(b""),
        ([f], _) if f.offset == 0 && f.length == size && f.object.plain_size == size => {
            f.object.sha1.clone()
        }
        (_, Some(stored)) => stored,
        (_, None) => {
            let list: String = frags
                .iter()
                .map(|f| format!("{} {} {}\n", f.offset, f.length, f.object.sha1))
                .collect();
            sha1_hex(format!("tfsfs-fragments {size}\n{list}").as_bytes())
        }
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

fn path_string(p: &TfsPath) -> String {
    format!("/{}", p.segments().join("/"))
}

impl Meta {
    fn store_entry(&self, path: String, n: &Node) -> MetaResult<StoreEntry> {
        let folder = n.kind == Kind::Dir;
        let (hash, encrypted) = if n.kind == Kind::File {
            let (frags, stored_sha1) =
                self.store(|db| Ok::<_, DbError>((db.fragments(n.id)?, db.content_sha1(n.id)?)))?;
            (
                content_hash(&frags, n.size, stored_sha1),
                frags.iter().any(|f| f.key.is_some()),
            )
        } else {
            (String::new(), false)
        };
        Ok(StoreEntry {
            id: n.id,
            path,
            folder,
            size: if folder { 0 } else { n.size },
            modtime: n
                .attrs
                .mtime_ns
                .map_or(n.modify_time, |ns| ns.div_euclid(1_000_000_000)),
            hash,
            encrypted,
        })
    }
}

#[derive(Deserialize)]
struct ListQuery {
    path: String,
    #[serde(default)]
    sort: Option<String>,
    #[serde(default)]
    asc: Option<bool>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    offset: Option<u64>,
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> MetaResult<T> {
    q.map(|Query(v)| v)
        .map_err(|e| MetaError::BadRequest(e.body_text()))
}

fn ns_of(m: &Meta, h: &HeaderMap, appid: u64, uid: u64, write: bool) -> MetaResult<Ns> {
    ns(m, h, appid, uid, write)
}

async fn list(
    State(m): State<Arc<Meta>>,
    Path((appid, uid)): Path<(u64, u64)>,
    headers: HeaderMap,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> MetaResult<Json<StorePage>> {
    let ns = ns_of(&m, &headers, appid, uid, false)?;
    let q = query(q)?;
    let path = TfsPath::parse(&q.path)?;
    let key = match q.sort.as_deref() {
        None => SortKey::Name,
        Some(s) => SortKey::parse(s).ok_or_else(|| {
            MetaError::BadRequest(format!("sort is name, size or modtime, not {s:?}"))
        })?,
    };
    let limit = q.limit.unwrap_or(MAX_PAGE).min(MAX_PAGE);
    let (total, nodes) = m
        .store(|db| {
            db.list_page(
                ns,
                &path,
                key,
                q.asc.unwrap_or(true),
                limit,
                q.offset.unwrap_or(0),
            )
        })
        .map_err(|e| match e {
            super::DbError::NotDir => MetaError::Conflict(format!("{path} is not a folder")),
            super::DbError::NotFound => MetaError::NotFound(format!("no folder {path}")),
            e => e.into(),
        })?;
    let dir = path_string(&path);
    let entries = nodes
        .iter()
        .map(|n| m.store_entry(join(&dir, &n.name), n))
        .collect::<MetaResult<Vec<_>>>()?;
    Ok(Json(StorePage { total, entries }))
}

#[derive(Deserialize)]
struct EntryQuery {
    path: String,
}

async fn entry(
    State(m): State<Arc<Meta>>,
    Path((appid, uid)): Path<(u64, u64)>,
    headers: HeaderMap,
    q: Result<Query<EntryQuery>, QueryRejection>,
) -> MetaResult<Json<StoreEntry>> {
    let ns = ns_of(&m, &headers, appid, uid, false)?;
    let path = TfsPath::parse(&query(q)?.path)?;
    let node = m.store(|db| db.node_at(ns, &path)).map_err(|e| match e {
        super::DbError::NotFound => MetaError::NotFound(format!("no such file or folder {path}")),
        e => e.into(),
    })?;
    Ok(Json(m.store_entry(path_string(&path), &node)?))
}

async fn remove_tree(
    State(m): State<Arc<Meta>>,
    Path((appid, uid)): Path<(u64, u64)>,
    headers: HeaderMap,
    b: Result<Json<TreeRequest>, JsonRejection>,
) -> MetaResult<Json<TreeRemoved>> {
    let ns = ns_of(&m, &headers, appid, uid, true)?;
    let Json(r) = b.map_err(|e| MetaError::BadRequest(e.body_text()))?;
    let path = TfsPath::parse(&r.path)?;
    let removed = m
        .store(|db| db.remove_tree(ns, &path))
        .map_err(|e| match e {
            super::DbError::NotDir => MetaError::Conflict(format!("{path} is not a folder")),
            super::DbError::NotFound => MetaError::NotFound(format!("no folder {path}")),
            e => e.into(),
        })?;
    Ok(Json(TreeRemoved { removed }))
}
