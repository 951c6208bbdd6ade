//! TFS v2 path rules, as nginx-tfs applies them: a path is 1–256 bytes and
//! starts with `/`; empty segments fold (`//a//b/` is `/a/b`); a segment is
//! at most 246 bytes; `.` and `..` are not names.

pub const MAX_PATH: usize = 256;
pub const MAX_NAME: usize = 246;
pub const MAX_DEPTH: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TfsPath {
    segs: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("path must start with '/'")]
    NotAbsolute,
    #[error("path must be 1 to {MAX_PATH} bytes")]
    Length,
    #[error("a name is at most {MAX_NAME} bytes")]
    NameTooLong,
    #[error("'.' and '..' are not names")]
    DotName,
    #[error("path is not valid UTF-8 or holds a NUL")]
    Encoding,
}

impl TfsPath {
    pub fn parse(raw: &str) -> Result<Self, PathError> {
        if raw.is_empty() || raw.len() > MAX_PATH {
            return Err(PathError::Length);
        }
        if !raw.starts_with('/') {
            return Err(PathError::NotAbsolute);
        }
        if raw.contains('\0') {
            return Err(PathError::Encoding);
        }
        let mut segs = Vec::new();
        for seg in raw.split('/').filter(|s| !s.is_empty()) {
            if seg.len() > MAX_NAME {
                return Err(PathError::NameTooLong);
            }
            if seg == "." || seg == ".." {
                return Err(PathError::DotName);
            }
            segs.push(seg.to_string());
        }
        Ok(TfsPath { segs })
    }

    /// Percent-decodes a raw URL path piece, then parses it.
    pub fn parse_encoded(raw: &str) -> Result<Self, PathError> {
        let decoded = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| PathError::Encoding)?;
        Self::parse(&decoded)
    }

    pub fn segments(&self) -> &[String] {
        &self.segs
    }

    pub fn is_root(&self) -> bool {
        self.segs.is_empty()
    }

    pub fn depth(&self) -> usize {
        self.segs.len()
    }

    pub fn name(&self) -> Option<&str> {
        self.segs.last().map(String::as_str)
    }

    pub fn parent(&self) -> TfsPath {
        TfsPath {
            segs: self.segs[..self.segs.len().saturating_sub(1)].to_vec(),
        }
    }

    /// Is `self` inside `other` (or equal to it)?
    pub fn starts_with(&self, other: &TfsPath) -> bool {
        self.segs.starts_with(&other.segs)
    }

    pub fn child(&self, name: &str) -> TfsPath {
        let mut segs = self.segs.clone();
        segs.push(name.to_string());
        TfsPath { segs }
    }
}

impl std::fmt::Display for TfsPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.segs.is_empty() {
            return f.write_str("/");
        }
        for s in &self.segs {
            write!(f, "/{s}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_and_refuses() {
        assert_eq!(TfsPath::parse("//a//b/").unwrap().to_string(), "/a/b");
        assert!(TfsPath::parse("/").unwrap().is_root());
        assert_eq!(TfsPath::parse("a").unwrap_err(), PathError::NotAbsolute);
        assert_eq!(TfsPath::parse("").unwrap_err(), PathError::Length);
        assert_eq!(
            TfsPath::parse(&format!("/{}", "x".repeat(300))).unwrap_err(),
            PathError::Length
        );
        assert_eq!(
            TfsPath::parse(&format!("/{}", "x".repeat(247))).unwrap_err(),
            PathError::NameTooLong
        );
        assert!(TfsPath::parse(&format!("/{}", "x".repeat(246))).is_ok());
        assert_eq!(TfsPath::parse("/a/../b").unwrap_err(), PathError::DotName);
        assert_eq!(
            TfsPath::parse_encoded("/a%20b").unwrap().name(),
            Some("a b")
        );
        assert_eq!(
            TfsPath::parse_encoded("/a%00b").unwrap_err(),
            PathError::Encoding
        );
    }
}
