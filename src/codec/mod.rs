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
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
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
    fn sha1_known_value() {
        assert_eq!(sha1_hex(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert!(is_sha1_hex(&sha1_hex(b"")));
        assert!(!is_sha1_hex("A9993E364706816ABA3E25717850C26C9CD0D89D"));
        assert!(!is_sha1_hex("../etc/passwd"));
    }
}
