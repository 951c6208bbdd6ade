//! Extended attributes with Linux's rules: the namespaces a filesystem
//! keeps (`user.`, `trusted.` for root alone, `security.`, and the POSIX
//! ACLs under `system.`), and the size probe of get and list.

use std::time::{Duration, Instant};

use super::core::lock;
use super::{Backend, Fs, FsError};
use crate::meta::acl;
use crate::proto::XattrHow;

type FsResult<T> = Result<T, FsError>;

/// The kernel asks for this before every write (to drop file capabilities);
/// its absence is remembered as long as attributes are cached, so writes
/// do not each cost a round trip to the metadata server.
const CAPABILITY: &str = "security.capability";
const ABSENCE_KEPT: Duration = Duration::from_secs(1);

/// Entries `no_capability` holds before the stale ones are swept.
const ABSENCE_SWEEP: usize = 1024;

/// What getxattr and listxattr answer: the size a caller asked for with a
/// zero-sized buffer, or the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XattrReply {
    Size(u32),
    Data(Vec<u8>),
}

/// The answer for a caller's buffer of `size` bytes (0: how many it needs).
fn fit(data: Vec<u8>, size: u32) -> FsResult<XattrReply> {
    let len = u32::try_from(data.len()).map_err(|_| FsError::TooBig)?;
    match size {
        0 => Ok(XattrReply::Size(len)),
        _ if len > size => Err(FsError::Range),
        _ => Ok(XattrReply::Data(data)),
    }
}

/// May `uid` use attribute `name`? trusted.* is root's: others cannot set
/// it and do not see it (EPERM, ENODATA, as Linux answers); a namespace
/// the drive does not keep is EOPNOTSUPP.
fn allowed(name: &str, uid: u32, write: bool) -> FsResult<()> {
    let known = ["user.", "trusted.", "security."]
        .iter()
        .any(|ns| name.starts_with(ns))
        || name == acl::ACCESS
        || name == acl::DEFAULT;
    if !known {
        return Err(FsError::NotSupported);
    }
    match (name.starts_with("trusted.") && uid != 0, write) {
        (true, true) => Err(FsError::NotPermitted),
        (true, false) => Err(FsError::NoData),
        (false, _) => Ok(()),
    }
}

impl<B: Backend> Fs<B> {
    pub async fn getxattr(
        &self,
        ino: u64,
        name: &str,
        size: u32,
        uid: u32,
    ) -> FsResult<XattrReply> {
        allowed(name, uid, false)?;
        let id = self.id(ino);
        let known_absent = name == CAPABILITY
            && lock(&self.no_capability)
                .get(&id)
                .is_some_and(|at| at.elapsed() < ABSENCE_KEPT);
        if known_absent {
            return Err(FsError::NoData);
        }
        self.materialize(id).await?;
        match self.backend.xattr(id, name).await {
            Err(FsError::NoData) if name == CAPABILITY => {
                self.no_capability_yet(id);
                Err(FsError::NoData)
            }
            r => fit(r?, size),
        }
    }

    /// The names, each ended by a NUL, trusted.* for root alone.
    pub async fn listxattr(&self, ino: u64, size: u32, uid: u32) -> FsResult<XattrReply> {
        self.materialize(self.id(ino)).await?;
        let mut list = Vec::new();
        for name in self.backend.xattr_names(self.id(ino)).await? {
            if allowed(&name, uid, false).is_ok() {
                list.extend(name.as_bytes());
                list.push(0);
            }
        }
        fit(list, size)
    }

    /// setxattr with XATTR_CREATE / XATTR_REPLACE in `flags`.
    pub async fn setxattr(
        &self,
        ino: u64,
        name: &str,
        value: &[u8],
        flags: i32,
        uid: u32,
    ) -> FsResult<()> {
        allowed(name, uid, true)?;
        let how = match flags & (libc::XATTR_CREATE | libc::XATTR_REPLACE) {
            0 => XattrHow::Either,
            libc::XATTR_CREATE => XattrHow::Create,
            libc::XATTR_REPLACE => XattrHow::Replace,
            _ => {
                return Err(FsError::Invalid(
                    "XATTR_CREATE or XATTR_REPLACE, not both".into(),
                ))
            }
        };
        if name == CAPABILITY {
            lock(&self.no_capability).remove(&self.id(ino));
        }
        self.materialize(self.id(ino)).await?;
        // An ACL sets the mode too.
        self.unlist(self.id(ino));
        self.backend
            .set_xattr(self.id(ino), name, value, how)
            .await?;
        self.default_acl_now(self.id(ino), name, true);
        Ok(())
    }

    pub async fn removexattr(&self, ino: u64, name: &str, uid: u32) -> FsResult<()> {
        allowed(name, uid, true)?;
        self.materialize(self.id(ino)).await?;
        self.unlist(self.id(ino));
        self.backend.remove_xattr(self.id(ino), name).await?;
        self.default_acl_now(self.id(ino), name, false);
        Ok(())
    }

    /// A node made by this mount has no `security.capability`: the kernel
    /// asks at its first write.
    pub(super) fn no_capability_yet(&self, id: i64) {
        let mut absent = lock(&self.no_capability);
        // Swept as it doubles from ABSENCE_SWEEP, not at every create (a
        // clock read per entry).
        if absent.len() >= ABSENCE_SWEEP && absent.len().is_power_of_two() {
            absent.retain(|_, at| at.elapsed() < ABSENCE_KEPT);
        }
        absent.insert(id, Instant::now());
    }
}
