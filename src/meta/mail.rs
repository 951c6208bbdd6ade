//! Outgoing mail for registrations: over SMTP (lettre, plain SMTP, meant
//! for a local relay or a trusted link), or, with no SMTP server
//! configured, into an outbox directory (0700, files 0600: they hold
//! codes) the server's user can read.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

pub enum Mailer {
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
    },
    Outbox {
        dir: PathBuf,
        from: Mailbox,
        seq: AtomicU64,
    },
}

/// Host, port and credentials of an `smtp://[user[:pass]@]host[:port]` URL.
fn parse_smtp_url(url: &str) -> anyhow::Result<(String, u16, Option<Credentials>)> {
    let rest = url.strip_prefix("smtp://").ok_or_else(|| {
        anyhow::anyhow!(
            "--smtp {url:?}: only smtp://[user:pass@]host[:port] is supported \
             (plain SMTP; use a local relay for TLS)"
        )
    })?;
    let rest = rest.trim_end_matches('/');
    let (auth, hostport) = match rest.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, rest),
    };
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| anyhow::anyhow!("--smtp: credentials are not UTF-8"))
    };
    let creds = match auth {
        Some(a) => {
            let (user, pass) = a.split_once(':').unwrap_or((a, ""));
            Some(Credentials::new(decode(user)?, decode(pass)?))
        }
        None => None,
    };
    let (host, port) = match hostport.strip_prefix('[') {
        // [v6 address] with an optional :port
        Some(v6) => {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| anyhow::anyhow!("--smtp {url:?}: unclosed '['"))?;
            (h, after.strip_prefix(':'))
        }
        None => match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        },
    };
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .with_context(|| format!("--smtp {url:?}: bad port {p:?}"))?,
        None => 25,
    };
    let host = host.to_string();
    if host.is_empty() {
        anyhow::bail!("--smtp {url:?} names no host");
    }
    Ok((host, port, creds))
}

impl Mailer {
    pub fn new(smtp: Option<&str>, from: &str, outbox: PathBuf) -> anyhow::Result<Self> {
        let from: Mailbox = from
            .parse()
            .with_context(|| format!("mail sender {from:?} is not an address"))?;
        Ok(match smtp {
            Some(url) => {
                let (host, port, creds) = parse_smtp_url(url)?;
                let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
                    .port(port)
                    .timeout(Some(Duration::from_secs(30)));
                if let Some(c) = creds {
                    b = b.credentials(c);
                }
                Mailer::Smtp {
                    transport: b.build(),
                    from,
                }
            }
            None => {
                crate::private::dir(&outbox)
                    .with_context(|| format!("create the outbox {}", outbox.display()))?;
                Mailer::Outbox {
                    dir: outbox,
                    from,
                    seq: AtomicU64::new(0),
                }
            }
        })
    }

    fn from(&self) -> &Mailbox {
        match self {
            Mailer::Smtp { from, .. } | Mailer::Outbox { from, .. } => from,
        }
    }

    /// Sends a plain-text mail.
    pub async fn send(&self, to: &str, subject: &str, body: &str) -> anyhow::Result<()> {
        let to: Mailbox = to
            .parse()
            .with_context(|| format!("{to:?} is not an address"))?;
        let msg = Message::builder()
            .from(self.from().clone())
            .to(to.clone())
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body.to_string())?;
        match self {
            Mailer::Smtp { transport, .. } => {
                transport.send(msg).await?;
                tracing::info!(to = %to, "mail sent");
            }
            Mailer::Outbox { dir, seq, .. } => {
                let safe: String = to
                    .email
                    .to_string()
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '@' || c == '.' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                let name = format!(
                    "{}-{}-{safe}.eml",
                    chrono::Utc::now().format("%Y%m%dT%H%M%S"),
                    seq.fetch_add(1, Ordering::Relaxed)
                );
                let path = dir.join(name);
                crate::private::write_atomic(&path, &msg.formatted())?;
                tracing::warn!(
                    to = %to,
                    path = %path.display(),
                    "no --smtp server: mail written to the outbox: {subject}"
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::parse_smtp_url;

    #[test]
    fn smtp_urls() {
        let (h, p, c) = parse_smtp_url("smtp://127.0.0.1:2525").unwrap();
        assert_eq!((h.as_str(), p, c.is_none()), ("127.0.0.1", 2525, true));
        let (h, p, c) = parse_smtp_url("smtp://mail.example.com").unwrap();
        assert_eq!((h.as_str(), p, c.is_none()), ("mail.example.com", 25, true));
        let (h, p, c) = parse_smtp_url("smtp://u%40x:p%3Aw@[::1]:587/").unwrap();
        assert_eq!((h.as_str(), p, c.is_some()), ("::1", 587, true));
        assert!(parse_smtp_url("smtps://x").is_err());
        assert!(parse_smtp_url("smtp://:25").is_err());
        assert!(parse_smtp_url("smtp://h:port").is_err());
    }
}
