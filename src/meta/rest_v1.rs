//! The TFS v1 REST API ("原生TFS" in `tfs-rest-api.md`): files without a
//! path, named by TFS file names (see `tfs_name`), with nginx-tfs's rules for
//! arguments. The bytes are stored, unencrypted, as objects of the app's
//! uid-0 namespace (v2 uids are never 0), through the same codec and
//! providers as every other file.
//!
//! Suffixes work as in TFS, where the file id on the data server carries the
//! hash of the suffix given at write: a request's suffix is its `suffix`
//! argument, else what follows the 18 characters of the name. A request with
//! a suffix reaches the file only if it is the stored suffix; one without
//! reaches it only if the hash encoded in the name is the stored suffix's
//! (so a `simple_name` file, whose name encodes no hash, needs its suffix).
//! A suffix argument that disagrees with the name's suffix is a bad request,
//! as in nginx-tfs. A file of another app is not found.

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{header, HeaderName, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::objects::Spooled;
use super::rest_v2::{content_type, tfs_time};
use super::store::{NewV1File, Ns, V1File, V1Unlink, V1_FILE_HEADER};
use super::tfs_name::{suffix_hash, FileBits, TfsName, MAX_SUFFIX_LEN};
use super::{Meta, MetaError, MetaResult};
use crate::proto::{FileLayout, FragmentLayout};
use crate::transfer::read_range;

/// The cluster digit of the names this server gives out.
pub const CLUSTER_ID: u8 = 1;

/// The uid of the namespace that holds an app's v1 objects.
const V1_UID: u64 = 0;

/// nginx-tfs's `NGX_HTTP_TFS_MAX_FILE_NAME_LEN`.
const MAX_NAME_LEN: usize = 256;

fn bad(msg: impl Into<String>) -> MetaError {
    MetaError::BadRequest(msg.into())
}

fn not_found() -> MetaError {
    MetaError::NotFound("no such TFS file".into())
}

struct Args(HashMap<String, String>);

impl Args {
    fn parse(query: Option<&str>) -> MetaResult<Self> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
            .map_err(|_| bad("malformed query string"))?;
        Ok(Args(pairs.into_iter().collect()))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A one-digit argument among `allowed`, as nginx-tfs takes them.
    fn digit(&self, name: &str, allowed: &[u8]) -> MetaResult<Option<u8>> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => match v.as_bytes() {
                [d] if d.is_ascii_digit() && allowed.contains(&(d - b'0')) => Ok(Some(d - b'0')),
                _ => Err(bad(format!("{name} must be one of {allowed:?}"))),
            },
        }
    }

    fn flag(&self, name: &str) -> MetaResult<bool> {
        Ok(self.digit(name, &[0, 1])? == Some(1))
    }

    /// A non-negative integer; TFS's offsets and sizes are signed 64-bit.
    fn number(&self, name: &str) -> MetaResult<Option<u64>> {
        self.get(name)
            .map(|v| match v.parse::<u64>() {
                Ok(n) if n <= i64::MAX as u64 => Ok(n),
                _ => Err(bad(format!(
                    "{name} must be an integer from 0 to {}",
                    i64::MAX
                ))),
            })
            .transpose()
    }

    /// The `suffix` argument, if given and not empty.
    fn suffix(&self) -> MetaResult<Option<&str>> {
        match self.get("suffix") {
            Some(s) if s.len() > MAX_SUFFIX_LEN => {
                Err(bad(format!("a suffix is at most {MAX_SUFFIX_LEN} bytes")))
            }
            Some("") | None => Ok(None),
            Some(s) => Ok(Some(s)),
        }
    }
}

/// A TFS file name in a request, with the suffix the request gives.
struct Target {
    name: TfsName,
    suffix: String,
}

impl Target {
    fn parse(raw: &str, args: &Args) -> MetaResult<Self> {
        let decoded = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| bad("a TFS file name is UTF-8"))?;
        if decoded.is_empty() || decoded.len() > MAX_NAME_LEN {
            return Err(bad(format!("a TFS file name is 1-{MAX_NAME_LEN} bytes")));
        }
        let (name, name_suffix) = TfsName::parse(&decoded).map_err(|e| bad(e.to_string()))?;
        let suffix = match args.suffix()? {
            Some(s) if !name_suffix.is_empty() && s != name_suffix => {
                return Err(bad("the suffix argument differs from the name's suffix"))
            }
            Some(s) => s.to_string(),
            None => name_suffix.to_string(),
        };
        Ok(Target { name, suffix })
    }

    /// The app's file this names, whatever its status.
    fn find(&self, m: &Meta, appid: u64) -> MetaResult<V1File> {
        let bits = self.name.bits;
        let f = m
            .store(|db| db.v1_get(appid, bits.block_id, bits.seq_id))?
            .ok_or_else(not_found)?;
        let suffix_ok = if self.suffix.is_empty() {
            bits.suffix_hash == suffix_hash(f.suffix.as_bytes())
        } else {
            self.suffix == f.suffix
        };
        if self.name.cluster != CLUSTER_ID || self.name.large != f.large || !suffix_ok {
            return Err(not_found());
        }
        Ok(f)
    }
}

