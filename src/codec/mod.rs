//! The pure data pipeline: partition → encrypt → hash → erasure code.
//! No I/O here; every function works on byte slices so it can be tested and
//! benchmarked on its own.

pub mod crypt;
pub mod erasure;

use sha1::{Digest, Sha1};

/// Default plaintext partition size: 4 MiB.
pub const DEFAULT_PARTITION_SIZE: u64 = 4 << 20;
/// Files of at most this many (plaintext) bytes travel inline in CheckFileExist.
pub const INLINE_MAX: u64 = 8192;

/// Hex SHA-1 of a byte slice: the id of an object or a shard.
pub fn sha1_hex(data: &[u8]) -> String {
    hex::encode(Sha1::digest(data))
}

/// Is `s` a lower-case 40-digit hex SHA-1?
pub fn is_sha1_hex(s: &str) -> bool {
    s.len() == 40 && is_lower_hex(s)
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The id of a shard: the BLAKE3 hash of its bytes, 64 hex digits (several
/// times faster than SHA-1, and every shard is hashed by its writer and its
/// provider). Shards stored before have SHA-1 ids, 40 digits, as have the
/// copies of a replicated object, named by the object's SHA-1.
pub fn shard_id(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

/// Is `s` a shard id (a BLAKE3 or a SHA-1, in lower-case hex)?
pub fn is_shard_id(s: &str) -> bool {
    matches!(s.len(), 40 | 64) && is_lower_hex(s)
}

/// Hashes a shard's bytes as they come, with the hash its id is of.
pub enum ShardHasher {
    Sha1(Sha1),
    Blake3(Box<blake3::Hasher>),
}

impl ShardHasher {
    pub fn for_id(id: &str) -> Self {
        if id.len() == 40 {
            ShardHasher::Sha1(Sha1::new())
        } else {
            ShardHasher::Blake3(Box::default())
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            ShardHasher::Sha1(h) => h.update(data),
            ShardHasher::Blake3(h) => {
                h.update(data);
            }
        }
    }

    /// The id the bytes hashed so far have.
    pub fn finish(self) -> String {
        match self {
            ShardHasher::Sha1(h) => hex::encode(h.finalize()),
            ShardHasher::Blake3(h) => h.finalize().to_hex().to_string(),
        }
    }
}

/// Are `data` the bytes of shard `id`?
pub fn shard_matches(id: &str, data: &[u8]) -> bool {
    let mut h = ShardHasher::for_id(id);
    h.update(data);
    h.finish() == id
}

/// Number of partitions a file of `size` plaintext bytes has (at least one,
/// so that an empty file still has a shape).
pub fn partition_count(size: u64, partition_size: u64) -> u64 {
    size.div_ceil(partition_size).max(1)
}

/// Stored (on-provider) size of a partition holding `plain_len` bytes.
pub fn stored_len(plain_len: u64, encrypted: bool) -> u64 {
    if encrypted {
        plain_len + crypt::TAG_LEN as u64
    } else {
        plain_len
    }
}

/// Stored size of a whole object of `size` plaintext bytes.
pub fn object_stored_size(size: u64, partition_size: u64, encrypted: bool) -> u64 {
    if encrypted {
        size + partition_count(size, partition_size) * crypt::TAG_LEN as u64
    } else {
        size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_counts() {
        assert_eq!(partition_count(0, 4), 1);
        assert_eq!(partition_count(4, 4), 1);
        assert_eq!(partition_count(5, 4), 2);
        assert_eq!(object_stored_size(5, 4, true), 5 + 32);
        assert_eq!(object_stored_size(5, 4, false), 5);
    }

    #[test]
    fn shard_ids_verify_by_their_kind() {
        let id = shard_id(b"abc");
        assert_eq!(
            id,
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
        assert!(is_shard_id(&id) && shard_matches(&id, b"abc"));
        assert!(!shard_matches(&id, b"abd"));
        let old = sha1_hex(b"abc");
        assert!(is_shard_id(&old) && shard_matches(&old, b"abc"));
        assert!(!shard_matches(&old, b"abd"));
        assert!(!is_shard_id(&id.to_uppercase()));
        assert!(!is_shard_id(&id[..50]));
    }

    #[test]
    fn sha1_known_value() {
        assert_eq!(sha1_hex(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert!(is_sha1_hex(&sha1_hex(b"")));
        assert!(!is_sha1_hex("A9993E364706816ABA3E25717850C26C9CD0D89D"));
        assert!(!is_sha1_hex("../etc/passwd"));
    }
}
