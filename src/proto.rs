//! Wire types shared by the client and the servers: the upload session
//! (CheckFileExist, UploadFilePrepare, UploadFileDone), read layouts, and the
//! provider registry. All of it travels as JSON under `/api/`.

use serde::{Deserialize, Serialize};

#[path = "proto_account.rs"]
mod account;
pub use account::*;

/// Header that authenticates an app on the `/api/` routes (the v1/v2 REST
/// routes carry the appkey in their path, as TFS does).
pub const APPKEY_HEADER: &str = "x-tfs-appkey";

/// What the server tells clients before they encode anything.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Policy {
    pub partition_size: u64,
    pub inline_max: u64,
}

/// A provider as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderInfo {
    pub id: String,
    pub url: String,
}

/// A provider with a grant made for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    #[serde(flatten)]
    pub provider: ProviderInfo,
    pub grant: String,
}

/// File attributes a drive keeps beyond the TFS document (opt-in extension).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileAttrs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime_ns: Option<i64>,
}

/// Step 1: CheckFileExist.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckRequest {
    pub path: String,
    /// Commit to this node (by id, wherever it now is) instead of `path`;
    /// the drive uploads open files this way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<i64>,
    /// Plaintext size of the file.
    pub file_size: u64,
    /// SHA-1 (hex) of the stored bytes, i.e. the object id.
    pub object_sha1: String,
    /// Size of the stored bytes.
    pub object_size: u64,
    pub partition_size: u64,
    /// The file key wrapped under the account key; absent when unencrypted.
    #[serde(default)]
    pub key: Option<String>,
    /// The stored bytes (base64) when the file is at most `inline_max`.
    #[serde(default)]
    pub data: Option<String>,
    #[serde(default)]
    pub attrs: FileAttrs,
    /// Commit only if the file is still at this version (the one the
    /// writer started from); otherwise 409 with body `STALE_BASE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ver: Option<u64>,
    /// Make the file (a small one, travelling inline) instead: a mount's
    /// new file costs this one request. Its name in use is 409.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create: Option<NewFile>,
}

/// A file a commit makes: node `id` (from the ids the namespace reserved,
/// `fs/ids`), named `name` in directory `parent`. When node `id` exists
/// already (a retry of a commit whose answer was lost), it is committed to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewFile {
    pub id: i64,
    pub parent: i64,
    pub name: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// The creating process's umask, taken from `mode` unless the
    /// directory has a default ACL, which then sets the mode (POSIX ACLs).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub umask: u32,
    /// A file found at the name is replaced, as by a rename over it (the
    /// writer truncated on open, as it would have that file); without
    /// it, a name in use is 409.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replace: bool,
}

/// The body of the 409 refusing an upload whose `base_ver` is no longer
/// the file's version.
pub const STALE_BASE: &str = "the file changed since this upload began";

