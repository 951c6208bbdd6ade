//! The drive's extension of the v2 API, under `/api/ns/{appid}/{uid}/fs/`:
//! the namespace by node id with POSIX attributes, so that a mount keeps
//! stable inode numbers across renames. Errors name their errno.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::store::{DbError, Kind, NewNode, Node, Ns};
use super::{Meta, MetaError};
use crate::codec::INLINE_MAX;
use crate::proto::*;

pub fn routes(meta: Arc<Meta>) -> Router {
    Router::new()
        .route("/api/ns/{appid}/{uid}/fs/root", get(root))
        .route("/api/ns/{appid}/{uid}/fs/node/{id}", get(node))
        .route("/api/ns/{appid}/{uid}/fs/lookup/{parent}", get(lookup))
        .route("/api/ns/{appid}/{uid}/fs/children/{id}", get(children))
        .route("/api/ns/{appid}/{uid}/fs/layout/{id}", get(layout))
        .route("/api/ns/{appid}/{uid}/fs/make", post(make))
        .route("/api/ns/{appid}/{uid}/fs/ids", post(reserve_ids))
        .route("/api/ns/{appid}/{uid}/fs/remove", post(remove))
        .route("/api/ns/{appid}/{uid}/fs/rename", post(rename))
        .route("/api/ns/{appid}/{uid}/fs/link", post(link))
        .route("/api/ns/{appid}/{uid}/fs/xattr/{id}", get(xattr))
        .route("/api/ns/{appid}/{uid}/fs/xattrs/{id}", get(xattr_names))
        .route("/api/ns/{appid}/{uid}/fs/setxattr", post(setxattr))
        .route("/api/ns/{appid}/{uid}/fs/removexattr", post(removexattr))
        .route("/api/ns/{appid}/{uid}/fs/setattr", post(setattr))
        .route("/api/ns/{appid}/{uid}/fs/statfs", get(statfs))
        .with_state(meta)
}

/// An error with its errno.
pub struct FsFail(StatusCode, &'static str, String);

impl IntoResponse for FsFail {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(FsApiError {
                error: self.2,
                errno: self.1.to_string(),
            }),
        )
            .into_response()
    }
}

impl From<DbError> for FsFail {
    fn from(e: DbError) -> Self {
        let (status, errno) = match &e {
            DbError::NotFound | DbError::Missing(_) => (StatusCode::NOT_FOUND, "ENOENT"),
            DbError::NoAttr => (StatusCode::NOT_FOUND, "ENODATA"),
            DbError::Exists | DbError::Overlap => (StatusCode::CONFLICT, "EEXIST"),
            DbError::NotEmpty => (StatusCode::CONFLICT, "ENOTEMPTY"),
            DbError::NotDir => (StatusCode::CONFLICT, "ENOTDIR"),
            DbError::IsDir => (StatusCode::CONFLICT, "EISDIR"),
            DbError::NameTooLong => (StatusCode::BAD_REQUEST, "ENAMETOOLONG"),
            DbError::Invalid(_) => (StatusCode::BAD_REQUEST, "EINVAL"),
            DbError::Forbidden(_) => (StatusCode::FORBIDDEN, "ENOSPC"),
            DbError::NotPermitted(_) => (StatusCode::FORBIDDEN, "EPERM"),
            DbError::Sql(_) | DbError::Conflict(_) => (StatusCode::INTERNAL_SERVER_ERROR, "EIO"),
        };
        FsFail(status, errno, e.to_string())
    }
}

impl From<MetaError> for FsFail {
    fn from(e: MetaError) -> Self {
        let (status, errno) = match &e {
            MetaError::BadRequest(_) => (StatusCode::BAD_REQUEST, "EINVAL"),
            MetaError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "EACCES"),
            MetaError::Forbidden(_) => (StatusCode::FORBIDDEN, "EACCES"),
            MetaError::NotFound(_) => (StatusCode::NOT_FOUND, "ENOENT"),
            MetaError::Conflict(_) => (StatusCode::CONFLICT, "EEXIST"),
            MetaError::Quota(_) => (StatusCode::PAYLOAD_TOO_LARGE, "EDQUOT"),
            MetaError::TooMany(_) => (StatusCode::TOO_MANY_REQUESTS, "EAGAIN"),
            MetaError::Unavailable(_) | MetaError::Internal(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "EIO")
            }
        };
        FsFail(status, errno, e.to_string())
    }
}

