//! Client configuration on disk: the master secret every client command of
//! this user shares (one file, mode 0600, made on first use). Account keys
//! are derived from it per (appid, uid).

use std::path::PathBuf;

/// `$VAR/tfsfs`, else `~/FALLBACK/tfsfs` (the XDG base directory rule).
fn xdg(var: &str, fallback: &str) -> PathBuf {
    if let Some(d) = std::env::var_os(var).filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("tfsfs");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(fallback).join("tfsfs")
}

/// Where the master secret lives.
pub fn config_dir() -> PathBuf {
    xdg("XDG_CONFIG_HOME", ".config")
}

/// Where the embedded cluster keeps its state.
pub fn data_dir() -> PathBuf {
    xdg("XDG_DATA_HOME", ".local/share")
}

/// Where the drive stages writes.
pub fn cache_dir() -> PathBuf {
    xdg("XDG_CACHE_HOME", ".cache")
}

/// Reads the master secret, creating it (mode 0600, in a 0700 dir) on
/// first use.
pub fn master_secret() -> anyhow::Result<[u8; 32]> {
    let dir = config_dir();
    crate::private::dir(&dir)?;
    crate::private::secret(&dir.join("secret"))
}

/// The account an e-mail registration made, saved on verification so that
/// the mount and the CLI use it when no `--appkey` is given.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedAccount {
    pub meta_url: String,
    pub email: String,
    pub appkey: String,
    pub appid: u64,
    pub uid: u64,
}

/// Where the saved account lives: `account.json` in the config dir.
pub fn account_path() -> PathBuf {
    config_dir().join("account.json")
}

/// The saved account, if there is one.
pub fn load_account() -> anyhow::Result<Option<SavedAccount>> {
    let path = account_path();
    match std::fs::read(&path) {
        Ok(raw) => Ok(Some(serde_json::from_slice(&raw).map_err(|e| {
            anyhow::anyhow!("{} is not a saved account: {e}", path.display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Which account a client (the mount or a file command) acts for.
pub enum AccountChoice {
    /// A metadata server, with the appkey and uid to use there.
    Remote {
        meta_url: String,
        appkey: String,
        uid: u64,
    },
    /// No server given or saved: the embedded cluster, with the account
    /// saved for it (its `meta_url` is ""), if any.
    Embedded { saved: Option<SavedAccount> },
}

/// Server, appkey and uid: as given, else from the account saved by
/// `/store/verifyemail` (an unreadable saved account is ignored, with a
/// warning).
pub fn choose_account(
    meta: Option<&str>,
    appkey: Option<&str>,
    uid: Option<u64>,
) -> anyhow::Result<AccountChoice> {
    let saved = if appkey.is_none() {
        load_account().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "ignoring the saved account");
            None
        })
    } else {
        None
    };
    let meta_url = meta.map(str::to_string).or_else(|| {
        saved
            .as_ref()
            .map(|s| s.meta_url.clone())
            .filter(|u| !u.is_empty())
    });
    let Some(meta_url) = meta_url else {
        return Ok(AccountChoice::Embedded { saved });
    };
    let same_server =
        |s: &&SavedAccount| s.meta_url.trim_end_matches('/') == meta_url.trim_end_matches('/');
    let appkey = match (appkey, saved.as_ref().filter(same_server)) {
        (Some(k), _) => k.to_string(),
        (None, Some(s)) => s.appkey.clone(),
        (None, None) => {
            anyhow::bail!("--appkey (or TFSFS_APPKEY) is needed with --meta {meta_url}: no account for it is saved")
        }
    };
    let uid = uid.or(saved.as_ref().map(|s| s.uid)).unwrap_or(1);
    Ok(AccountChoice::Remote {
        meta_url,
        appkey,
        uid,
    })
}

/// Saves the account (mode 0600 in a 0700 dir: the appkey is a secret),
/// atomically.
pub fn save_account(account: &SavedAccount) -> anyhow::Result<PathBuf> {
    crate::private::dir(&config_dir())?;
    let path = account_path();
    crate::private::write_atomic(&path, &serde_json::to_vec_pretty(account)?)?;
    Ok(path)
}
