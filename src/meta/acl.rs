//! POSIX ACLs in the form the kernel passes them as the xattrs
//! `system.posix_acl_access` / `system.posix_acl_default` (a version word,
//! then 8-byte entries: tag, permission bits, user or group id; little
//! endian), and the rules the kernel leaves to a FUSE filesystem that asks
//! for FUSE_POSIX_ACL: the mode follows the access ACL, a chmod rewrites
//! it, and a new node inherits its directory's default ACL (Linux's
//! `posix_acl_equiv_mode`, `posix_acl_chmod`, `posix_acl_create`).

pub const ACCESS: &str = "system.posix_acl_access";
pub const DEFAULT: &str = "system.posix_acl_default";

const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    tag: u16,
    perm: u16,
    id: u32,
}

/// An ACL with its three required entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl(Vec<Entry>);

impl Acl {
    /// None when `bytes` is not a well-formed ACL.
    pub fn parse(bytes: &[u8]) -> Option<Acl> {
        let (version, rest) = bytes.split_first_chunk::<4>()?;
        if u32::from_le_bytes(*version) != VERSION || rest.len() % 8 != 0 {
            return None;
        }
        let entries: Vec<Entry> = rest
            .chunks_exact(8)
            .map(|e| Entry {
                tag: u16::from_le_bytes([e[0], e[1]]),
                perm: u16::from_le_bytes([e[2], e[3]]) & 7,
                id: u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
            })
            .collect();
        let count = |tag| entries.iter().filter(|e| e.tag == tag).count();
        let known = entries
            .iter()
            .all(|e| [USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER].contains(&e.tag));
        let named = count(USER) + count(GROUP);
        let whole = count(USER_OBJ) == 1 && count(GROUP_OBJ) == 1 && count(OTHER) == 1;
        // Named entries need a mask, as Linux's posix_acl_valid has it.
        let masked = if named > 0 {
            count(MASK) == 1
        } else {
            count(MASK) <= 1
        };
        (known && whole && masked).then_some(Acl(entries))
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = VERSION.to_le_bytes().to_vec();
        for e in &self.0 {
            out.extend(e.tag.to_le_bytes());
            out.extend(e.perm.to_le_bytes());
            out.extend(e.id.to_le_bytes());
        }
        out
    }

    fn perm(&self, tag: u16) -> u32 {
        self.0
            .iter()
            .find(|e| e.tag == tag)
            .map_or(0, |e| u32::from(e.perm))
    }

    /// Does it say no more than permission bits do?
    fn is_minimal(&self) -> bool {
        self.0.len() == 3
    }

    /// The permission bits the access ACL gives the mode (the group bits
    /// are the mask when there is one).
    fn mode_bits(&self) -> u32 {
        let group = if self.0.iter().any(|e| e.tag == MASK) {
            self.perm(MASK)
        } else {
            self.perm(GROUP_OBJ)
        };
        self.perm(USER_OBJ) << 6 | group << 3 | self.perm(OTHER)
    }

    /// Sets the entries the mode's permission bits stand for.
    fn set_mode_bits(&mut self, mode: u32) {
        let has_mask = self.0.iter().any(|e| e.tag == MASK);
        for e in &mut self.0 {
            let bits = match e.tag {
                USER_OBJ => mode >> 6,
                MASK => mode >> 3,
                GROUP_OBJ if !has_mask => mode >> 3,
                OTHER => mode,
                _ => continue,
            };
            e.perm = (bits & 7) as u16;
        }
    }
}

/// An access ACL being set on a node of `mode`: the node's new mode, and
/// the ACL to keep (None when the mode says it all).
pub fn set_access(acl: &Acl, mode: u32) -> (u32, Option<Acl>) {
    let mode = (mode & !0o777) | acl.mode_bits();
    (mode, (!acl.is_minimal()).then(|| acl.clone()))
}

/// chmod of a node with an access ACL: the ACL follows the new mode.
pub fn chmod(acl: &Acl, mode: u32) -> Acl {
    let mut acl = acl.clone();
    acl.set_mode_bits(mode);
    acl
}

/// A node made with `mode` in a directory with default ACL `default`: its
/// mode (no more than the ACL allows) and its access ACL (None when the
/// mode says it all).
pub fn inherit(default: &Acl, mode: u32) -> (u32, Option<Acl>) {
    let mut acl = default.clone();
    let has_mask = acl.0.iter().any(|e| e.tag == MASK);
    let mut bits = mode & 0o777;
    for e in &mut acl.0 {
        let shift = match e.tag {
            USER_OBJ => 6,
            MASK => 3,
            GROUP_OBJ if !has_mask => 3,
            OTHER => 0,
            _ => continue,
        };
        e.perm &= ((bits >> shift) & 7) as u16;
        bits &= !(0o7 << shift) | (u32::from(e.perm) << shift);
    }
    ((mode & !0o777) | bits, (!acl.is_minimal()).then_some(acl))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[(u16, u16, u32)]) -> Acl {
        let mut bytes = VERSION.to_le_bytes().to_vec();
        for &(tag, perm, id) in entries {
            bytes.extend(tag.to_le_bytes());
            bytes.extend(perm.to_le_bytes());
            bytes.extend(id.to_le_bytes());
        }
        Acl::parse(&bytes).expect("valid")
    }

    #[test]
    fn the_mode_follows_the_mask_and_a_chmod_rewrites_it() {
        // user::rw- user:65534:--- group::r-- mask::r-- other::r--
        let a = acl(&[
            (USER_OBJ, 6, 0),
            (USER, 0, 65534),
            (GROUP_OBJ, 4, 0),
            (MASK, 4, 0),
            (OTHER, 4, 0),
        ]);
        assert_eq!(set_access(&a, 0o100600), (0o100644, Some(a.clone())));
        let c = chmod(&a, 0o750);
        assert_eq!(c.mode_bits(), 0o750);
        assert_eq!(c.perm(GROUP_OBJ), 4, "the owning group's entry stays");
        let minimal = acl(&[(USER_OBJ, 7, 0), (GROUP_OBJ, 5, 0), (OTHER, 0, 0)]);
        assert_eq!(set_access(&minimal, 0o40000), (0o40750, None));
    }

    #[test]
    fn a_new_node_gets_the_default_acl_within_its_mode() {
        let d = acl(&[
            (USER_OBJ, 7, 0),
            (USER, 7, 1000),
            (GROUP_OBJ, 5, 0),
            (MASK, 7, 0),
            (OTHER, 5, 0),
        ]);
        let (mode, access) = inherit(&d, 0o100644);
        assert_eq!(mode, 0o100644);
        let access = access.expect("named entries are kept");
        assert_eq!(access.perm(MASK), 4);
        assert_eq!(
            access.perm(USER),
            7,
            "named entries are limited by the mask only"
        );
        assert_eq!(access.perm(OTHER), 4);
    }

    #[test]
    fn malformed_acls_are_refused() {
        assert!(Acl::parse(b"").is_none());
        assert!(Acl::parse(&[2, 0, 0, 0, 1]).is_none());
        let no_other = [2u8, 0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 4, 0, 4, 0, 0, 0, 0, 0];
        assert!(Acl::parse(&no_other).is_none());
    }
}
