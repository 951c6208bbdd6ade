//! The sidecar: the client API of `client-api.md`, served by the mount
//! process (default `127.0.0.1:7788`). Every answer is the envelope
//! `{"code":0,"errmsg":"","data":...}` or `{"code":1,"errmsg":"...","data":null}`;
//! a wrong method, an unknown route, a bad JSON body or a missing field is a
//! code-1 answer naming the problem.
//!
//! - `store`: `/store/list upload uploaddir download downloaddir remove
//!   progress folder/add` over the mount's own namespace, transfer code and
//!   progress registry (so `cp` on the mount shows in `/store/progress`).
//! - `account`: `/store/register verifyemail resendemail`, `/order/*` and
//!   `/usage/amount`, passed to the metadata server with the mount's
//!   credentials.
//! - `access`: who may ask (the mount's user and root on loopback, the
//!   token holder off it).

mod access;
mod account;
mod store;

pub use access::{SidecarConfig, Token};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::handler::Handler;
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::client::meta::{ClientError, MetaClient};
use crate::client::provider::ShardClient;
use crate::codec::crypt::AccountKey;
use crate::transfer::{Progress, TransferError, UploadOptions};
use access::Access;

/// What the sidecar works with: the mount's account, clients and progress.
pub struct Sidecar {
    pub meta: MetaClient,
    pub shards: ShardClient,
    /// The account key; none when the mount runs unencrypted.
    pub account: Option<AccountKey>,
    pub progress: Progress,
    pub upload: UploadOptions,
    /// The metadata server's URL as saved with a verified account; empty
    /// for the mount's embedded cluster.
    pub saved_meta_url: String,
    /// The e-mail of the registration `/store/register` started.
    pending_email: Mutex<Option<String>>,
    /// Background transfers that failed, with why.
    failed: Mutex<HashMap<String, String>>,
}

impl Sidecar {
    pub fn new(
        meta: MetaClient,
        shards: ShardClient,
        account: Option<AccountKey>,
        progress: Progress,
        saved_meta_url: String,
    ) -> Self {
        Sidecar {
            meta,
            shards,
            account,
            progress,
            upload: UploadOptions::default(),
            saved_meta_url,
            pending_email: Mutex::new(None),
            failed: Mutex::new(HashMap::new()),
        }
    }

    fn failed(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.failed.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.pending_email.lock().unwrap_or_else(|e| e.into_inner())
    }
}

type Shared = Arc<Sidecar>;

/// A code-0 answer.
pub struct Done(serde_json::Value);

/// A code-1 answer, with the HTTP status to send it with (200 unless the
/// request missed every route or method, or was refused).
pub struct Fail(StatusCode, String);

pub type Answer = Result<Done, Fail>;

fn envelope(code: u8, errmsg: &str, data: serde_json::Value) -> serde_json::Value {
    serde_json::json!({ "code": code, "errmsg": errmsg, "data": data })
}

impl IntoResponse for Done {
    fn into_response(self) -> Response {
        Json(envelope(0, "", self.0)).into_response()
    }
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        (self.0, Json(envelope(1, &self.1, serde_json::Value::Null))).into_response()
    }
}

fn fail(msg: impl Into<String>) -> Fail {
    Fail(StatusCode::OK, msg.into())
}

fn done<T: Serialize>(data: T) -> Answer {
    serde_json::to_value(data)
        .map(Done)
        .map_err(|e| fail(format!("cannot encode the answer: {e}")))
}

/// The message of a metadata server error: its body, which names the
/// problem, or the transport failure.
fn meta_msg(e: &ClientError) -> String {
    match e {
        ClientError::Status { body, .. } if !body.trim().is_empty() => {
            let body = body.trim();
            // The drive's fs routes answer {"error","errno"}.
            match serde_json::from_str::<crate::proto::FsApiError>(body) {
                Ok(f) => f.error,
                Err(_) => body.to_string(),
            }
        }
        e => e.to_string(),
    }
}

impl From<ClientError> for Fail {
    fn from(e: ClientError) -> Self {
        fail(meta_msg(&e))
    }
}

fn transfer_msg(e: &TransferError) -> String {
    match e {
        TransferError::Meta(c) => meta_msg(c),
        e => e.to_string(),
    }
}

/// Parses a JSON request body; an empty body is `{}`. Any content type is
/// taken: the guard refuses browsers' cross-origin requests instead.
fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, Fail> {
    let raw: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(raw).map_err(|e| fail(format!("bad request body: {e}")))
}

/// Parses a query string (`?id=1`).
fn parse_query<T: DeserializeOwned>(q: Option<&str>) -> Result<T, Fail> {
    serde_urlencoded::from_str(q.unwrap_or("")).map_err(|e| fail(format!("bad query: {e}")))
}

