//! Serving HTTP for every server of tfsfs (metadata, provider, sidecar):
//! HTTP/1.1 over hyper with timeouts and a cap on open connections, so slow
//! or idle clients cannot take the server's file descriptors or tasks.
//!
//! - A request's head must arrive within `header_read`; hyper starts that
//!   timer whenever a connection waits for a request, so it also closes
//!   keep-alive connections idle that long.
//! - A request body that sends nothing for `body_read` fails; the answer is
//!   408 and the connection is closed.
//! - Open connections are capped below RLIMIT_NOFILE (one process-wide
//!   count: the embedded cluster runs several servers in one process). At
//!   the cap, the connection idle longest (no request in flight) is closed
//!   to make room; with none idle, new clients wait in the listen backlog.
//! - Nagle's algorithm is off: with it, a response written in two pieces
//!   waited for the peer's delayed acknowledgement.
//!
//! Handlers see the peer's address as `ConnectInfo<SocketAddr>`; every
//! request is recorded in the process's metrics under the server's labels.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use ::metrics::Label;
use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, State};
use axum::http::{header, Method, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tower_http::timeout::{TimeoutBody, TimeoutError};

#[derive(Debug, Clone, Copy)]
pub struct ServeConfig {
    /// Time to receive a request's head, and to wait idle for the next one.
    pub header_read: Duration,
    /// Longest wait for the next piece of a request body.
    pub body_read: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            header_read: Duration::from_secs(10),
            body_read: Duration::from_secs(30),
        }
    }
}

/// Serves `app` with the default timeouts; `labels` name the server in
/// the metrics (see `crate::metrics::service`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    labels: Vec<Label>,
) -> std::io::Result<()> {
    serve_with(listener, app, ServeConfig::default(), labels).await
}

pub async fn serve_with(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    cfg: ServeConfig,
    labels: Vec<Label>,
) -> std::io::Result<()> {
    let app = app.layer(axum::middleware::from_fn_with_state(
        Arc::new(labels),
        record,
    ));
    loop {
        CONNECTIONS.make_room().await;
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors or a connection reset before accept:
                // wait a little rather than spin.
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let conn = CONNECTIONS.admit();
        tokio::spawn(serve_connection(tcp, peer, app.clone(), cfg, conn));
    }
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    app: axum::Router,
    cfg: ServeConfig,
    conn: Admitted,
) {
    let state = conn.state.clone();
    let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let busy = Busy::new(state.clone());
        let stalled = Arc::new(AtomicBool::new(false));
        let flag = stalled.clone();
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(ConnectInfo(peer));
        let body = TimeoutBody::new(cfg.body_read, body).map_err(move |e| {
            if e.is::<TimeoutError>() {
                flag.store(true, Ordering::Relaxed);
            }
            e
        });
        let req = Request::from_parts(parts, Body::new(body));
        let app = app.clone();
        async move {
            let Ok(mut res) = app.oneshot(req).await;
            if stalled.load(Ordering::Relaxed) {
                res = (
                    StatusCode::REQUEST_TIMEOUT,
                    [(header::CONNECTION, "close")],
                    "the request body stalled",
                )
                    .into_response();
            }
            // The request counts as in flight until its answer is sent.
            Ok::<_, std::convert::Infallible>(res.map(|b| {
                b.map_frame(move |f| {
                    let _ = &busy;
                    f
                })
            }))
        }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read);
    let served = http.serve_connection(TokioIo::new(tcp), svc);
    tokio::select! {
        r = served => if let Err(e) = r {
            tracing::debug!(%peer, error = %e, "connection ended");
        },
        // Dropping the connection closes the socket.
        _ = conn.state.shed.cancelled() => tracing::debug!(%peer, "idle connection shed"),
    }
}

/// Path prefixes of the REST front ends, which route by hand (no route
/// template): their requests are labelled `PREFIX*`.
const HAND_ROUTED: &[&str] = &["/v1/", "/v2/"];

