//! TFS v1 file names, in TFS's own encoding (as nginx-tfs's
//! `ngx_http_tfs_raw_fsname.c` and the TFS client's `fsname.cpp` do it).
//!
//! A name is 18 ASCII characters, optionally followed by a suffix:
//!
//! - `T` (small file) or `L` (large file);
//! - the cluster id as one decimal digit;
//! - 16 characters encoding 12 bytes: the block id, the file sequence id and
//!   the suffix hash, each a little-endian `u32` (the C struct
//!   `{ uint32_t block_id; uint32_t seq_id; uint32_t suffix; }` as memory),
//!   XOR-ed byte by byte with the key `Taobao-inc` (repeated), then written
//!   3 bytes → 4 characters, big-endian 6-bit groups, in TFS's 64-character
//!   alphabet.
//!
//! The file id TFS reports is `suffix_hash << 32 | seq_id`. The suffix hash
//! of a suffix string is `h = (h + byte) * 7` over its bytes (32-bit,
//! wrapping, from 0), with the top bit set; an empty suffix hashes to 0. A
//! "simple" name carries a zero hash and the suffix spelled after the 18
//! characters instead.

use std::fmt;

/// Characters of a name without its suffix.
pub const NAME_LEN: usize = 18;
/// nginx-tfs's `NGX_HTTP_TFS_MAX_SUFFIX_LEN` (128 - 19).
pub const MAX_SUFFIX_LEN: usize = 109;

const KEY: &[u8; 10] = b"Taobao-inc";
const ALPHABET: &[u8; 64] = b"0JoU8EaN3xf19hIS2d.6pZRFBYurMDGw7K5m4CyXsbQjg_vTOAkcHVtzqWilnLPe";

const fn decode_table() -> [u8; 256] {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 64 {
        t[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    t
}

const DECODE: [u8; 256] = decode_table();

/// The 12 bytes a name encodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileBits {
    pub block_id: u32,
    pub seq_id: u32,
    pub suffix_hash: u32,
}

impl FileBits {
    /// TFS's 64-bit file id: the suffix hash above the sequence id.
    pub fn file_id(&self) -> u64 {
        (u64::from(self.suffix_hash) << 32) | u64::from(self.seq_id)
    }

    fn to_bytes(self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[0..4].copy_from_slice(&self.block_id.to_le_bytes());
        b[4..8].copy_from_slice(&self.seq_id.to_le_bytes());
        b[8..12].copy_from_slice(&self.suffix_hash.to_le_bytes());
        b
    }

    fn from_bytes(b: [u8; 12]) -> Self {
        let word = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        FileBits {
            block_id: word(0),
            seq_id: word(4),
            suffix_hash: word(8),
        }
    }
}

fn xor_key(b: &mut [u8; 12]) {
    for (i, x) in b.iter_mut().enumerate() {
        *x ^= KEY[i % KEY.len()];
    }
}

/// The 16 characters that encode `bits`.
pub fn encode_bits(bits: FileBits) -> [u8; 16] {
    let mut b = bits.to_bytes();
    xor_key(&mut b);
    let mut out = [0u8; 16];
    for (chunk, o) in b.chunks_exact(3).zip(out.chunks_exact_mut(4)) {
        let v = u32::from(chunk[0]) << 16 | u32::from(chunk[1]) << 8 | u32::from(chunk[2]);
        o[0] = ALPHABET[(v >> 18) as usize & 0x3f];
        o[1] = ALPHABET[(v >> 12) as usize & 0x3f];
        o[2] = ALPHABET[(v >> 6) as usize & 0x3f];
        o[3] = ALPHABET[v as usize & 0x3f];
    }
    out
}

/// The bits 16 characters encode; `None` if a character is outside the
/// alphabet or there are not exactly 16.
pub fn decode_bits(chars: &[u8]) -> Option<FileBits> {
    if chars.len() != 16 {
        return None;
    }
    let mut b = [0u8; 12];
    for (quad, o) in chars.chunks_exact(4).zip(b.chunks_exact_mut(3)) {
        let mut v = 0u32;
        for &c in quad {
            let d = DECODE[c as usize];
            if d == 0xff {
                return None;
            }
            v = v << 6 | u32::from(d);
        }
        o[0] = (v >> 16) as u8;
        o[1] = (v >> 8) as u8;
        o[2] = v as u8;
    }
    xor_key(&mut b);
    Some(FileBits::from_bytes(b))
}

/// TFS's suffix hash (nginx-tfs `ngx_http_tfs_raw_fsname_hash`, bytes taken
/// unsigned); 0 for no suffix.
pub fn suffix_hash(suffix: &[u8]) -> u32 {
    if suffix.is_empty() {
        return 0;
    }
    let mut h: u32 = 0;
    for &c in suffix {
        h = h.wrapping_add(u32::from(c)).wrapping_mul(7);
    }
    h | 0x8000_0000
}

/// Why a string is not a TFS file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    TooShort,
    BadKind,
    BadCluster,
    BadChar,
    SuffixTooLong,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameError::TooShort => "a TFS file name has at least 18 characters",
            NameError::BadKind => "a TFS file name starts with T or L",
            NameError::BadCluster => "a TFS file name's second character is a cluster digit",
            NameError::BadChar => "a TFS file name has a character outside TFS's alphabet",
            NameError::SuffixTooLong => "a TFS file name's suffix is at most 109 bytes",
        })
    }
}

