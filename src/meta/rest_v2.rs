//! The TFS v2 REST API (custom file names in an appid/uid namespace), as
//! `tfs-rest-api.md` documents it, with nginx-tfs's rules for names.
//! Paths are parsed by hand: TFS paths fold empty segments and may be empty
//! after `/dir/`, which a pattern router would not accept.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use futures::StreamExt;

use super::path::TfsPath;
use super::store::{Kind, Node, Ns};
use super::{Meta, MetaError, MetaResult};
use crate::proto::TfsEntry;
use crate::transfer::{read_range, TransferError};

pub const MOVE_SOURCE_HEADER: &str = "x-ali-move-source";

pub fn routes(meta: Arc<Meta>) -> Router {
    Router::new().fallback(dispatch).with_state(meta)
}

async fn dispatch(
    State(m): State<Arc<Meta>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let path = uri.path();
    // The drive's API keeps its own answers; every other path is TFS's, as
    // behind nginx-tfs's `location / { tfs_pass ...; }`.
    if path.starts_with("/api/") {
        return MetaError::NotFound(format!("no route {path}")).into_response();
    }
    let result = if let Some(rest) = path.strip_prefix("/v1/") {
        super::rest_v1::v1(&m, &method, rest, uri.query(), body).await
    } else if let Some(rest) = path.strip_prefix("/v2/") {
        v2(&m, &method, rest, uri.query(), &headers, body).await
    } else {
        // nginx-tfs: a URI it cannot parse is a bad request.
        Err(MetaError::BadRequest(format!(
            "no TFS route {path}: TFS paths start with /v1/ or /v2/"
        )))
    };
    result.unwrap_or_else(MetaError::into_tfs_response)
}

/// The `Content-Type` of a file read: the MIME type of the name's suffix
/// (what follows its last dot; `mime_guess` agrees with nginx's
/// `mime.types` on the common ones), else nginx's `default_type`,
/// `application/octet-stream`.
pub(super) fn content_type(name: &str) -> &'static str {
    name.rsplit_once('.')
        .and_then(|(_, ext)| mime_guess::from_ext(ext).first_raw())
        .unwrap_or("application/octet-stream")
}

/// TFS's ids: non-zero decimal integers of at most 19 digits.
fn parse_id(s: &str, what: &str) -> MetaResult<u64> {
    let ok = !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit());
    match s.parse::<u64>() {
        Ok(v) if ok && v > 0 => Ok(v),
        _ => Err(MetaError::BadRequest(format!(
            "{what} must be a non-zero decimal of at most 19 digits"
        ))),
    }
}

struct Params(HashMap<String, String>);

impl Params {
    fn parse(query: Option<&str>) -> MetaResult<Self> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
            .map_err(|_| MetaError::BadRequest("malformed query string".into()))?;
        Ok(Params(pairs.into_iter().collect()))
    }

    fn flag(&self, name: &str) -> MetaResult<bool> {
        match self.0.get(name).map(String::as_str) {
            None | Some("0") => Ok(false),
            Some("1") => Ok(true),
            Some(_) => Err(MetaError::BadRequest(format!("{name} must be 0 or 1"))),
        }
    }

    /// A non-negative integer; TFS's offsets and sizes are signed 64-bit.
    fn number(&self, name: &str) -> MetaResult<Option<u64>> {
        self.0
            .get(name)
            .map(|v| match v.parse::<u64>() {
                Ok(n) if n <= i64::MAX as u64 => Ok(n),
                _ => Err(MetaError::BadRequest(format!(
                    "{name} must be an integer from 0 to {}",
                    i64::MAX
                ))),
            })
            .transpose()
    }

    /// `size`: absent, or at least 1.
    fn size(&self) -> MetaResult<Option<u64>> {
        match self.number("size")? {
            Some(0) => Err(MetaError::BadRequest("size must be at least 1".into())),
            s => Ok(s),
        }
    }
}

/// TFS's time format: `Wed, 27 Jun 2012 10:32:04 UTC+0800`, in local time.
pub fn tfs_time(unix: i64) -> String {
    use chrono::TimeZone;
    chrono::Local
        .timestamp_opt(unix, 0)
        .single()
        .map(|t| t.format("%a, %d %b %Y %H:%M:%S UTC%z").to_string())
        .unwrap_or_default()
}

