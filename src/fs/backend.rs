//! What the filesystem core needs from storage, and its implementation over
//! the metadata server and providers. The core is generic over `Backend`,
//! so it can be driven by another client (or a test double) unchanged.

use std::future::Future;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use std::path::Path;
use std::sync::Arc;

use super::FsError;
use crate::client::meta::{ClientError, MetaClient};
use crate::client::provider::ShardClient;
use crate::codec::crypt::{AccountKey, PartitionCipher};
use crate::proto::*;
use crate::transfer::{
    self, Committed, OnSealed, PartitionSpan, Progress, TransferError, UploadOptions,
};

pub type BResult<T> = Result<T, FsError>;

pub trait Backend: Send + Sync + 'static {
    fn root(&self) -> impl Future<Output = BResult<NodeAttr>> + Send;
    fn getattr(&self, id: i64) -> impl Future<Output = BResult<NodeAttr>> + Send;
    fn lookup(&self, parent: i64, name: &str) -> impl Future<Output = BResult<NodeAttr>> + Send;
    fn children(&self, id: i64) -> impl Future<Output = BResult<Vec<NodeAttr>>> + Send;
    /// A new node; its `dir_change` says how the parent changed.
    fn make(&self, req: MakeRequest) -> impl Future<Output = BResult<NodeAttr>> + Send;
    /// Node ids for files this mount names at their first commit
    /// (`upload_new`, or `make` with the id).
    fn reserve_ids(&self, count: u32) -> impl Future<Output = BResult<IdRange>> + Send;
    fn remove(&self, req: RemoveRequest) -> impl Future<Output = BResult<DirChange>> + Send;
    fn rename(&self, req: RenameRequest) -> impl Future<Output = BResult<()>> + Send;
    fn setattr(&self, req: SetAttrRequest) -> impl Future<Output = BResult<NodeAttr>> + Send;
    fn link(&self, req: LinkRequest) -> impl Future<Output = BResult<NodeAttr>> + Send;
    /// Extended attributes: the node's, whichever name it is reached by.
    fn xattr(&self, id: i64, name: &str) -> impl Future<Output = BResult<Vec<u8>>> + Send;
    fn xattr_names(&self, id: i64) -> impl Future<Output = BResult<Vec<String>>> + Send;
    fn set_xattr(
        &self,
        id: i64,
        name: &str,
        value: &[u8],
        how: XattrHow,
    ) -> impl Future<Output = BResult<()>> + Send;
    fn remove_xattr(&self, id: i64, name: &str) -> impl Future<Output = BResult<()>> + Send;
    fn statfs(&self) -> impl Future<Output = BResult<FsStats>> + Send;
    fn layout(&self, id: i64) -> impl Future<Output = BResult<FileLayout>> + Send;
    /// The plaintext of partition `index` of a fragment's object.
    fn read_partition(
        &self,
        frag: &FragmentLayout,
        index: u64,
    ) -> impl Future<Output = BResult<bytes::Bytes>> + Send;
    /// The size of the partitions files are cut into.
    fn partition_size(&self) -> impl Future<Output = BResult<u64>> + Send;
    /// Stores the partitions `spans` of the local file `staged` as objects
    /// of their own; returns their fragments, in order, for `commit`, and
    /// shows `on_sealed` each one's stored bytes first. The bytes count in
    /// the progress registry under `name`, one transfer growing with each
    /// call until the commit.
    fn upload_partitions(
        &self,
        name: &str,
        staged: Arc<std::fs::File>,
        spans: &[PartitionSpan],
        on_sealed: OnSealed<'_>,
    ) -> impl Future<Output = BResult<Vec<CommitFragment>>> + Send;
    /// Makes a list of stored objects the content of a file, if it is
    /// still at the version `req.base_ver` (else `FsError::Conflict`);
    /// the transfer under `name` is then done.
    fn commit(&self, name: &str, req: CommitRequest) -> impl Future<Output = BResult<u64>> + Send;
    /// Uploads the local file `staged` as the new content of node `id` if
    /// the node is still at version `base` (else `FsError::Conflict`);
    /// `name` labels the transfer in the progress registry.
    fn upload(
        &self,
        id: i64,
        name: &str,
        staged: &Path,
        attrs: FileAttrs,
        base: u64,
    ) -> impl Future<Output = BResult<u64>> + Send;
    /// Makes the file `new` with the local file `staged` (at most
    /// `INLINE_MAX` bytes) as its content, in one request; a name in use
    /// is `FsError::Exists`.
    fn upload_new(
        &self,
        new: &NewFile,
        name: &str,
        staged: &Path,
        attrs: FileAttrs,
    ) -> impl Future<Output = BResult<Committed>> + Send;
}

