//! The node's HTTP client for settlement servers (top-up, gateway rounds, statements).
//!
//! An issuer URL is typed by a person or read from a config file, and anyone on a plain-HTTP
//! path can answer for it, so every answer is hostile until checked: each route has a size
//! limit and the body is read a chunk at a time against it; connecting, each read and the
//! whole request have deadlines; feeds are read and acted on a page at a time. HTTPS uses
//! rustls with the system's roots (which honour `SSL_CERT_FILE` and `SSL_CERT_DIR`) plus the
//! node's `[issuer] ca_file` for a private CA.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a call to an issuer failed. The message is one line for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IssuerError {
    /// The URL is not an `http://` or `https://` URL.
    #[error("{0}")]
    BadUrl(String),
    /// The server could not be reached (DNS, refused, timed out, TLS).
    #[error("cannot reach the issuer at {url}: {cause}")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// The deepest cause, in words.
        cause: String,
    },
    /// The server's TLS certificate is not trusted by this node.
    #[error(
        "the issuer at {url} presented a certificate this node does not trust ({cause}); if the issuer uses a private certificate authority, set `[issuer] ca_file` in config.toml"
    )]
    Untrusted {
        /// The URL asked.
        url: String,
        /// What rustls said.
        cause: String,
    },
    /// The answer was over the route's size limit.
    #[error("the issuer at {url} answered more than {limit} bytes; the answer was dropped")]
    TooLarge {
        /// The URL asked.
        url: String,
        /// The route's limit.
        limit: usize,
    },
    /// The server refused the request (its message).
    #[error("{0}")]
    Refused(String),
    /// The answer is not what the route returns.
    #[error("the issuer answered something invalid: {0}")]
    Invalid(String),
}

/// Size limits of the answers this node reads.
pub mod limits {
    /// The issuer descriptor (SPEC.md §2.4: 2 KiB).
    pub const DESCRIPTOR: usize = 4 * 1024;
    /// An allowance certificate.
    pub const CERTIFICATE: usize = 4 * 1024;
    /// A receipt batch for 1,024 records (about 170 bytes each).
    pub const RECEIPTS: usize = 512 * 1024;
    /// One feed page of at most 1,000 items in hex JSON.
    pub const FEED_PAGE: usize = 2 * 1024 * 1024;
    /// A wallet statement.
    pub const STATEMENT: usize = 1024 * 1024;
    /// An error answer.
    pub const ERROR: usize = 8 * 1024;
}

/// A client for the settlement server at one base URL.
#[derive(Clone)]
pub struct IssuerClient {
    http: reqwest::Client,
    base: String,
}

/// Every certificate in a PEM file, for a private CA.
fn load_ca(path: &Path) -> Result<Vec<reqwest::Certificate>, IssuerError> {
    let pem = std::fs::read(path).map_err(|e| {
        IssuerError::BadUrl(format!(
            "[issuer] ca_file {}: cannot read it: {e}",
            path.display()
        ))
    })?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        IssuerError::BadUrl(format!(
            "[issuer] ca_file {}: not PEM certificates: {e}",
            path.display()
        ))
    })?;
    if certs.is_empty() {
        return Err(IssuerError::BadUrl(format!(
            "[issuer] ca_file {} holds no certificate",
            path.display()
        )));
    }
    Ok(certs)
}

impl IssuerClient {
    /// A client for `url`, trusting the system's roots and the certificates in `ca_file`.
    pub fn new(url: &str, ca_file: Option<&PathBuf>) -> Result<Self, IssuerError> {
        let base = url.trim().trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(IssuerError::BadUrl(format!(
                "issuer URL {base:?}: it must start with https:// (or http:// on a trusted network)"
            )));
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(30))
            .timeout(Duration::from_secs(120))
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("meshpay/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_file {
            for cert in load_ca(path)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| {
            IssuerError::BadUrl(format!(
                "cannot set up HTTPS: {}",
                meshpay_transports::deepest_cause(&e)
            ))
        })?;
        Ok(Self { http, base })
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// `GET path`, reading at most `limit` bytes of answer.
    pub async fn get(&self, path: &str, limit: usize) -> Result<Vec<u8>, IssuerError> {
        self.send(self.http.get(format!("{}{path}", self.base)), limit)
            .await
    }

    /// `POST path` with a CBOR body, reading at most `limit` bytes of answer.
    pub async fn post_cbor(
        &self,
        path: &str,
        body: Vec<u8>,
        limit: usize,
    ) -> Result<Vec<u8>, IssuerError> {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/cbor")
                .body(body),
            limit,
        )
        .await
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        limit: usize,
    ) -> Result<Vec<u8>, IssuerError> {
        let mut resp = req.send().await.map_err(|e| self.failure(&e))?;
        let status = resp.status();
        let cap = if status.is_success() {
            limit
        } else {
            limits::ERROR
        };
        if resp.content_length().is_some_and(|n| n > cap as u64) {
            return Err(IssuerError::TooLarge {
                url: self.base.clone(),
                limit: cap,
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.failure(&e))? {
            if body.len() + chunk.len() > cap {
                return Err(IssuerError::TooLarge {
                    url: self.base.clone(),
                    limit: cap,
                });
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let msg = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("the issuer answered {status}"));
            return Err(IssuerError::Refused(msg));
        }
        Ok(body)
    }

    fn failure(&self, e: &reqwest::Error) -> IssuerError {
        tracing::debug!(url = %self.base, error = ?e, "issuer request failed");
        let why = meshpay_transports::deepest_cause(e);
        if is_certificate_error(e) {
            IssuerError::Untrusted {
                url: self.base.clone(),
                cause: why,
            }
        } else if e.is_timeout() {
            IssuerError::Unreachable {
                url: self.base.clone(),
                cause: format!("no answer in time ({why})"),
            }
        } else {
            IssuerError::Unreachable {
                url: self.base.clone(),
                cause: why,
            }
        }
    }
}

fn is_certificate_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let certificate = |r: &rustls::Error| {
        matches!(
            r,
            rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
        )
    };
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<rustls::Error>() {
            return certificate(r);
        }
        // An I/O error's `source` skips the error it wraps: look inside it.
        if let Some(inner) = s
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            if let Some(r) = inner.downcast_ref::<rustls::Error>() {
                return certificate(r);
            }
        }
        // Wrapped by a layer that keeps only the words (a connector's boxed error).
        if s.to_string().contains("invalid peer certificate") {
            return true;
        }
        source = s.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_http_or_https() {
        assert!(matches!(
            IssuerClient::new("settle.example", None),
            Err(IssuerError::BadUrl(_))
        ));
        assert!(matches!(
            IssuerClient::new("ftp://settle.example", None),
            Err(IssuerError::BadUrl(_))
        ));
        let c = IssuerClient::new("https://settle.example/", None).expect("valid");
        assert_eq!(c.url(), "https://settle.example");
    }

    #[test]
    fn a_missing_ca_file_says_so() {
        let e = IssuerClient::new(
            "https://settle.example",
            Some(&PathBuf::from("/nonexistent/ca.pem")),
        )
        .err()
        .expect("refused");
        assert!(e.to_string().contains("ca_file"), "{e}");
    }
}