/// A file's PID is its parent's id with the top bit set, as TFS prints it.
fn file_pid(parent: i64) -> i64 {
    parent | i64::MIN
}

fn entry(n: &Node, name: String) -> TfsEntry {
    let is_file = n.kind == Kind::File;
    TfsEntry {
        name,
        pid: if is_file {
            file_pid(n.parent)
        } else {
            n.parent
        },
        id: if is_file { 0 } else { n.id },
        size: n.size,
        is_file,
        create_time: tfs_time(n.create_time),
        modify_time: tfs_time(n.modify_time),
        ver_no: n.ver_no,
    }
}

async fn v2(
    m: &Meta,
    method: &Method,
    rest: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> MetaResult<Response> {
    let (appkey, rest) = rest
        .split_once('/')
        .ok_or_else(|| MetaError::BadRequest("a v2 path is /v2/{appkey}/appid or longer".into()))?;
    if rest == "appid" {
        if method != Method::GET {
            return Err(MetaError::BadRequest("GET the appid".into()));
        }
        // The document's answer to an app the RcServer does not know.
        let Ok(appid) = m.app(appkey) else {
            return Ok(super::nginx_error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "login failed: no app has this appkey",
            ));
        };
        return Ok(Json(serde_json::json!({ "APP_ID": appid.to_string() })).into_response());
    }
    let (listing, rest) = match rest.strip_prefix("metadata/") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let mut parts = rest.splitn(3, '/');
    let appid = parse_id(parts.next().unwrap_or(""), "appid")?;
    let uid = parse_id(parts.next().unwrap_or(""), "uid")?;
    let tail = parts.next().unwrap_or("");
    let (what, raw_path) = match tail.split_once('/') {
        Some((w, _)) => (w, &tail[w.len()..]),
        None => (tail, ""),
    };
    let is_dir = match what {
        "dir" => true,
        "file" => false,
        _ => {
            return Err(MetaError::BadRequest(format!(
                "{what:?} is neither dir nor file"
            )))
        }
    };
    let read_only = *method == Method::GET || *method == Method::HEAD;
    m.authorize(appkey, appid, !read_only)?;
    let ns = Ns { appid, uid };
    let path = TfsPath::parse_encoded(raw_path)?;
    let q = Params::parse(query)?;
    let kind = if is_dir { Kind::Dir } else { Kind::File };
    match (listing, method.clone()) {
        (true, Method::GET) if is_dir => {
            let (_, children) = m.store(|db| db.list(ns, &path))?;
            let list: Vec<TfsEntry> = children.iter().map(|c| entry(c, c.name.clone())).collect();
            Ok(Json(list).into_response())
        }
        (true, Method::GET) => {
            let node = m.store(|db| db.stat(ns, &path))?;
            if node.kind != Kind::File {
                return Err(MetaError::NotFound(format!("{path} is not a file")));
            }
            let mut e = entry(&node, path.to_string());
            e.pid = node.parent;
            Ok(Json(e).into_response())
        }
        (true, _) => Err(MetaError::BadRequest("metadata is read with GET".into())),
        (false, Method::HEAD) => {
            let node = m.store(|db| db.stat(ns, &path))?;
            if node.kind != kind {
                return Err(MetaError::NotFound(format!("{path} does not exist")));
            }
            Ok(StatusCode::OK.into_response())
        }
        (false, Method::POST) => match headers.get(MOVE_SOURCE_HEADER) {
            Some(src) => {
                let src = src
                    .to_str()
                    .map_err(|_| MetaError::BadRequest("bad move source header".into()))?;
                let src = TfsPath::parse_encoded(src)?;
                let (recursive, overwrite) = (q.flag("recursive")?, q.flag("overwrite")?);
                m.store(|db| db.rename(ns, &src, &path, kind, recursive, overwrite))?;
                Ok(StatusCode::OK.into_response())
            }
            None => {
                let recursive = q.flag("recursive")?;
                m.store(|db| db.create(ns, &path, kind, recursive))?;
                Ok(StatusCode::CREATED.into_response())
            }
        },
        (false, Method::DELETE) => {
            m.store(|db| db.remove(ns, &path, kind))?;
            Ok(StatusCode::OK.into_response())
        }
        (false, Method::PUT) if !is_dir => write(m, ns, &path, &q, body).await,
        // nginx-tfs refuses ranges: parts are read with offset and size.
        (false, Method::GET) if !is_dir && headers.contains_key(header::RANGE) => Err(
            MetaError::BadRequest("Range is not taken: read parts with offset and size".into()),
        ),
        (false, Method::GET) if !is_dir => read(m, ns, &path, &q).await,
        _ => Err(MetaError::BadRequest(format!(
            "{method} is not a {what} operation"
        ))),
    }
}