/// The start of the 409 refusing a commit that names objects the account
/// does not store (collected while unused, e.g. a partition uploaded early
/// by a file held open past the grace period); the SHA-1s follow,
/// space-separated. Nothing was committed: upload those again.
pub const MISSING_OBJECTS: &str = "objects not stored: ";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "scheme", rename_all = "lowercase")]
pub enum CheckResponse {
    /// Stored inline or deduplicated: the new version is committed (with
    /// the change to its directory when the commit made the file).
    Done {
        ver_no: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dir_change: Option<DirChange>,
    },
    /// Put `copies` copies of the whole object on providers from the list
    /// (the first `copies` are the choice, the rest spares), then Done.
    Replica {
        session: String,
        copies: usize,
        targets: Vec<Target>,
    },
    /// Erasure-code each partition into k+m shards, then Prepare and Done
    /// (Prepare may ask for a smaller k for later partitions, never a smaller m).
    Erasure {
        session: String,
        k: usize,
        m: usize,
        partition_size: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMeta {
    pub sha1: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionMeta {
    pub index: u64,
    /// Stored bytes of this partition.
    pub size: u64,
    /// The erasure scheme the shards were made with.
    pub k: usize,
    pub m: usize,
    pub shards: Vec<ShardMeta>,
}

/// Step 2: UploadFilePrepare. May be sent several times per session, each
/// time for some partitions, so that a client can stream a large file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrepareRequest {
    pub session: String,
    pub partitions: Vec<PartitionMeta>,
    /// Providers that failed this upload: placed on no more.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub avoid: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreparedPartition {
    pub index: u64,
    /// The scheme the server places: when it differs from the request's
    /// (providers were lost), `targets` is empty and the client encodes the
    /// partition again with it and prepares it again.
    pub k: usize,
    pub m: usize,
    /// One provider per shard, distinct within the partition, each with a
    /// PUT grant for its shard.
    pub targets: Vec<Target>,
    /// Providers holding no shard of this partition, each with a PUT grant
    /// for any shard of it, to replace a target that fails.
    pub spares: Vec<Target>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrepareResponse {
    pub partitions: Vec<PreparedPartition>,
}

/// A stored shard as the client reports it: the receipts of the providers
/// that took it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredShard {
    pub sha1: String,
    pub size: u64,
    pub receipts: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredPartition {
    pub index: u64,
    pub size: u64,
    pub k: usize,
    pub m: usize,
    pub shards: Vec<StoredShard>,
}

/// Step 3: UploadFileDone.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DoneRequest {
    pub session: String,
    pub partitions: Vec<StoredPartition>,
}

/// One partition object announced in a batch CheckFileExist: a partition
/// of a file stored as its own object (one partition, nonce 0, its own
/// convergent key).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionCheck {
    /// SHA-1 (hex) of the stored bytes: the object id.
    pub sha1: String,
    pub plain_size: u64,
    pub stored_size: u64,
    /// The stored bytes (base64) when the partition is at most `inline_max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

/// Step 1 for a window of partitions (`partitions/check`): which of them
/// the account already stores.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionsCheckRequest {
    pub partition_size: u64,
    /// Whether the partitions are encrypted (each stored size is then the
    /// plain size plus a tag).
    pub encrypted: bool,
    pub partitions: Vec<PartitionCheck>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionsCheckResponse {
    /// Per partition: already stored (or stored now, inline): no upload.
    pub stored: Vec<bool>,
    /// The session the others are uploaded in: erasure-code each into
    /// k+m shards, `prepare` them (PartitionMeta.index is the position in
    /// the request), PUT, then `partitions/done`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    pub k: usize,
    pub m: usize,
}

/// One fragment of a committed version: bytes `[offset, offset + length)`
/// of the file are the first `length` plaintext bytes of `object`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitFragment {
    pub offset: u64,
    pub length: u64,
    /// The object's SHA-1; it must be stored in the account.
    pub object: String,
    /// The object's key wrapped under the account key; absent when plain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Commits a new version of file `node` (or, without one, of the file at
/// `path`, made if missing) as a list of fragments (`commit`), if the file
/// is still at `base_ver` (else 409 `STALE_BASE`) and every object named is
/// stored (else 409 `MISSING_OBJECTS`). Bytes no fragment covers read as
/// zeros.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommitRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<i64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    pub size: u64,
    pub fragments: Vec<CommitFragment>,
    /// The SHA-1 of the fragments' stored bytes in order (the file's
    /// `filehash`), when the writer saw them all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha1: Option<String>,
    #[serde(default)]
    pub attrs: FileAttrs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ver: Option<u64>,
}

/// A provider's answer to a shard PUT.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardStored {
    /// A `grant::Receipt` signed by the provider.
    pub receipt: String,
}

