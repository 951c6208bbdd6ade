//! `/store/*`: the mount's namespace from the client API. A local path is
//! stored at the same path in the namespace (`/tmp/a.txt` is the file
//! `/tmp/a.txt`, i.e. `DIR/tmp/a.txt` on the mount), as the document's
//! examples show. Transfers use the mount's transfer code and report to its
//! progress registry.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use axum::body::Bytes;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{done, fail, meta_msg, parse, transfer_msg, Answer, Fail, Shared, Sidecar};
use crate::client::meta::ClientError;
use crate::proto::StoreEntry;
use crate::transfer::{content_matches, download_entry, upload_file};

/// Entries per request when walking a remote tree.
const WALK_PAGE: u64 = 5000;

fn yes() -> bool {
    true
}

/// A path as the namespace (and this machine) names it: absolute, UTF-8,
/// without `.` or `..`.
fn clean_path(raw: &str) -> Result<String, Fail> {
    let p = Path::new(raw);
    if !p.is_absolute() {
        return Err(fail(format!("{raw:?} is not an absolute path")));
    }
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => parts.push(n.to_str().unwrap_or_default()),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(fail(format!("{raw:?}: '..' is not allowed in a path")))
            }
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

fn is_not_found(e: &ClientError) -> bool {
    e.status().map(|s| s.as_u16()) == Some(404)
}

/// An entry as `/store/list` shows it.
fn entry_json(e: &StoreEntry) -> Value {
    json!({
        "id": e.id.to_string(),
        "filesize": e.size,
        "filename": e.path,
        "filehash": e.hash,
        "folder": e.folder,
        "modtime": e.modtime,
    })
}

// ---- list ----

fn ten() -> u64 {
    10
}

fn one() -> u64 {
    1
}

fn by_name() -> String {
    "name".into()
}

#[derive(Deserialize)]
pub struct ListBody {
    path: String,
    #[serde(default = "ten")]
    pagesize: u64,
    #[serde(default = "one")]
    pagenum: u64,
    #[serde(default = "by_name")]
    sorttype: String,
    #[serde(default = "yes")]
    ascorder: bool,
}

pub async fn list(State(s): State<Shared>, body: Bytes) -> Answer {
    let r: ListBody = parse(&body)?;
    if !matches!(r.sorttype.as_str(), "name" | "size" | "modtime") {
        return Err(fail(format!(
            "sorttype is name, size or modtime, not {:?}",
            r.sorttype
        )));
    }
    if r.pagesize == 0 || r.pagesize > 10_000 {
        return Err(fail("pagesize is 1 to 10000"));
    }
    if r.pagenum == 0 {
        return Err(fail("pagenum counts from 1"));
    }
    let offset = (r.pagenum - 1)
        .checked_mul(r.pagesize)
        .ok_or_else(|| fail("pagenum is too large"))?;
    let page = s
        .meta
        .store_list(&r.path, &r.sorttype, r.ascorder, r.pagesize, offset)
        .await?;
    done(page.entries.iter().map(entry_json).collect::<Vec<_>>())
}

// ---- upload ----

/// Uploads one local file to `remote`. Without `newversion` an existing
/// file is left alone when its content is the same, and refused when it
/// differs.
async fn upload_one(
    s: &Sidecar,
    local: &Path,
    remote: &str,
    newversion: bool,
) -> Result<Value, String> {
    let size = std::fs::metadata(local)
        .map_err(|e| format!("cannot read {}: {e}", local.display()))?
        .len();
    match s.meta.store_entry(remote).await {
        Ok(e) if e.folder => return Err(format!("{remote} is a folder in the store")),
        Ok(e) if !newversion => {
            let key = match (e.encrypted, &s.account) {
                (false, _) => None,
                (true, Some(a)) => Some(a),
                (true, None) => {
                    return Err(format!(
                        "{remote} is stored encrypted and this mount has no key to compare it: \
                         set newversion:true to replace it"
                    ))
                }
            };
            let same = e.size == size
                && content_matches(&s.meta, key, local, &e.hash)
                    .await
                    .map_err(|e| transfer_msg(&e))?;
            if !same {
                return Err(format!(
                    "{remote} is already stored with other content: set newversion:true to store a new version"
                ));
            }
            s.progress.start(remote, size);
            s.progress.finish(remote);
            let mut v = entry_json(&e);
            v["unchanged"] = json!(true);
            return Ok(v);
        }
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(meta_msg(&e)),
    }
    let version = upload_file(
        &s.meta,
        &s.shards,
        s.account.as_ref(),
        local,
        remote,
        &s.upload,
        &s.progress,
    )
    .await
    .map_err(|e| transfer_msg(&e))?
    .ver_no;
    let e = s.meta.store_entry(remote).await.map_err(|e| meta_msg(&e))?;
    let mut v = entry_json(&e);
    v["unchanged"] = json!(false);
    v["version"] = json!(version);
    Ok(v)
}

