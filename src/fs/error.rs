//! The filesystem core's errors. The fuser adapter maps them to errno in
//! one place (`FsError::errno`).

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("directory not empty")]
    NotEmpty,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("file name too long")]
    NameTooLong,
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("no space left")]
    NoSpace,
    /// Over the account's quota; the server's words say by how much.
    #[error("quota exceeded: {0}")]
    Quota(String),
    #[error("permission denied")]
    Access,
    #[error("operation not permitted")]
    NotPermitted,
    #[error("not supported")]
    NotSupported,
    /// No such extended attribute.
    #[error("no such attribute")]
    NoData,
    /// The caller's buffer is too small for the answer.
    #[error("result too large for the buffer")]
    Range,
    /// An extended attribute's value past Linux's 64 KiB.
    #[error("value too large")]
    TooBig,
    #[error("bad file handle")]
    BadHandle,
    /// The node an inode number stood for is gone (unlinked, or replaced by
    /// a rename): the kernel looks the path up again and retries.
    #[error("stale file handle")]
    Stale,
    /// Storage cannot be reached for now (the metadata server or the
    /// providers): an upload is kept staged and tried again.
    #[error("storage unreachable: {0}")]
    Unavailable(String),
    /// An upload's file moved on (another client wrote it) since the
    /// version the upload started from.
    #[error("the file changed since this upload began")]
    Conflict,
    /// A commit named objects the account no longer stores (collected
    /// while unused): their SHA-1s.
    #[error("objects not stored: {}", .0.join(" "))]
    Missing(Vec<String>),
    #[error("I/O error: {0}")]
    Io(String),
}

impl FsError {
    /// The errno a POSIX caller sees.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::Invalid(_) => libc::EINVAL,
            FsError::NoSpace => libc::ENOSPC,
            FsError::Quota(_) => libc::EDQUOT,
            FsError::Access => libc::EACCES,
            FsError::NotPermitted => libc::EPERM,
            FsError::NotSupported => libc::EOPNOTSUPP,
            FsError::NoData => libc::ENODATA,
            FsError::Range => libc::ERANGE,
            FsError::TooBig => libc::E2BIG,
            FsError::BadHandle => libc::EBADF,
            FsError::Stale => libc::ESTALE,
            FsError::Unavailable(_) | FsError::Conflict | FsError::Missing(_) | FsError::Io(_) => {
                libc::EIO
            }
        }
    }

    /// Will an upload that failed so succeed later, unchanged?
    pub fn passing(&self) -> bool {
        matches!(self, FsError::Unavailable(_) | FsError::NoSpace)
    }

    /// From the errno name the metadata server's `fs/` routes give.
    pub fn from_errno_name(name: &str, detail: String) -> Self {
        match name {
            "ENOENT" => FsError::NotFound,
            "EEXIST" => FsError::Exists,
            "ENOTEMPTY" => FsError::NotEmpty,
            "ENOTDIR" => FsError::NotDir,
            "EISDIR" => FsError::IsDir,
            "ENAMETOOLONG" => FsError::NameTooLong,
            "EINVAL" => FsError::Invalid(detail),
            "ENOSPC" => FsError::NoSpace,
            "EDQUOT" => FsError::Quota(detail),
            "EACCES" => FsError::Access,
            "EPERM" => FsError::NotPermitted,
            "ENODATA" => FsError::NoData,
            "E2BIG" => FsError::TooBig,
            _ => FsError::Io(detail),
        }
    }
}

impl FsError {
    /// A node asked for by inode number that does not exist any more is a
    /// stale handle, not a missing name.
    pub fn stale_if_gone(self) -> Self {
        match self {
            FsError::NotFound => FsError::Stale,
            e => e,
        }
    }
}

impl From<std::io::Error> for FsError {
    fn from(e: std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::ENOSPC) => FsError::NoSpace,
            Some(libc::EDQUOT) => FsError::Quota(e.to_string()),
            Some(libc::EOPNOTSUPP) => FsError::NotSupported,
            Some(libc::EINVAL) => FsError::Invalid(e.to_string()),
            _ => FsError::Io(e.to_string()),
        }
    }
}
