//! Who may use the sidecar. On a loopback address: the user who runs the
//! mount, and root, known by the owner of the connecting socket in the
//! kernel's socket table (`/proc/net/tcp`, `tcp6`). Off loopback: whoever
//! shows the token of `--sidecar-token-file` (`Authorization: Bearer`); a
//! token given on loopback is asked for there too.

use std::net::SocketAddr;
use std::path::Path;

use axum::extract::ConnectInfo;
use axum::http::{header, HeaderMap, StatusCode};
use procfs::net::TcpState;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Fail;

/// A bearer token, kept only as its SHA-256: compared in constant time
/// whatever the length of what is shown.
#[derive(Clone)]
pub struct Token([u8; 32]);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    fn digest(raw: &[u8]) -> [u8; 32] {
        Sha256::digest(raw).into()
    }

    fn matches(&self, shown: &[u8]) -> bool {
        Self::digest(shown).ct_eq(&self.0).into()
    }
}

/// Where the sidecar listens and the token it asks for.
#[derive(Debug, Clone)]
pub struct SidecarConfig {
    pub addr: SocketAddr,
    pub token: Option<Token>,
}

impl SidecarConfig {
    /// Reads the token (its first line, trimmed) from `token_file`; an
    /// address off loopback needs one.
    pub fn new(addr: SocketAddr, token_file: Option<&Path>) -> anyhow::Result<Self> {
        let token = match token_file {
            Some(f) => {
                let raw = std::fs::read_to_string(f)
                    .map_err(|e| anyhow::anyhow!("--sidecar-token-file {}: {e}", f.display()))?;
                let t = raw.lines().next().unwrap_or("").trim();
                if t.is_empty() {
                    anyhow::bail!("--sidecar-token-file {}: the file is empty", f.display());
                }
                Some(Token(Token::digest(t.as_bytes())))
            }
            None => None,
        };
        if token.is_none() && !addr.ip().is_loopback() {
            anyhow::bail!(
                "--sidecar {addr} is not a loopback address: give --sidecar-token-file FILE \
                 (requests then need `Authorization: Bearer TOKEN`)"
            );
        }
        Ok(SidecarConfig { addr, token })
    }
}

/// What the guard checks on every request.
pub struct Access {
    /// The listener's address when it is a loopback one: each connection's
    /// owner is looked up then.
    loopback: Option<SocketAddr>,
    token: Option<Token>,
    /// The mount's user.
    owner: u32,
}

fn forbidden(status: StatusCode, why: String) -> Fail {
    Fail(status, format!("forbidden: {why}"))
}

impl Access {
    pub fn new(local: SocketAddr, token: Option<Token>) -> Self {
        Access {
            loopback: local.ip().is_loopback().then_some(local),
            token,
            // SAFETY: geteuid has no preconditions and cannot fail.
            owner: unsafe { libc::geteuid() },
        }
    }

    pub fn is_loopback(&self) -> bool {
        self.loopback.is_some()
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Refuses a request unless its connection belongs to the mount's user
    /// (or root) and it carries the token, where those are asked for.
    pub fn check(
        &self,
        peer: Option<&ConnectInfo<SocketAddr>>,
        headers: &HeaderMap,
    ) -> Result<(), Fail> {
        if let Some(ours) = self.loopback {
            let Some(ConnectInfo(peer)) = peer else {
                return Err(forbidden(
                    StatusCode::FORBIDDEN,
                    "the connection's peer is unknown".into(),
                ));
            };
            let uid = socket_owner(*peer, ours).map_err(|e| {
                forbidden(
                    StatusCode::FORBIDDEN,
                    format!("cannot read the socket table: {e}"),
                )
            })?;
            match uid {
                Some(u) if u == self.owner || u == 0 => {}
                Some(u) => {
                    return Err(forbidden(
                        StatusCode::FORBIDDEN,
                        format!(
                        "the sidecar serves only uid {} (the mount's user) and root, not uid {u}",
                        self.owner
                    ),
                    ))
                }
                None => {
                    return Err(forbidden(
                        StatusCode::FORBIDDEN,
                        format!("no open connection from {peer} is in the socket table"),
                    ))
                }
            }
        }
        if let Some(token) = &self.token {
            let shown = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
            if !shown.is_some_and(|t| token.matches(t)) {
                return Err(forbidden(
                    StatusCode::UNAUTHORIZED,
                    "this sidecar needs `Authorization: Bearer TOKEN` with the token of --sidecar-token-file".into(),
                ));
            }
        }
        Ok(())
    }
}

/// The uid owning the client end of the TCP connection `peer` → `ours`:
/// an established socket still open in a process (a closed one's entry
/// may read as root's).
fn socket_owner(peer: SocketAddr, ours: SocketAddr) -> procfs::ProcResult<Option<u32>> {
    let table = match peer {
        SocketAddr::V4(_) => procfs::net::tcp()?,
        SocketAddr::V6(_) => procfs::net::tcp6()?,
    };
    Ok(table
        .into_iter()
        .find(|e| {
            e.local_address == peer
                && e.remote_address == ours
                && e.state == TcpState::Established
                && e.inode != 0
        })
        .map(|e| e.uid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_owned_by_its_process_user() {
        // SAFETY: as above.
        let me = unsafe { libc::geteuid() };
        for at in ["127.0.0.1:0", "[::1]:0"] {
            let listener = std::net::TcpListener::bind(at).unwrap();
            let ours = listener.local_addr().unwrap();
            let client = std::net::TcpStream::connect(ours).unwrap();
            let (_server, peer) = listener.accept().unwrap();
            assert_eq!(socket_owner(peer, ours).unwrap(), Some(me), "{at}");
            drop(client);
            assert_eq!(socket_owner(peer, ours).unwrap(), None, "{at} closed");
        }
    }

    #[test]
    fn tokens_match_only_themselves() {
        let t = Token(Token::digest(b"s3cret"));
        assert!(t.matches(b"s3cret"));
        assert!(!t.matches(b"s3cre"));
        assert!(!t.matches(b"s3cret "));
        assert!(!t.matches(b""));
    }
}