type FsResult<T> = Result<Json<T>, FsFail>;

fn ns(m: &Meta, headers: &HeaderMap, appid: u64, uid: u64, write: bool) -> Result<Ns, FsFail> {
    Ok(super::api::ns(m, headers, appid, uid, write)?)
}

fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, FsFail> {
    b.map(|Json(v)| v)
        .map_err(|e| FsFail(StatusCode::BAD_REQUEST, "EINVAL", e.body_text()))
}

/// The attributes the drive sees; nodes made through REST get defaults.
pub fn node_attr(n: &Node) -> NodeAttr {
    let mtime = n.mtime_ns();
    let (kind, default_mode) = match n.kind {
        Kind::Dir => (NodeKind::Dir, 0o755),
        Kind::File => (NodeKind::File, 0o644),
        Kind::Symlink => (NodeKind::Symlink, 0o777),
        Kind::Fifo => (NodeKind::Fifo, 0o644),
        Kind::Socket => (NodeKind::Socket, 0o644),
        Kind::CharDevice => (NodeKind::CharDevice, 0o644),
        Kind::BlockDevice => (NodeKind::BlockDevice, 0o644),
    };
    NodeAttr {
        id: n.id,
        parent: n.parent,
        name: n.name.clone(),
        kind,
        size: n.size,
        mode: n.attrs.mode.unwrap_or(default_mode),
        uid: n.owner,
        gid: n.group,
        atime_ns: n.atime_ns.unwrap_or(mtime),
        mtime_ns: mtime,
        ctime_ns: n.ctime_ns.unwrap_or(mtime),
        ver_no: n.ver_no,
        target: n.target.clone(),
        nlink: n.nlink.min(u32::MAX as u64) as u32,
        rdev: n.rdev,
        default_acl: n.default_acl,
        dir_change: None,
        layout: None,
    }
}

async fn root(
    State(m): State<Arc<Meta>>,
    Path((a, u)): Path<(u64, u64)>,
    h: HeaderMap,
) -> FsResult<NodeAttr> {
    let ns = ns(&m, &h, a, u, false)?;
    Ok(Json(node_attr(&m.point_read(|db| db.root_node(ns))?)))
}

async fn node(
    State(m): State<Arc<Meta>>,
    Path((a, u, id)): Path<(u64, u64, i64)>,
    h: HeaderMap,
) -> FsResult<NodeAttr> {
    let ns = ns(&m, &h, a, u, false)?;
    Ok(Json(node_attr(&m.point_read(|db| db.node(ns, id))?)))
}

#[derive(Deserialize)]
struct NameQuery {
    name: String,
}

async fn lookup(
    State(m): State<Arc<Meta>>,
    Path((a, u, parent)): Path<(u64, u64, i64)>,
    h: HeaderMap,
    Query(q): Query<NameQuery>,
) -> FsResult<NodeAttr> {
    let ns = ns(&m, &h, a, u, false)?;
    let n = m.point_read(|db| db.lookup(ns, parent, &q.name))?;
    // A small file's bytes come along: a cold read is this one request.
    let layout = match n.kind {
        Kind::File if n.size <= INLINE_MAX => Some(m.file_layout(&n)?),
        _ => None,
    }
    .filter(|l| l.fragments.iter().all(|f| f.object.data.is_some()));
    Ok(Json(NodeAttr {
        layout: layout.map(Box::new),
        ..node_attr(&n)
    }))
}