/// Records a request: its count and duration (until the answer's body is
/// sent or dropped) by method, route template and status, and the body
/// bytes it brought and took. Raw paths never become labels: they name
/// accounts' files, and would make series without bound.
async fn record(State(server): State<Arc<Vec<Label>>>, req: Request<Body>, next: Next) -> Response {
    let started = Instant::now();
    let route = match req.extensions().get::<MatchedPath>() {
        Some(p) => p.as_str().to_string(),
        None => HAND_ROUTED
            .iter()
            .find(|prefix| req.uri().path().starts_with(*prefix))
            .map_or_else(|| "unmatched".to_string(), |prefix| format!("{prefix}*")),
    };
    // Extension methods are the client's choice: kept out of labels too.
    let method = match *req.method() {
        Method::GET
        | Method::HEAD
        | Method::PUT
        | Method::POST
        | Method::DELETE
        | Method::PATCH
        | Method::OPTIONS => req.method().as_str().to_string(),
        _ => "other".to_string(),
    };
    let mut labels: Vec<Label> = server
        .iter()
        .cloned()
        .chain([Label::new("method", method), Label::new("route", route)])
        .collect();
    let bytes_in = ::metrics::counter!(crate::metrics::HTTP_BYTES_IN, labels.clone());
    let bytes_out = ::metrics::counter!(crate::metrics::HTTP_BYTES_OUT, labels.clone());
    let req = req.map(|inner| {
        Body::new(Metered {
            inner,
            bytes: bytes_in,
            _answered: None,
        })
    });
    let res = next.run(req).await;
    labels.push(Label::new("status", res.status().as_str().to_string()));
    let answered = Some(Answered { labels, started });
    res.map(|inner| {
        Body::new(Metered {
            inner,
            bytes: bytes_out,
            _answered: answered,
        })
    })
}

/// A body that counts its bytes as they pass, and keeps its size hint (from
/// which the router sets `Content-Length`).
struct Metered {
    inner: Body,
    bytes: ::metrics::Counter,
    /// Held until the body is sent or dropped.
    _answered: Option<Answered>,
}

impl hyper::body::Body for Metered {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(d) = frame.data_ref() {
                self.bytes.increment(d.len() as u64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A request answered; counted once its body is gone.
struct Answered {
    labels: Vec<Label>,
    started: Instant,
}

impl Drop for Answered {
    fn drop(&mut self) {
        let labels = std::mem::take(&mut self.labels);
        ::metrics::counter!(crate::metrics::HTTP_REQUESTS, labels.clone()).increment(1);
        ::metrics::histogram!(crate::metrics::HTTP_SECONDS, labels).record(self.started.elapsed());
    }
}

/// One open connection.
struct ConnState {
    in_flight: AtomicUsize,
    /// When the connection last became idle (or was opened).
    idle_since: Mutex<Instant>,
    shed: CancellationToken,
}

/// A request in flight on a connection.
struct Busy(Arc<ConnState>);

impl Busy {
    fn new(state: Arc<ConnState>) -> Self {
        state.in_flight.fetch_add(1, Ordering::SeqCst);
        Busy(state)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            CONNECTIONS.changed.notify_waiters();
        }
    }
}

/// The process's open connections.
struct Connections {
    open: Mutex<HashMap<u64, Arc<ConnState>>>,
    next_id: AtomicU64,
    cap: usize,
    /// Signalled when a connection closes or becomes idle.
    changed: tokio::sync::Notify,
}

static CONNECTIONS: LazyLock<Connections> = LazyLock::new(|| Connections {
    open: Mutex::new(HashMap::new()),
    next_id: AtomicU64::new(0),
    cap: connection_cap(),
    changed: tokio::sync::Notify::new(),
});

/// Three quarters of the soft RLIMIT_NOFILE: the rest is left for the
/// store, outgoing connections to providers and spooled bodies.
fn connection_cap() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur.min(1 << 20) as usize
    } else {
        1024
    };
    (soft / 4 * 3).max(16)
}

/// A connection's place in the count; given back when dropped.
struct Admitted {
    id: u64,
    state: Arc<ConnState>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        CONNECTIONS.lock().remove(&self.id);
        CONNECTIONS.changed.notify_waiters();
    }
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnState>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Returns once a connection may be accepted: below the cap, or after
    /// shedding the connection idle longest.
    async fn make_room(&self) {
        loop {
            let changed = self.changed.notified();
            {
                let open = self.lock();
                if open.len() < self.cap {
                    return;
                }
                let idle = open
                    .values()
                    .filter(|c| c.in_flight.load(Ordering::SeqCst) == 0 && !c.shed.is_cancelled())
                    .min_by_key(|c| *c.idle_since.lock().unwrap_or_else(|p| p.into_inner()));
                if let Some(c) = idle {
                    // Its slot is free once its task has closed it.
                    c.shed.cancel();
                }
            }
            changed.await;
        }
    }

    fn admit(&self) -> Admitted {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            shed: CancellationToken::new(),
        });
        self.lock().insert(id, state.clone());
        Admitted { id, state }
    }
}
