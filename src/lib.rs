//! tfsfs: a network drive. Files are encrypted on the client, erasure-coded,
//! and spread over many storage providers; a metadata server owns the TFS v2
//! namespace. See `docs/ARCHITECTURE.md`.

pub mod bench;

/// Locks `m`, taking the data of a holder that panicked: every lock in the
/// crate guards state that stays whole between statements.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub mod client;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod fs;
pub mod fstab;
pub mod fuse;
pub mod grant;
pub mod http;
pub mod meta;
pub mod metrics;
pub mod mount;
pub mod private;
pub mod proto;
pub mod provider;
pub mod sidecar;
pub mod transfer;
