//! Serving HTTP: every server of tfsfs (metadata, provider, sidecar) answers
//! small requests, so Nagle's algorithm is turned off on each connection:
//! with it, a response written in two pieces waited for the peer's delayed
//! acknowledgement (half a millisecond a request on loopback).

use axum::serve::ListenerExt;

pub async fn serve(listener: tokio::net::TcpListener, app: axum::Router) -> std::io::Result<()> {
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    // The peer's address, for handlers that ask (ConnectInfo).
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .await
}