/// Runs `job` now (interactive) or in the background; a failure is kept
/// for `/store/progress` under each of `paths` still unfinished.
async fn run_job<F>(
    s: Shared,
    interactive: bool,
    paths: Vec<String>,
    started: Value,
    job: F,
) -> Answer
where
    F: std::future::Future<Output = Result<Value, String>> + Send + 'static,
{
    {
        let mut failed = s.failed();
        for p in &paths {
            failed.remove(p);
        }
    }
    let record = move |s: &Sidecar, err: &str| {
        let snapshot = s.progress.snapshot();
        let mut failed = s.failed();
        for p in &paths {
            if snapshot.get(p).is_none_or(|f| *f < 1.0) {
                failed.insert(p.clone(), err.to_string());
            }
        }
    };
    if interactive {
        return match job.await {
            Ok(v) => done(v),
            Err(e) => {
                record(&s, &e);
                Err(fail(e))
            }
        };
    }
    tokio::spawn(async move {
        if let Err(e) = job.await {
            tracing::warn!(error = %e, "sidecar transfer failed");
            record(&s, &e);
        }
    });
    done(started)
}

#[derive(Deserialize)]
pub struct UploadBody {
    filename: String,
    #[serde(default = "yes")]
    interactive: bool,
    #[serde(default)]
    newversion: bool,
}

pub async fn upload(State(s): State<Shared>, body: Bytes) -> Answer {
    let r: UploadBody = parse(&body)?;
    let remote = clean_path(&r.filename)?;
    let local = PathBuf::from(&remote);
    let meta = std::fs::metadata(&local).map_err(|e| fail(format!("cannot read {remote}: {e}")))?;
    if meta.is_dir() {
        return Err(fail(format!(
            "{remote} is a directory: use /store/uploaddir"
        )));
    }
    if !meta.is_file() {
        return Err(fail(format!("{remote} is not a regular file")));
    }
    if !r.interactive {
        s.progress.start(&remote, meta.len());
    }
    let started = json!({ "filename": remote, "filesize": meta.len(), "started": true });
    let (s2, rem) = (s.clone(), remote.clone());
    run_job(s, r.interactive, vec![remote], started, async move {
        upload_one(&s2, &local, &rem, r.newversion).await
    })
    .await
}

/// A local tree: its directories (the root first) and regular files with
/// their sizes; symlinks and special files are skipped and counted.
struct LocalTree {
    dirs: Vec<PathBuf>,
    files: Vec<(PathBuf, u64)>,
    skipped: u64,
}

fn walk_local(root: &Path) -> std::io::Result<LocalTree> {
    let mut t = LocalTree {
        dirs: vec![root.to_path_buf()],
        files: Vec::new(),
        skipped: 0,
    };
    let mut i = 0;
    while i < t.dirs.len() {
        let mut entries: Vec<_> = std::fs::read_dir(&t.dirs[i])?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let ft = e.file_type()?;
            if ft.is_dir() {
                t.dirs.push(e.path());
            } else if ft.is_file() {
                t.files.push((e.path(), e.metadata()?.len()));
            } else {
                t.skipped += 1;
            }
        }
        i += 1;
    }
    Ok(t)
}

fn local_str(p: &Path) -> Result<String, String> {
    p.to_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{} is not UTF-8", p.display()))
}