/// The name a file was given: its hash encoded, or for a simple name a zero
/// hash and the suffix spelled out.
fn name_of(f: &V1File) -> (TfsName, &str) {
    let (hash, suffix) = if f.simple {
        (0, f.suffix.as_str())
    } else {
        (suffix_hash(f.suffix.as_bytes()), "")
    };
    let name = TfsName {
        large: f.large,
        cluster: CLUSTER_ID,
        bits: FileBits {
            block_id: f.block_id,
            seq_id: f.seq_id,
            suffix_hash: hash,
        },
    };
    (name, suffix)
}

fn full_name(f: &V1File) -> String {
    let (name, suffix) = name_of(f);
    format!("{name}{suffix}")
}

/// TFS's file id: the stored suffix's hash above the sequence id.
fn file_id(f: &V1File) -> u64 {
    FileBits {
        block_id: f.block_id,
        seq_id: f.seq_id,
        suffix_hash: suffix_hash(f.suffix.as_bytes()),
    }
    .file_id()
}

#[derive(Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
struct Stat {
    file_name: String,
    block_id: u32,
    file_id: u64,
    offset: u64,
    size: u64,
    occupy_size: u64,
    modify_time: String,
    create_time: String,
    status: u32,
    crc: u32,
}

fn stat_of(f: &V1File) -> Stat {
    Stat {
        // nginx-tfs prints the 18 characters, without a suffix.
        file_name: name_of(f).0.to_string(),
        block_id: f.block_id,
        file_id: file_id(f),
        offset: f.offset,
        size: f.size,
        occupy_size: f.size + V1_FILE_HEADER,
        modify_time: tfs_time(f.modify_time),
        create_time: tfs_time(f.create_time),
        status: f.status,
        crc: f.crc,
    }
}

fn http_date(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
        .unwrap_or_default()
}

fn file_name_json(f: &V1File) -> Response {
    Json(serde_json::json!({ "TFS_FILE_NAME": full_name(f) })).into_response()
}

/// Serves `/v1/{rest}`.
pub(super) async fn v1(
    m: &Meta,
    method: &Method,
    rest: &str,
    query: Option<&str>,
    body: Body,
) -> MetaResult<Response> {
    let (appkey, tail) = match rest.split_once('/') {
        Some((k, t)) => (k, Some(t)),
        None => (rest, None),
    };
    let appid = m.app(appkey)?;
    let args = Args::parse(query)?;
    let Some(tail) = tail else {
        return match *method {
            Method::POST => write(m, appid, &args, body).await,
            _ => Err(bad(format!("{method} /v1/{{appkey}} is not an operation"))),
        };
    };
    if let Some(name) = tail.strip_prefix("metadata/") {
        let t = Target::parse(name, &args)?;
        return match *method {
            Method::GET | Method::HEAD => stat(m, appid, &t, &args, *method == Method::HEAD),
            _ => Err(bad(format!("{method} is not a metadata operation"))),
        };
    }
    let t = Target::parse(tail, &args)?;
    match *method {
        Method::GET | Method::HEAD => read(m, appid, &t, &args, *method == Method::HEAD).await,
        Method::PUT => update(m, appid, &t, &args, body).await,
        Method::DELETE => unlink(m, appid, &t, &args),
        _ => Err(bad(format!("{method} is not a TFS file operation"))),
    }
}

/// The request's bytes, spooled: a TFS file is one body.
async fn body_of(m: &Meta, body: Body) -> MetaResult<Spooled> {
    let limit = (m.cfg.max_body as u64).min(m.cfg.max_file_size);
    let body = m.spool(body, None, limit).await?;
    if body.size == 0 {
        return Err(bad("nothing to write"));
    }
    Ok(body)
}

async fn write(m: &Meta, appid: u64, args: &Args, body: Body) -> MetaResult<Response> {
    let suffix = args.suffix()?.unwrap_or("");
    let simple = args.flag("simple_name")?;
    let large = args.flag("large_file")?;
    let body = body_of(m, body).await?;
    let object = m.store_object(Ns { appid, uid: V1_UID }, &body).await?;
    let f = m.store(|db| {
        db.v1_create(&NewV1File {
            appid,
            large,
            suffix,
            simple,
            object,
            size: body.size,
            crc: body.crc,
        })
    })?;
    Ok(file_name_json(&f))
}

