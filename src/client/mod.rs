//! HTTP clients: the metadata server (TFS v2 REST and the upload session
//! API) and providers (shards).

pub mod account;
pub mod meta;
pub mod provider;