impl std::error::Error for NameError {}

/// A TFS file name without its suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TfsName {
    /// `L` rather than `T`.
    pub large: bool,
    /// 0..=9.
    pub cluster: u8,
    pub bits: FileBits,
}

impl TfsName {
    /// Splits `name` into the name proper and the suffix after it.
    pub fn parse(name: &str) -> Result<(TfsName, &str), NameError> {
        let raw = name.as_bytes();
        if raw.len() < NAME_LEN {
            return Err(NameError::TooShort);
        }
        let large = match raw[0] {
            b'T' => false,
            b'L' => true,
            _ => return Err(NameError::BadKind),
        };
        if !raw[1].is_ascii_digit() {
            return Err(NameError::BadCluster);
        }
        let bits = decode_bits(&raw[2..NAME_LEN]).ok_or(NameError::BadChar)?;
        // The first 18 bytes are ASCII, so 18 is a character boundary.
        let suffix = &name[NAME_LEN..];
        if suffix.len() > MAX_SUFFIX_LEN {
            return Err(NameError::SuffixTooLong);
        }
        Ok((
            TfsName {
                large,
                cluster: raw[1] - b'0',
                bits,
            },
            suffix,
        ))
    }
}

impl fmt::Display for TfsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = [0u8; NAME_LEN];
        s[0] = if self.large { b'L' } else { b'T' };
        s[1] = b'0' + self.cluster.min(9);
        s[2..].copy_from_slice(&encode_bits(self.bits));
        // Every byte is ASCII from the alphabet above.
        f.write_str(std::str::from_utf8(&s).map_err(|_| fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(block_id: u32, seq_id: u32, suffix_hash: u32) -> FileBits {
        FileBits {
            block_id,
            seq_id,
            suffix_hash,
        }
    }

    #[test]
    fn document_name_decodes() {
        // The name in the TFS REST document's examples.
        let (n, suffix) = TfsName::parse("T1FOZHB4ET1RCvBVdK").unwrap();
        assert_eq!(suffix, "");
        assert!(!n.large);
        assert_eq!(n.cluster, 1);
        assert_eq!(n.bits, bits(1_795_083, 32, 0));
        assert_eq!(n.bits.file_id(), 32);
        assert_eq!(n.to_string(), "T1FOZHB4ET1RCvBVdK");
        // Its simple-name form carries the suffix as text.
        let (m, suffix) = TfsName::parse("T1FOZHB4ET1RCvBVdK.jpg").unwrap();
        assert_eq!((m, suffix), (n, ".jpg"));
    }

    #[test]
    fn names_seen_in_the_wild_decode_to_small_ids() {
        // Names of files served by TFS installations, quoted in public code.
        for (name, block, seq) in [
            ("T1IyJTByJT1RCvBVdK", 366, 1),
            ("T1R3Z_BmbT1RCvBVdK", 189_452, 91),
            ("T14.CTB4LT1RCvBVdK", 18_629, 46),
            ("T1slZcBvEg1RCvBVdK", 1_889_527, 896),
        ] {
            let (n, _) = TfsName::parse(name).unwrap();
            assert_eq!(n.bits, bits(block, seq, 0), "{name}");
            assert_eq!(n.to_string(), name);
        }
    }

    #[test]
    fn known_encodings() {
        let n = TfsName {
            large: false,
            cluster: 1,
            bits: bits(1_795_083, 32, 0),
        };
        assert_eq!(n.to_string(), "T1FOZHB4ET1RCvBVdK");
        let l = TfsName { large: true, ..n };
        assert_eq!(l.to_string(), "L1FOZHB4ET1RCvBVdK");
        // All-zero bits are the key itself, encoded.
        assert_eq!(&encode_bits(bits(0, 0, 0)), b"ZaETByET1RCvBVdK");
    }

    #[test]
    fn suffix_hash_matches_tfs() {
        assert_eq!(suffix_hash(b""), 0);
        // ((0 + '.') * 7 + 'j') * 7 ... with the top bit set.
        let mut h: u64 = 0;
        for c in b".jpg" {
            h = ((h + u64::from(*c)) * 7) & 0xffff_ffff;
        }
        assert_eq!(suffix_hash(b".jpg"), (h as u32) | 0x8000_0000);
        assert_eq!(suffix_hash(b".jpg"), 0x8002_55b5);
        // Long suffixes wrap rather than overflow.
        assert_eq!(suffix_hash(&[0xff; 109]) >> 31, 1);
    }

    #[test]
    fn round_trip_many_ids() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u32
        };
        let mut cases = vec![
            bits(0, 0, 0),
            bits(u32::MAX, u32::MAX, u32::MAX),
            bits(1, 1, 0),
            bits(101, 1, suffix_hash(b".png")),
        ];
        for _ in 0..20_000 {
            cases.push(bits(next(), next(), next()));
        }
        for b in 0..300 {
            for s in 0..30 {
                cases.push(bits(b, s, 0));
            }
        }
        for (i, b) in cases.into_iter().enumerate() {
            let n = TfsName {
                large: i % 3 == 0,
                cluster: (i % 10) as u8,
                bits: b,
            };
            let s = n.to_string();
            assert_eq!(s.len(), NAME_LEN);
            assert!(s.bytes().skip(2).all(|c| ALPHABET.contains(&c)));
            let (back, suffix) = TfsName::parse(&s).unwrap();
            assert_eq!(back, n);
            assert_eq!(suffix, "");
            assert_eq!(back.bits.file_id() >> 32, u64::from(b.suffix_hash));
            assert_eq!(back.bits.file_id() as u32, b.seq_id);
        }
    }

    #[test]
    fn every_16_char_string_in_the_alphabet_round_trips() {
        // 96 bits in 16 sextets: the encoding is a bijection.
        let mut x: u32 = 7;
        for _ in 0..5_000 {
            let mut s = [0u8; 16];
            for c in s.iter_mut() {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                *c = ALPHABET[(x >> 16) as usize % 64];
            }
            let b = decode_bits(&s).unwrap();
            assert_eq!(encode_bits(b), s);
        }
    }

    #[test]
    fn bad_names() {
        assert_eq!(TfsName::parse(""), Err(NameError::TooShort));
        assert_eq!(
            TfsName::parse("T1FOZHB4ET1RCvBVd"),
            Err(NameError::TooShort)
        );
        assert_eq!(
            TfsName::parse("X1FOZHB4ET1RCvBVdK"),
            Err(NameError::BadKind)
        );
        assert_eq!(
            TfsName::parse("t1FOZHB4ET1RCvBVdK"),
            Err(NameError::BadKind)
        );
        assert_eq!(
            TfsName::parse("TxFOZHB4ET1RCvBVdK"),
            Err(NameError::BadCluster)
        );
        assert_eq!(
            TfsName::parse("T1FOZHB4ET1RCvBVd!"),
            Err(NameError::BadChar)
        );
        assert_eq!(
            TfsName::parse("T1FOZHB4ET1RCvBVd+"),
            Err(NameError::BadChar)
        );
        assert_eq!(
            TfsName::parse("T1FOZHB4ET1RCvBVdé"),
            Err(NameError::BadChar)
        );
        assert_eq!(TfsName::parse("T1FOZHB4ET1RCvBVdKé").unwrap().1, "é");
        let long = format!("T1FOZHB4ET1RCvBVdK{}", "x".repeat(MAX_SUFFIX_LEN));
        assert!(TfsName::parse(&long).is_ok());
        let longer = format!("{long}x");
        assert_eq!(TfsName::parse(&longer), Err(NameError::SuffixTooLong));
        assert_eq!(decode_bits(b"short"), None);
    }
}