async fn update(m: &Meta, appid: u64, t: &Target, args: &Args, body: Body) -> MetaResult<Response> {
    // nginx-tfs: large files are not updated.
    if args.get("large_file").is_some() || t.name.large {
        return Err(bad("large TFS files cannot be updated"));
    }
    args.flag("simple_name")?;
    let body = body_of(m, body).await?;
    let f = t.find(m, appid)?;
    if f.status != 0 {
        return Err(not_found());
    }
    let object = m.store_object(Ns { appid, uid: V1_UID }, &body).await?;
    let f = m.store(|db| db.v1_update(appid, f.block_id, f.seq_id, object, body.size, body.crc))?;
    Ok(file_name_json(&f))
}

fn unlink(m: &Meta, appid: u64, t: &Target, args: &Args) -> MetaResult<Response> {
    let mut op = match args.digit("hide", &[0, 1])? {
        Some(1) => V1Unlink::Hide,
        Some(_) => V1Unlink::Reveal,
        None => V1Unlink::Delete,
    };
    // nginx-tfs also takes TFS's unlink type: 0 delete, 2 undelete, 4 hide,
    // 6 reveal.
    match args.digit("type", &[0, 2, 4, 6])? {
        Some(0) => op = V1Unlink::Delete,
        Some(2) => op = V1Unlink::Undelete,
        Some(4) => op = V1Unlink::Hide,
        Some(6) => op = V1Unlink::Reveal,
        _ => {}
    }
    if t.name.large && op == V1Unlink::Undelete {
        return Err(bad("large TFS files cannot be undeleted"));
    }
    let f = t.find(m, appid)?;
    m.store(|db| db.v1_unlink(appid, f.block_id, f.seq_id, op))?;
    Ok(StatusCode::OK.into_response())
}

/// The file if the request may see it: `type=1` shows deleted and hidden
/// files too.
fn visible(m: &Meta, appid: u64, t: &Target, args: &Args) -> MetaResult<V1File> {
    let force = args.flag("type")?;
    let f = t.find(m, appid)?;
    if f.status != 0 && !force {
        return Err(not_found());
    }
    Ok(f)
}

/// The headers of a file's read, GET or HEAD: the MIME type of its suffix
/// and its modification time.
fn file_headers(f: &V1File) -> [(HeaderName, String); 2] {
    [
        (header::CONTENT_TYPE, content_type(&f.suffix).to_string()),
        (header::LAST_MODIFIED, http_date(f.modify_time)),
    ]
}

/// HEAD of a file, by its name or its metadata: nginx-tfs answers both with
/// a stat, the file's size as `Content-Length` and no body.
fn head_of(f: &V1File) -> Response {
    (
        file_headers(f),
        [(header::CONTENT_LENGTH, f.size.to_string())],
        (),
    )
        .into_response()
}

fn stat(m: &Meta, appid: u64, t: &Target, args: &Args, head: bool) -> MetaResult<Response> {
    let f = visible(m, appid, t, args)?;
    if head {
        return Ok(head_of(&f));
    }
    Ok(Json(stat_of(&f)).into_response())
}

async fn read(m: &Meta, appid: u64, t: &Target, args: &Args, head: bool) -> MetaResult<Response> {
    let offset = args.number("offset")?.unwrap_or(0);
    let size = match args.number("size")? {
        Some(0) => return Err(bad("size must be at least 1")),
        Some(s) => s,
        None => u64::MAX,
    };
    let f = visible(m, appid, t, args)?;
    if head {
        return Ok(head_of(&f));
    }
    // TFS's data servers refuse a read of a small file starting past its
    // end (nginx-tfs answers 400); one at the end, or of a large file
    // anywhere past it, is 200 with no bytes.
    if offset > f.size && !f.large {
        return Err(bad(format!(
            "offset {offset} is past the end of the {}-byte file",
            f.size
        )));
    }
    let layout = FileLayout {
        size: f.size,
        ver_no: 0,
        fragments: vec![FragmentLayout {
            offset: 0,
            length: f.size,
            key: None,
            object: m.object_layout(&f.object)?,
        }],
    };
    let data = read_range(&m.shards, &layout, None, offset, size)
        .await
        .map_err(|e| MetaError::Internal(e.to_string()))?;
    Ok((file_headers(&f), data).into_response())
}