/// Placement as the server records it, proven by receipts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedShard {
    pub sha1: String,
    pub size: u64,
    /// Provider ids holding this shard (several for replicas).
    pub providers: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlacedPartition {
    pub index: u64,
    pub size: u64,
    pub k: usize,
    pub m: usize,
    pub shards: Vec<PlacedShard>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DoneResponse {
    pub ver_no: u64,
}

/// Where one shard of a readable object lives.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardLocation {
    pub sha1: String,
    pub size: u64,
    /// Providers heard from recently first.
    pub providers: Vec<ProviderInfo>,
    /// The metadata server has not heard from any of them lately: readers
    /// ask for this shard last.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspect: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionLayout {
    pub index: u64,
    pub size: u64,
    /// The partition's erasure scheme (partitions of one object may differ
    /// when providers were lost during its upload).
    pub k: usize,
    pub m: usize,
    pub shards: Vec<ShardLocation>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreScheme {
    Inline,
    Replica,
    Erasure,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectLayout {
    pub sha1: String,
    pub scheme: StoreScheme,
    /// Plaintext bytes of the object.
    pub plain_size: u64,
    pub stored_size: u64,
    pub partition_size: u64,
    pub k: usize,
    pub m: usize,
    /// Stored bytes, base64, for inline objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    pub partitions: Vec<PartitionLayout>,
    /// GET grants by provider id, each for this object's shards there.
    #[serde(default)]
    pub grants: std::collections::BTreeMap<String, String>,
}

/// A run of a file's bytes held by one object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FragmentLayout {
    pub offset: u64,
    pub length: u64,
    /// Wrapped file key; absent when the object is not encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub object: ObjectLayout,
}

impl FragmentLayout {
    /// The partitions holding file bytes in `[start, end)`, as (index, file
    /// offset of the partition).
    pub fn partitions_in(&self, start: u64, end: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let p = self.object.partition_size.max(1);
        let lo = start.max(self.offset);
        let hi = end.min(self.offset + self.length);
        let range = if lo < hi {
            (lo - self.offset) / p..(hi - self.offset).div_ceil(p)
        } else {
            0..0
        };
        range.map(move |i| (i, self.offset + i * p))
    }
}

/// A file's whole read layout at one version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileLayout {
    pub size: u64,
    pub ver_no: u64,
    pub fragments: Vec<FragmentLayout>,
}

/// A provider's enrollment: its public key, proven by a heartbeat signed
/// with it, and the operator's join token (not needed once enrolled).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// A `grant::Beat` signed with the key being enrolled.
    pub beat: String,
    /// Ed25519 public key, hex.
    pub pubkey: String,
    #[serde(default)]
    pub token: Option<String>,
}

/// A provider as the server's registry lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProviderStatus {
    pub id: String,
    pub url: String,
    pub capacity: u64,
    pub used: u64,
    pub alive: bool,
}

/// A provider's own counters (`GET /health`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProviderHealth {
    pub id: String,
    pub shards: u64,
    pub bytes_used: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub capacity: u64,
    #[serde(default)]
    pub scrub: ScrubHealth,
}

/// An entry of a v2 directory listing, as TFS prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct TfsEntry {
    pub name: String,
    pub pid: i64,
    pub id: i64,
    pub size: u64,
    pub is_file: bool,
    pub create_time: String,
    pub modify_time: String,
    pub ver_no: u64,
}

/// Attributes `setattr` may change (the drive's extension).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SetAttrs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub atime_ns: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime_ns: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    Dir,
    File,
    Symlink,
    /// Special files: the drive keeps the node (and a device's number);
    /// the kernel gives them their meaning.
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

/// A node with its POSIX attributes (the drive's extension).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeAttr {
    pub id: i64,
    pub parent: i64,
    pub name: String,
    pub kind: NodeKind,
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime_ns: i64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ver_no: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Link count: 2 + subdirectories for a directory, its names otherwise.
    #[serde(default)]
    pub nlink: u32,
    /// A device node's device number.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rdev: u32,
    /// In the answer to `fs/make`: the change made to the parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir_change: Option<DirChange>,
    /// A directory with a default ACL: what is made in it inherits that
    /// ACL, and its mode comes from the ACL, not the umask.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub default_acl: bool,
    /// In the answer to `fs/lookup` of a file held inline (at most
    /// `inline_max` bytes): its layout, bytes included, so the open that
    /// follows the lookup needs no request of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<Box<FileLayout>>,
}