async fn write(m: &Meta, ns: Ns, path: &TfsPath, q: &Params, body: Body) -> MetaResult<Response> {
    let offset = q.number("offset")?;
    let size = q.size()?;
    let too_big =
        || MetaError::BadRequest(format!("a file is at most {} bytes", m.cfg.max_file_size));
    // Refused before a byte of the body is read.
    if offset.is_some_and(|o| o >= m.cfg.max_file_size) {
        return Err(too_big());
    }
    let data = m.spool(body, size, m.cfg.max_body as u64).await?;
    if let Some(s) = size.filter(|&s| s > data.size) {
        return Err(MetaError::BadRequest(format!(
            "size {s} is larger than the {} bytes sent",
            data.size
        )));
    }
    if data.size == 0 {
        return Err(MetaError::BadRequest("nothing to write".into()));
    }
    let node = m.store(|db| db.stat(ns, path))?;
    if node.kind != Kind::File {
        return Err(MetaError::NotFound(format!("{path} is not a file")));
    }
    // An append lands at the end of the file.
    if offset.unwrap_or(node.size).saturating_add(data.size) > m.cfg.max_file_size {
        return Err(too_big());
    }
    let object = m.store_object(ns, &data).await?;
    m.store(|db| db.add_fragment(ns, path, offset, data.size, object))?;
    Ok(StatusCode::OK.into_response())
}

/// A read is sent in windows of at most this many bytes (ending on multiples
/// of it), so a large or sparse file streams instead of sitting in memory.
const READ_WINDOW: u64 = 32 << 20;

fn read_error(e: TransferError) -> MetaError {
    match e {
        TransferError::NeedKey => {
            MetaError::Forbidden("the file is encrypted: read it with its owner's client".into())
        }
        e => MetaError::Internal(e.to_string()),
    }
}

async fn read(m: &Meta, ns: Ns, path: &TfsPath, q: &Params) -> MetaResult<Response> {
    let node = m.store(|db| db.stat(ns, path))?;
    if node.kind != Kind::File {
        return Err(MetaError::NotFound(format!("{path} is not a file")));
    }
    let offset = q.number("offset")?.unwrap_or(0);
    let size = q.size()?.unwrap_or(u64::MAX);
    let end = offset.saturating_add(size).min(node.size).max(offset);
    let window_end = move |at: u64| end.min((at / READ_WINDOW + 1).saturating_mul(READ_WINDOW));
    let layout = m.file_layout(&node)?;
    // The first window is read before answering, so its errors get a status.
    let first_end = window_end(offset);
    let first = read_range(&m.shards, &layout, None, offset, first_end - offset)
        .await
        .map_err(read_error)?;
    let headers = [
        (
            header::CONTENT_TYPE,
            content_type(path.name().unwrap_or_default()).to_string(),
        ),
        (header::CONTENT_LENGTH, (end - offset).to_string()),
    ];
    if first_end == end {
        return Ok((headers, first).into_response());
    }
    let rest = futures::stream::try_unfold(
        (first_end, m.shards.clone(), layout),
        move |(at, shards, layout)| async move {
            if at >= end {
                return Ok(None);
            }
            let to = window_end(at);
            let data = read_range(&shards, &layout, None, at, to - at)
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            Ok(Some((Bytes::from(data), (to, shards, layout))))
        },
    );
    let first = futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(first)) });
    Ok((headers, Body::from_stream(first.chain(rest))).into_response())
}
