//! tfsfs: a network drive. Files are encrypted on the client, erasure-coded,
//! and spread over many storage providers; a metadata server owns the TFS v2
//! namespace. See `docs/ARCHITECTURE.md`.

pub mod codec;
pub mod grant;
pub mod proto;