async fn wrong_method(method: Method, uri: Uri, want: &'static str) -> Fail {
    Fail(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} takes {want}, not {method}", uri.path()),
    )
}

async fn no_route(uri: Uri) -> Fail {
    Fail(
        StatusCode::NOT_FOUND,
        format!("no route {}: see client-api.md", uri.path()),
    )
}

fn only_post<H, T>(h: H) -> MethodRouter<Shared>
where
    H: Handler<T, Shared>,
    T: 'static,
{
    post(h).fallback(|m: Method, u: Uri| wrong_method(m, u, "POST"))
}

fn only_get<H, T>(h: H) -> MethodRouter<Shared>
where
    H: Handler<T, Shared>,
    T: 'static,
{
    get(h).fallback(|m: Method, u: Uri| wrong_method(m, u, "GET"))
}

pub fn router(state: Shared, access: Access) -> Router {
    Router::new()
        .route("/store/list", only_post(store::list))
        .route("/store/upload", only_post(store::upload))
        .route("/store/uploaddir", only_post(store::uploaddir))
        .route("/store/download", only_post(store::download))
        .route("/store/downloaddir", only_post(store::downloaddir))
        .route("/store/remove", only_post(store::remove))
        .route("/store/progress", only_post(store::progress))
        .route("/store/folder/add", only_post(store::folder_add))
        .route("/store/register", only_post(account::register))
        .route("/store/verifyemail", only_post(account::verify))
        .route("/store/resendemail", only_post(account::resend))
        .route("/order/packages", only_get(account::packages))
        .route("/order/package/get", only_get(account::package))
        .route("/order/package/buy", only_post(account::buy))
        .route("/order/all", only_get(account::orders))
        .route("/order/getinfo", only_get(account::order))
        .route("/usage/amount", only_get(account::usage))
        .fallback(no_route)
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(access),
            guard,
        ))
        .with_state(state)
}

/// Is `host` (a Host header or the host of an Origin) a loopback name?
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn header_str(v: Option<&HeaderValue>) -> Option<&str> {
    v.map(|v| v.to_str().unwrap_or("\u{0}"))
}

/// Refuses what a web page could send: any request with a non-loopback
/// Origin (cross-site requests), and on a loopback listener any request
/// addressed to another host name (DNS rebinding); then anyone `access`
/// does not let in.
async fn guard(State(access): State<Arc<Access>>, req: Request, next: Next) -> Response {
    let h = req.headers();
    if let Some(origin) = header_str(h.get(header::ORIGIN)) {
        let host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .unwrap_or("\u{0}");
        if !loopback_host(host) {
            return Fail(
                StatusCode::FORBIDDEN,
                format!("requests from web pages ({origin}) are refused"),
            )
            .into_response();
        }
    }
    if access.is_loopback() {
        let host = header_str(h.get(header::HOST)).unwrap_or("127.0.0.1");
        if !loopback_host(host) {
            return Fail(
                StatusCode::FORBIDDEN,
                format!("the sidecar answers requests to 127.0.0.1 or localhost, not {host}"),
            )
            .into_response();
        }
    }
    if let Err(f) = access.check(req.extensions().get::<ConnectInfo<SocketAddr>>(), h) {
        return f.into_response();
    }
    next.run(req).await
}

/// Serves the sidecar as `config` says until the process ends.
pub async fn serve(
    config: SidecarConfig,
    state: Sidecar,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let addr = config.addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("sidecar: cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr()?;
    let access = Access::new(local, config.token);
    let who = match (access.is_loopback(), access.has_token()) {
        (true, false) => "for this user and root",
        (true, true) => "for this user and root, with the token",
        (false, _) => "for requests with the token",
    };
    let app = router(Arc::new(state), access);
    eprintln!("tfsfs sidecar listening on http://{local} ({who})");
    Ok(tokio::spawn(async move {
        if let Err(e) = crate::http::serve(listener, app, crate::metrics::service("sidecar")).await
        {
            tracing::error!(error = %e, "sidecar stopped");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::loopback_host;

    #[test]
    fn loopback_hosts() {
        for h in [
            "127.0.0.1:7788",
            "localhost",
            "LOCALHOST:1",
            "[::1]:7788",
            "[::1]",
            "127.1.2.3",
        ] {
            assert!(loopback_host(h), "{h}");
        }
        for h in [
            "evil.com:7788",
            "10.0.0.1:7788",
            "[::2]:1",
            "",
            "localhost.evil.com",
        ] {
            assert!(!loopback_host(h), "{h}");
        }
    }
}
