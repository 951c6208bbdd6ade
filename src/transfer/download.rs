//! A whole file to a local path, all or nothing: the bytes go to a
//! temporary file beside the destination, which is renamed into place only
//! once every byte is read and verified. A failed download leaves the
//! destination as it was (an old file unchanged, a missing one missing).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::fetch::download_to_file;
use super::{content_matches, Progress, TransferError};
use crate::client::meta::MetaClient;
use crate::client::provider::ShardClient;
use crate::codec::crypt::AccountKey;
use crate::proto::StoreEntry;

fn refused(msg: String) -> TransferError {
    TransferError::Download(msg)
}

/// Downloads the file `entry` (as the store lists it) to `local`, making
/// its directory if needed. Verified: the layout read must be of the
/// entry's size, the bytes written must be that many, and a file of one
/// object must hash back to the entry's hash.
pub async fn download_entry(
    meta: &MetaClient,
    shards: &ShardClient,
    acct: Option<&AccountKey>,
    entry: &StoreEntry,
    local: &Path,
    progress: &Progress,
) -> Result<(), TransferError> {
    let remote = &entry.path;
    if entry.folder {
        return Err(refused(format!("{remote} is a folder")));
    }
    if local.is_dir() {
        return Err(refused(format!("{} is a local directory", local.display())));
    }
    let name = local
        .file_name()
        .ok_or_else(|| refused(format!("{} names no file", local.display())))?;
    let layout = meta.layout(remote).await?;
    if layout.size != entry.size {
        return Err(refused(format!(
            "{remote} changed meanwhile: list it again"
        )));
    }
    let dir = match local.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| refused(format!("cannot make {}: {e}", dir.display())))?;
    // Mode 0666 less the umask, as a plain create would give; removed on
    // drop unless persisted.
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".tfsfs")
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)
        .map_err(|e| refused(format!("cannot write in {}: {e}", dir.display())))?;
    let downloaded = download_to_file(shards, &layout, acct, tmp.as_file(), progress, remote).await;
    super::report_routed_around(meta, shards).await;
    downloaded?;
    let got = tmp.as_file().metadata()?.len();
    if got != entry.size {
        return Err(refused(format!("wrote {got} bytes, not {}", entry.size)));
    }
    // One object covering the file: its hash can be recomputed from the
    // bytes written (re-encrypted under the account's key).
    if layout.fragments.len() <= 1 {
        let key = if entry.encrypted { acct } else { None };
        if !content_matches(meta, key, tmp.path(), &entry.hash).await? {
            return Err(refused(format!(
                "the bytes read do not hash to {}: not stored intact",
                entry.hash
            )));
        }
    }
    tmp.persist(local)
        .map_err(|e| refused(format!("cannot write {}: {}", local.display(), e.error)))?;
    Ok(())
}