async fn children(
    State(m): State<Arc<Meta>>,
    Path((a, u, id)): Path<(u64, u64, i64)>,
    h: HeaderMap,
) -> FsResult<Vec<NodeAttr>> {
    let ns = ns(&m, &h, a, u, false)?;
    Ok(Json(
        m.store(|db| db.children(ns, id))?
            .iter()
            .map(node_attr)
            .collect(),
    ))
}

async fn layout(
    State(m): State<Arc<Meta>>,
    Path((a, u, id)): Path<(u64, u64, i64)>,
    h: HeaderMap,
) -> FsResult<FileLayout> {
    let ns = ns(&m, &h, a, u, false)?;
    let node = m.point_read(|db| db.node(ns, id))?;
    if node.kind != Kind::File {
        return Err(DbError::IsDir.into());
    }
    Ok(Json(m.file_layout(&node)?))
}

/// Most ids one request reserves.
const IDS_MAX: u32 = 65_536;

/// Node ids for the files a mount makes at their first commit.
async fn reserve_ids(
    State(m): State<Arc<Meta>>,
    Path((a, u)): Path<(u64, u64)>,
    h: HeaderMap,
    b: Result<Json<IdsRequest>, JsonRejection>,
) -> FsResult<IdRange> {
    let ns = ns(&m, &h, a, u, true)?;
    let r = body(b)?;
    if r.count == 0 || r.count > IDS_MAX {
        return Err(FsFail(
            StatusCode::BAD_REQUEST,
            "EINVAL",
            format!("count is 1 to {IDS_MAX}"),
        ));
    }
    let (low, high) = m.store(|db| db.reserve_ids(ns, r.count))?;
    Ok(Json(IdRange { low, high }))
}

async fn make(
    State(m): State<Arc<Meta>>,
    Path((a, u)): Path<(u64, u64)>,
    h: HeaderMap,
    b: Result<Json<MakeRequest>, JsonRejection>,
) -> FsResult<NodeAttr> {
    let ns = ns(&m, &h, a, u, true)?;
    let r = body(b)?;
    let kind = match r.kind {
        NodeKind::Dir => Kind::Dir,
        NodeKind::File => Kind::File,
        NodeKind::Symlink => Kind::Symlink,
        NodeKind::Fifo => Kind::Fifo,
        NodeKind::Socket => Kind::Socket,
        NodeKind::CharDevice => Kind::CharDevice,
        NodeKind::BlockDevice => Kind::BlockDevice,
    };
    if (kind == Kind::Symlink) != r.target.is_some() {
        return Err(FsFail(
            StatusCode::BAD_REQUEST,
            "EINVAL",
            "a symlink, and only a symlink, has a target".into(),
        ));
    }
    let new = NewNode {
        id: r.id,
        kind,
        mode: r.mode,
        umask: r.umask,
        owner: r.uid,
        group: r.gid,
        target: r.target.as_deref(),
        rdev: match kind {
            Kind::CharDevice | Kind::BlockDevice => r.rdev,
            _ => 0,
        },
    };
    let (made, change) = m.point_write(|db| db.make(ns, r.parent, &r.name, &new))?;
    Ok(Json(NodeAttr {
        dir_change: Some(change),
        ..node_attr(&made)
    }))
}

async fn remove(
    State(m): State<Arc<Meta>>,
    Path((a, u)): Path<(u64, u64)>,
    h: HeaderMap,
    b: Result<Json<RemoveRequest>, JsonRejection>,
) -> FsResult<DirChange> {
    let ns = ns(&m, &h, a, u, true)?;
    let r = body(b)?;
    Ok(Json(m.point_write(|db| {
        db.unlink(ns, r.parent, &r.name, r.dir)
    })?))
}

async fn rename(
    State(m): State<Arc<Meta>>,
    Path((a, u)): Path<(u64, u64)>,
    h: HeaderMap,
    b: Result<Json<RenameRequest>, JsonRejection>,
) -> FsResult<()> {
    let ns = ns(&m, &h, a, u, true)?;
    let r = body(b)?;
    m.point_write(|db| {
        db.rename_at(
            ns,
            r.parent,
            &r.name,
            r.new_parent,
            &r.new_name,
            r.noreplace,
            r.exchange,
        )
    })?;
    Ok(Json(()))
}