/// Makes sure `remote` is a folder (with its parents); true when made.
async fn ensure_folder(s: &Sidecar, remote: &str) -> Result<bool, String> {
    if remote == "/" {
        return Ok(false);
    }
    match s.meta.store_entry(remote).await {
        Ok(e) if e.folder => Ok(false),
        Ok(_) => Err(format!("{remote} is a file, not a folder")),
        Err(e) if is_not_found(&e) => match s.meta.create_dir(remote, true).await {
            Ok(()) => Ok(true),
            // Made meanwhile by someone else.
            Err(e) if e.status().map(|s| s.as_u16()) == Some(409) => Ok(false),
            Err(e) => Err(meta_msg(&e)),
        },
        Err(e) => Err(meta_msg(&e)),
    }
}

/// Summarizes a tree transfer; an error names the first failure.
fn tree_result(
    mut v: Value,
    failures: Vec<(String, String)>,
    total: usize,
) -> Result<Value, String> {
    if let Some((path, err)) = failures.first() {
        return Err(format!(
            "{} of {total} entries failed; first {path}: {err}",
            failures.len()
        ));
    }
    v["failed"] = json!(0);
    Ok(v)
}

async fn upload_tree(
    s: &Sidecar,
    root: &str,
    t: LocalTree,
    newversion: bool,
) -> Result<Value, String> {
    let total = t.dirs.len() + t.files.len();
    let mut failures = Vec::new();
    let mut folders = 0;
    for d in &t.dirs {
        let remote = local_str(d)?;
        match ensure_folder(s, &remote).await {
            Ok(made) => folders += u64::from(made),
            Err(e) => failures.push((remote, e)),
        }
    }
    let (mut files, mut unchanged, mut bytes) = (0u64, 0u64, 0u64);
    for (f, size) in &t.files {
        let remote = local_str(f)?;
        match upload_one(s, f, &remote, newversion).await {
            Ok(v) if v["unchanged"] == json!(true) => unchanged += 1,
            Ok(_) => {
                files += 1;
                bytes += size;
            }
            Err(e) => failures.push((remote, e)),
        }
    }
    tree_result(
        json!({
            "parent": root,
            "folders": folders,
            "files": files,
            "unchanged": unchanged,
            "bytes": bytes,
            "skipped": t.skipped,
        }),
        failures,
        total,
    )
}

#[derive(Deserialize)]
pub struct UploadDirBody {
    parent: String,
    #[serde(default = "yes")]
    interactive: bool,
    #[serde(default)]
    newversion: bool,
}

pub async fn uploaddir(State(s): State<Shared>, body: Bytes) -> Answer {
    let r: UploadDirBody = parse(&body)?;
    let root = clean_path(&r.parent)?;
    let meta = std::fs::metadata(&root).map_err(|e| fail(format!("cannot read {root}: {e}")))?;
    if !meta.is_dir() {
        return Err(fail(format!(
            "{root} is not a directory: use /store/upload"
        )));
    }
    let walk_root = PathBuf::from(&root);
    let tree = tokio::task::spawn_blocking(move || walk_local(&walk_root))
        .await
        .map_err(|e| fail(format!("cannot read the tree {root}: {e}")))?
        .map_err(|e| fail(format!("cannot read the tree {root}: {e}")))?;
    let paths: Vec<String> = tree
        .files
        .iter()
        .filter_map(|(p, _)| p.to_str().map(str::to_string))
        .collect();
    if !r.interactive {
        for ((_, size), p) in tree.files.iter().zip(&paths) {
            s.progress.start(p, *size);
        }
    }
    let started = json!({
        "parent": root,
        "folders": tree.dirs.len(),
        "files": tree.files.len(),
        "started": true,
    });
    let s2 = s.clone();
    run_job(s, r.interactive, paths, started, async move {
        upload_tree(&s2, &root, tree, r.newversion).await
    })
    .await
}

// ---- download ----

/// Downloads `remote` to `local` (all or nothing, see
/// `transfer::download_entry`), checking that it is the content the caller
/// named by hash and size.
async fn download_one(
    s: &Sidecar,
    remote: &str,
    local: &Path,
    hash: &str,
    size: u64,
) -> Result<Value, String> {
    let e = s.meta.store_entry(remote).await.map_err(|e| meta_msg(&e))?;
    if e.folder {
        return Err(format!("{remote} is a folder: use /store/downloaddir"));
    }
    if !hash.eq_ignore_ascii_case(&e.hash) {
        return Err(format!(
            "filehash {hash} is not that of {remote} as stored ({})",
            e.hash
        ));
    }
    if size != e.size {
        return Err(format!(
            "filesize {size} is not that of {remote} as stored ({})",
            e.size
        ));
    }
    download_entry(
        &s.meta,
        &s.shards,
        s.account.as_ref(),
        &e,
        local,
        &s.progress,
    )
    .await
    .map_err(|e| transfer_msg(&e))?;
    Ok(json!({
        "filename": remote,
        "local": local,
        "filesize": e.size,
        "filehash": e.hash,
    }))
}

