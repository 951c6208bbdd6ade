//! The filesystem core: inodes, handles, staging, the block cache and
//! prefetch. It knows no FUSE types (the adapter in `crate::fuse` is a thin
//! shell) and is generic over its storage client (`Backend`).

mod backend;
mod cache;
mod core;
mod error;
mod memory;
mod staging;
mod xattrs;

pub use backend::{BResult, Backend, RemoteBackend};
pub use core::{Attr, DirEntry, Fs, FsConfig, OpenFlags, Owner, SetAttr, TTL};
pub use error::FsError;
pub use memory::MemoryBackend;
pub use xattrs::XattrReply;
