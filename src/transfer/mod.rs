//! Moving data: shards to and from providers (with spares, parity
//! fallback and hedging), whole uploads and downloads, and the progress
//! registry every transfer reports to.

mod download;
mod fetch;
pub mod progress;
mod put;
mod upload;

pub use download::download_entry;
pub use fetch::{read_partition, read_range, report_routed_around};
pub use progress::Progress;
pub use put::{put_shards, PutOutcome, ShardJob};
pub use upload::{
    content_matches, upload_file, upload_partitions, Committed, OnSealed, PartitionSpan,
    StoredHash, UploadOptions,
};
pub(crate) use upload::{encode_partitions, Source};

use crate::client::meta::ClientError;
use crate::codec::crypt::CryptError;
use crate::codec::erasure::ErasureError;

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Meta(#[from] ClientError),
    #[error("no provider took shard {sha1}: {last}")]
    NoProvider { sha1: String, last: String },
    #[error("partition {partition} is unreadable: {source} (last error: {last})")]
    Unreadable {
        partition: u64,
        source: ErasureError,
        last: String,
    },
    #[error("file is encrypted and no account key was given")]
    NeedKey,
    #[error("decryption failed: {0}")]
    Crypt(#[from] CryptError),
    #[error("malformed layout: {0}")]
    Layout(String),
    /// A download refused or not verified; the destination is untouched.
    #[error("{0}")]
    Download(String),
    #[error("local file: {0}")]
    Io(#[from] std::io::Error),
}