/// Every folder and file below `root` (the root not included), folders
/// before their contents.
async fn walk_remote(s: &Sidecar, root: &str) -> Result<Vec<StoreEntry>, String> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_string()];
    while let Some(dir) = dirs.pop() {
        let mut offset = 0;
        loop {
            let page = s
                .meta
                .store_list(&dir, "name", true, WALK_PAGE, offset)
                .await
                .map_err(|e| meta_msg(&e))?;
            let n = page.entries.len() as u64;
            for e in page.entries {
                if e.folder {
                    dirs.push(e.path.clone());
                }
                out.push(e);
            }
            offset += n;
            if n == 0 || offset >= page.total {
                break;
            }
        }
    }
    Ok(out)
}

/// Where a remote path below `root` goes below the local `dest`.
fn local_for(root: &str, dest: &Path, remote: &str) -> PathBuf {
    let rel = remote
        .strip_prefix(root)
        .unwrap_or(remote)
        .trim_start_matches('/');
    dest.join(rel)
}

async fn download_tree(s: &Sidecar, root: &str, dest: PathBuf) -> Result<Value, String> {
    let entries = walk_remote(s, root).await?;
    let total = entries.len();
    std::fs::create_dir_all(&dest).map_err(|e| format!("cannot make {}: {e}", dest.display()))?;
    let (mut folders, mut files, mut bytes) = (0u64, 0u64, 0u64);
    let mut failures = Vec::new();
    for e in entries.iter().filter(|e| e.folder) {
        match std::fs::create_dir_all(local_for(root, &dest, &e.path)) {
            Ok(()) => folders += 1,
            Err(err) => failures.push((e.path.clone(), err.to_string())),
        }
    }
    for e in entries.iter().filter(|e| !e.folder) {
        let local = local_for(root, &dest, &e.path);
        match download_one(s, &e.path, &local, &e.hash, e.size).await {
            Ok(_) => {
                files += 1;
                bytes += e.size;
            }
            Err(err) => failures.push((e.path.clone(), err)),
        }
    }
    tree_result(
        json!({ "parent": root, "local": dest, "folders": folders, "files": files, "bytes": bytes }),
        failures,
        total,
    )
}

#[derive(Deserialize)]
pub struct DownloadBody {
    #[serde(default)]
    filename: Option<String>,
    #[serde(default)]
    filehash: Option<String>,
    #[serde(default)]
    filesize: Option<u64>,
    /// "download directory if parent isn't empty but others is empty"
    #[serde(default)]
    parent: Option<String>,
    /// Extension: where to write instead of the same local path.
    #[serde(default)]
    local: Option<String>,
    #[serde(default = "yes")]
    interactive: bool,
}

pub async fn download(State(s): State<Shared>, body: Bytes) -> Answer {
    let r: DownloadBody = parse(&body)?;
    let filename = r.filename.filter(|f| !f.is_empty());
    if filename.is_none() {
        if let Some(parent) = r.parent.filter(|p| !p.is_empty()) {
            return dir_download(s, &parent, r.local, r.interactive).await;
        }
    }
    let remote = clean_path(&filename.ok_or_else(|| fail("missing field `filename`"))?)?;
    let hash = r.filehash.ok_or_else(|| fail("missing field `filehash`"))?;
    let size = r.filesize.ok_or_else(|| fail("missing field `filesize`"))?;
    let local = PathBuf::from(clean_path(r.local.as_deref().unwrap_or(&remote))?);
    let started = json!({ "filename": remote, "local": local, "filesize": size, "started": true });
    if !r.interactive {
        s.progress.start(&remote, size);
    }
    let (s2, rem) = (s.clone(), remote.clone());
    run_job(s, r.interactive, vec![remote], started, async move {
        download_one(&s2, &rem, &local, &hash, size).await
    })
    .await
}