/// The backend of a real mount: the metadata server and providers.
pub struct RemoteBackend {
    pub meta: MetaClient,
    pub shards: ShardClient,
    pub account: Option<AccountKey>,
    pub progress: Progress,
    pub upload: UploadOptions,
}

fn client_error(e: ClientError) -> FsError {
    if let Some(errno) = e.errno() {
        return FsError::from_errno_name(&errno, e.to_string());
    }
    match (&e, e.status().map(|s| s.as_u16())) {
        (ClientError::Conflict, _) => FsError::Conflict,
        (ClientError::Missing(sha1s), _) => FsError::Missing(sha1s.clone()),
        (ClientError::Transport(_), _) => FsError::Unavailable(e.to_string()),
        (_, Some(404)) => FsError::NotFound,
        (_, Some(409)) => FsError::Exists,
        (_, Some(413)) => FsError::Quota(e.to_string()),
        (_, Some(507)) => FsError::NoSpace,
        (_, Some(408 | 429 | 500..=599)) => FsError::Unavailable(e.to_string()),
        _ => FsError::Io(e.to_string()),
    }
}

fn transfer_error(e: TransferError) -> FsError {
    match e {
        TransferError::Meta(c) => client_error(c),
        TransferError::Io(io) => io.into(),
        // No provider took a shard, or the providers changed under the
        // upload: both pass when providers come back.
        TransferError::NoProvider { .. } | TransferError::Layout(_) => {
            FsError::Unavailable(e.to_string())
        }
        e => FsError::Io(e.to_string()),
    }
}

impl Backend for RemoteBackend {
    async fn root(&self) -> BResult<NodeAttr> {
        self.meta.fs_root().await.map_err(client_error)
    }

    async fn getattr(&self, id: i64) -> BResult<NodeAttr> {
        self.meta.fs_node(id).await.map_err(client_error)
    }

    async fn lookup(&self, parent: i64, name: &str) -> BResult<NodeAttr> {
        self.meta
            .fs_lookup(parent, name)
            .await
            .map_err(client_error)
    }

    async fn children(&self, id: i64) -> BResult<Vec<NodeAttr>> {
        self.meta.fs_children(id).await.map_err(client_error)
    }

    async fn make(&self, req: MakeRequest) -> BResult<NodeAttr> {
        self.meta.fs_make(&req).await.map_err(client_error)
    }

    async fn reserve_ids(&self, count: u32) -> BResult<IdRange> {
        self.meta.fs_reserve_ids(count).await.map_err(client_error)
    }

    async fn remove(&self, req: RemoveRequest) -> BResult<DirChange> {
        self.meta.fs_remove(&req).await.map_err(client_error)
    }

    async fn rename(&self, req: RenameRequest) -> BResult<()> {
        self.meta.fs_rename(&req).await.map_err(client_error)
    }

    async fn setattr(&self, req: SetAttrRequest) -> BResult<NodeAttr> {
        self.meta.fs_setattr(&req).await.map_err(client_error)
    }

    async fn link(&self, req: LinkRequest) -> BResult<NodeAttr> {
        self.meta.fs_link(&req).await.map_err(client_error)
    }