async fn link(
    State(m): State<Arc<Meta>>,
    Path((a, u)): Path<(u64, u64)>,
    h: HeaderMap,
    b: Result<Json<LinkRequest>, JsonRejection>,
) -> FsResult<NodeAttr> {
    let ns = ns(&m, &h, a, u, true)?;
    let r = body(b)?;
    Ok(Json(node_attr(&m.point_write(|db| {
        db.link(ns, r.id, r.new_parent, &r.new_name)
    })?)))
}

async fn xattr(
    State(m): State<Arc<Meta>>,
    Path((a, u, id)): Path<(u64, u64, i64)>,
    h: HeaderMap,
    Query(q): Query<NameQuery>,
) -> FsResult<XattrValue> {
    let ns = ns(&m, &h, a, u, false)?;
    let value = m.point_read(|db| db.xattr(ns, id, &q.name))?;
    Ok(Json(XattrValue {
        value: B64.encode(value),
    }))
}

async fn xattr_names(
    State(m): State<Arc<Meta>>,
    Path((a, u, id)): Path<(u64, u64, i64)>,
    h: HeaderMap,
) -> FsResult<Vec<String>> {
    let ns = ns(&m, &h, a, u, false)?;
    Ok(Json(m.point_read(|db| db.xattr_names(ns, id))?))
}

/// Linux's limit on one value.
const XATTR_SIZE_MAX: usize = 64 << 10;

async fn setxattr(
    State(m): State<Arc<Meta>>,
    Path((a, u)): Path<(u64, u64)>,
    h: HeaderMap,
    b: Result<Json<SetXattrRequest>, JsonRejection>,
) -> FsResult<()> {
    let ns = ns(&m, &h, a, u, true)?;
    let r = body(b)?;
    let value = B64
        .decode(&r.value)
        .map_err(|e| FsFail(StatusCode::BAD_REQUEST, "EINVAL", format!("value: {e}")))?;
    if value.len() > XATTR_SIZE_MAX {
        return Err(FsFail(
            StatusCode::PAYLOAD_TOO_LARGE,
            "E2BIG",
            format!("a value holds at most {XATTR_SIZE_MAX} bytes"),
        ));
    }
    m.store(|db| db.set_xattr(ns, r.id, &r.name, &value, r.how))?;
    Ok(Json(()))
}

async fn removexattr(
    State(m): State<Arc<Meta>>,
    Path((a, u)): Path<(u64, u64)>,
    h: HeaderMap,
    b: Result<Json<RemoveXattrRequest>, JsonRejection>,
) -> FsResult<()> {
    let ns = ns(&m, &h, a, u, true)?;
    let r = body(b)?;
    m.store(|db| db.remove_xattr(ns, r.id, &r.name))?;
    Ok(Json(()))
}

async fn setattr(
    State(m): State<Arc<Meta>>,
    Path((a, u)): Path<(u64, u64)>,
    h: HeaderMap,
    b: Result<Json<SetAttrRequest>, JsonRejection>,
) -> FsResult<NodeAttr> {
    let ns = ns(&m, &h, a, u, true)?;
    let r = body(b)?;
    Ok(Json(node_attr(
        &m.point_write(|db| db.set_attrs(ns, r.id, &r.attrs))?,
    )))
}

async fn statfs(
    State(m): State<Arc<Meta>>,
    Path((a, u)): Path<(u64, u64)>,
    h: HeaderMap,
) -> FsResult<FsStats> {
    let ns = ns(&m, &h, a, u, false)?;
    let (used, files) = m.store(|db| db.usage(ns))?;
    let capacity = m.capacity(ns)?;
    Ok(Json(FsStats {
        capacity,
        used,
        files,
    }))
}