/// A change to a directory's entries by one request: its mtime just before
/// and after. A client whose listing of the directory was whole at
/// `before` knows it is whole at `after` (nothing else changed it between:
/// every change moves the mtime forward).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirChange {
    pub dir: i64,
    pub before: i64,
    pub after: i64,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// `fs/make`: a directory, an empty file, a symlink or a special file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MakeRequest {
    /// One of the ids the namespace reserved (`fs/ids`); None: the next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    pub parent: i64,
    pub name: String,
    pub kind: NodeKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// As `NewFile::umask`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub umask: u32,
    #[serde(default)]
    pub target: Option<String>,
    /// A device node's device number.
    #[serde(default)]
    pub rdev: u32,
}

/// `fs/ids`: reserve `count` node ids for files the mount names later.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdsRequest {
    pub count: u32,
}

/// Node ids `low..=high`, reserved for the namespace that asked.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct IdRange {
    pub low: i64,
    pub high: i64,
}

/// `fs/link`: node `id` gets the name `new_name` in `new_parent` too.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkRequest {
    pub id: i64,
    pub new_parent: i64,
    pub new_name: String,
}

/// How setxattr treats an attribute that is there already, or not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XattrHow {
    #[default]
    Either,
    /// XATTR_CREATE: it must not exist (else EEXIST).
    Create,
    /// XATTR_REPLACE: it must exist (else ENODATA).
    Replace,
}

/// `fs/setxattr`: `value` in base64.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetXattrRequest {
    pub id: i64,
    pub name: String,
    pub value: String,
    #[serde(default)]
    pub how: XattrHow,
}

/// `fs/removexattr`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoveXattrRequest {
    pub id: i64,
    pub name: String,
}

/// `fs/xattr/{id}?name=`: the value, base64.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct XattrValue {
    pub value: String,
}

/// `fs/remove`: unlink, or rmdir when `dir`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoveRequest {
    pub parent: i64,
    pub name: String,
    pub dir: bool,
}

/// `fs/rename`: rename(2) with its flags.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenameRequest {
    pub parent: i64,
    pub name: String,
    pub new_parent: i64,
    pub new_name: String,
    #[serde(default)]
    pub noreplace: bool,
    #[serde(default)]
    pub exchange: bool,
}

/// `fs/setattr`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetAttrRequest {
    pub id: i64,
    #[serde(flatten)]
    pub attrs: SetAttrs,
}

/// `fs/statfs`: the account's capacity and use.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FsStats {
    pub capacity: u64,
    pub used: u64,
    pub files: u64,
}

/// Error body of the drive's `/api/ns/.../fs/` routes: `errno` names the
/// POSIX error (ENOENT, EEXIST, ENOTEMPTY, ...).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FsApiError {
    pub error: String,
    pub errno: String,
}

/// A provider's scrub findings, signed with its key
/// (`POST /api/providers/report`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScrubReport {
    pub id: String,
    /// Unix milliseconds; must be near the server's clock.
    pub ts_ms: u64,
    /// Shards whose file failed its hash (moved to quarantine).
    pub bad: Vec<String>,
    /// Set when a pass ended: shards hashed in it.
    #[serde(default)]
    pub pass_checked: Option<u64>,
    /// Shards found bad in that pass.
    #[serde(default)]
    pub pass_bad: u64,
}

impl crate::grant::ProviderSigned for ScrubReport {
    fn provider(&self) -> &str {
        &self.id
    }
}

/// A reader's claim that a provider's copy of a shard is missing or
/// corrupt (`POST /api/ns/{appid}/{uid}/report`); checked before acted on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardReport {
    pub sha1: String,
    pub provider: String,
}

/// A provider's scrub counters, in its `/health`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScrubHealth {
    /// Shards hashed in the pass under way (or the last, when idle).
    pub checked: u64,
    /// Shards found bad since the provider started.
    pub bad_found: u64,
    /// Passes finished since the provider started.
    pub passes: u64,
    /// Unix seconds the last pass ended (0: none yet).
    pub last_pass: u64,
    /// Bytes hashed in the last finished pass, and how long it took.
    #[serde(default)]
    pub last_pass_bytes: u64,
    #[serde(default)]
    pub last_pass_ms: u64,
    pub running: bool,
}