    async fn xattr(&self, id: i64, name: &str) -> BResult<Vec<u8>> {
        let v = self.meta.fs_xattr(id, name).await.map_err(client_error)?;
        B64.decode(v.value)
            .map_err(|e| FsError::Io(format!("an xattr value that is not base64: {e}")))
    }

    async fn xattr_names(&self, id: i64) -> BResult<Vec<String>> {
        self.meta.fs_xattr_names(id).await.map_err(client_error)
    }

    async fn set_xattr(&self, id: i64, name: &str, value: &[u8], how: XattrHow) -> BResult<()> {
        let req = SetXattrRequest {
            id,
            name: name.to_string(),
            value: B64.encode(value),
            how,
        };
        self.meta.fs_setxattr(&req).await.map_err(client_error)
    }

    async fn remove_xattr(&self, id: i64, name: &str) -> BResult<()> {
        let req = RemoveXattrRequest {
            id,
            name: name.to_string(),
        };
        self.meta.fs_removexattr(&req).await.map_err(client_error)
    }

    async fn statfs(&self) -> BResult<FsStats> {
        self.meta.fs_statfs().await.map_err(client_error)
    }

    async fn layout(&self, id: i64) -> BResult<FileLayout> {
        self.meta.fs_layout(id).await.map_err(client_error)
    }

    async fn read_partition(&self, frag: &FragmentLayout, index: u64) -> BResult<bytes::Bytes> {
        let cipher = match (&frag.key, &self.account) {
            (None, _) => None,
            (Some(_), None) => return Err(FsError::Access),
            (Some(w), Some(a)) => Some(PartitionCipher::new(
                &a.unwrap(w).map_err(|e| FsError::Io(e.to_string()))?,
            )),
        };
        let data = transfer::read_partition(&self.shards, frag, cipher.as_ref(), index).await;
        transfer::report_routed_around(&self.meta, &self.shards).await;
        data.map_err(transfer_error)
    }

    async fn partition_size(&self) -> BResult<u64> {
        let p = self.meta.policy().await.map_err(client_error)?;
        match p.partition_size {
            0 => Err(FsError::Io(
                "the server announced a zero partition size".into(),
            )),
            size => Ok(size),
        }
    }

    async fn upload_partitions(
        &self,
        name: &str,
        staged: Arc<std::fs::File>,
        spans: &[PartitionSpan],
        on_sealed: OnSealed<'_>,
    ) -> BResult<Vec<CommitFragment>> {
        transfer::upload_partitions(
            &self.meta,
            &self.shards,
            self.account.as_ref(),
            staged,
            spans,
            &self.upload,
            &self.progress,
            name,
            on_sealed,
        )
        .await
        .map_err(transfer_error)
    }

    async fn commit(&self, name: &str, req: CommitRequest) -> BResult<u64> {
        let ver = self.meta.commit(&req).await.map_err(client_error)?.ver_no;
        self.progress.finish(name);
        Ok(ver)
    }

    async fn upload(
        &self,
        id: i64,
        name: &str,
        staged: &Path,
        attrs: FileAttrs,
        base: u64,
    ) -> BResult<u64> {
        let opts = UploadOptions {
            attrs,
            node: Some(id),
            base_ver: Some(base),
            ..self.upload.clone()
        };
        Ok(self.upload_with(name, staged, &opts).await?.ver_no)
    }

    async fn upload_new(
        &self,
        new: &NewFile,
        name: &str,
        staged: &Path,
        attrs: FileAttrs,
    ) -> BResult<Committed> {
        let opts = UploadOptions {
            attrs,
            create: Some(new.clone()),
            ..self.upload.clone()
        };
        self.upload_with(name, staged, &opts).await
    }
}

impl RemoteBackend {
    async fn upload_with(
        &self,
        name: &str,
        staged: &Path,
        opts: &UploadOptions,
    ) -> BResult<Committed> {
        transfer::upload_file(
            &self.meta,
            &self.shards,
            self.account.as_ref(),
            staged,
            name,
            opts,
            &self.progress,
        )
        .await
        .map_err(transfer_error)
    }
}