async fn dir_download(s: Shared, parent: &str, local: Option<String>, interactive: bool) -> Answer {
    let root = clean_path(parent)?;
    let e = s.meta.store_entry(&root).await?;
    if !e.folder {
        return Err(fail(format!("{root} is a file: use /store/download")));
    }
    let dest = PathBuf::from(clean_path(local.as_deref().unwrap_or(&root))?);
    let started = json!({ "parent": root, "local": dest, "started": true });
    let s2 = s.clone();
    run_job(s, interactive, vec![], started, async move {
        download_tree(&s2, &root, dest).await
    })
    .await
}

#[derive(Deserialize)]
pub struct DownloadDirBody {
    parent: String,
    /// Extension: where to write instead of the same local path.
    #[serde(default)]
    local: Option<String>,
    #[serde(default = "yes")]
    interactive: bool,
}

pub async fn downloaddir(State(s): State<Shared>, body: Bytes) -> Answer {
    let r: DownloadDirBody = parse(&body)?;
    dir_download(s, &r.parent, r.local, r.interactive).await
}

// ---- remove, folders, progress ----

#[derive(Deserialize)]
pub struct RemoveBody {
    target: String,
    #[serde(default)]
    folder: bool,
    #[serde(default)]
    recursion: bool,
}

pub async fn remove(State(s): State<Shared>, body: Bytes) -> Answer {
    let r: RemoveBody = parse(&body)?;
    let target = clean_path(&r.target)?;
    if target == "/" {
        return Err(fail("the root cannot be removed"));
    }
    let e = s.meta.store_entry(&target).await?;
    let removed = match (e.folder, r.folder) {
        (true, false) => {
            return Err(fail(format!(
                "{target} is a folder: set folder:true to remove it"
            )))
        }
        (false, true) => return Err(fail(format!("{target} is a file, not a folder"))),
        (false, false) => {
            s.meta.remove_file(&target).await?;
            1
        }
        (true, true) if r.recursion => s.meta.remove_tree(&target).await?.removed,
        (true, true) => {
            let page = s.meta.store_list(&target, "name", true, 1, 0).await?;
            if page.total > 0 {
                return Err(fail(format!(
                    "folder {target} is not empty ({} entries): set recursion:true to remove it with its contents",
                    page.total
                )));
            }
            s.meta.remove_dir(&target).await?;
            1
        }
    };
    done(json!({ "target": target, "folder": e.folder, "removed": removed }))
}

#[derive(Deserialize)]
pub struct FolderAddBody {
    parent: String,
    /// The document names this key "" (`"":["abc","tmp"]`).
    #[serde(
        default,
        rename = "",
        alias = "folders",
        alias = "folder",
        alias = "names"
    )]
    names: Option<Vec<String>>,
}

pub async fn folder_add(State(s): State<Shared>, body: Bytes) -> Answer {
    let r: FolderAddBody = parse(&body)?;
    let parent = clean_path(&r.parent)?;
    let names = r.names.ok_or_else(|| {
        fail("missing field: the folder names, under \"\" as the document has it (or \"folders\")")
    })?;
    if names.is_empty() {
        return Err(fail("no folder names given"));
    }
    for n in &names {
        if n.is_empty() || n == "." || n == ".." || n.contains('/') || n.contains('\0') {
            return Err(fail(format!("{n:?} is not a folder name")));
        }
    }
    let mut made = Vec::new();
    for n in &names {
        let path = join(&parent, n);
        ensure_folder(&s, &path).await.map_err(fail)?;
        made.push(path);
    }
    done(made)
}

fn no_files() -> Vec<String> {
    Vec::new()
}

#[derive(Deserialize)]
pub struct ProgressBody {
    #[serde(default = "no_files")]
    files: Vec<String>,
}

/// `{path: fraction}` of every transfer (those of the mount included), or
/// of the ones named; -1 marks one that failed.
pub async fn progress(State(s): State<Shared>, body: Bytes) -> Answer {
    let r: ProgressBody = parse(&body)?;
    let mut all: BTreeMap<String, f64> = s.progress.snapshot().into_iter().collect();
    for p in s.failed().keys() {
        all.insert(p.clone(), -1.0);
    }
    if !r.files.is_empty() {
        all.retain(|k, _| r.files.contains(k));
    }
    done(all)
}
