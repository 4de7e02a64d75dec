//! The admin API as `sfu admin` reaches it: the token (given, or made from the admin
//! secret), the HTTP client (hyper, rustls over aws-lc-rs: the webhooks' crates), and
//! the answers, refused unless a success.
//!
//! The system's CA certificates are trusted, or only those of `--ca-file`. No redirect is
//! followed (the token goes only where `--url` says), and each request has
//! [`REQUEST_TIMEOUT`] to be answered, connecting included. The token's header is marked
//! sensitive, and neither it nor the secret appears in any message.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use signaling::admin::AdminKey;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;

use super::print;
use crate::cli::AdminApi;
use crate::config;

/// How long a token made from the secret is valid: one command's time, with room for a
/// slow answer and some clock skew.
pub const TOKEN_TTL: Duration = Duration::from_secs(5 * 60);

/// How long a request may take, connecting included, before it is given up.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The most of an answer that is read.
const MAX_ANSWER_BYTES: usize = 16 << 20;

const USER_AGENT_VALUE: &str = concat!("sfu-admin/", env!("CARGO_PKG_VERSION"));

/// The admin API of one server, and the token it is called with.
pub struct Api {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// `--url`, without a trailing `/`: paths are appended to it.
    base: String,
    /// `Bearer <token>`, marked sensitive.
    authorization: HeaderValue,
    /// Whether the token is `--token`'s (else it was made from the secret): what a 401
    /// means.
    given_token: bool,
}

/// What the server answered.
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Api {
    pub fn new(args: &AdminApi) -> anyhow::Result<Api> {
        let https = args.url.starts_with("https://");
        if args.ca_file.is_some() && !https {
            bail!("--ca-file is for https, and --url is {}", args.url);
        }
        if !https && !loopback(&args.url) {
            tracing::warn!(
                "{} is plain HTTP: the admin token is sent in the clear",
                args.url
            );
        }
        let token = match &args.token {
            Some(token) => token.clone(),
            None => {
                let secret = config::secret(
                    args.secret.clone(),
                    args.secret_file.as_deref(),
                    "secret",
                )?
                .ok_or_else(|| {
                    anyhow!(
                        "no admin token and no admin secret: give --token (or SFU_ADMIN_TOKEN), \
                         or --secret-file (or SFU_ADMIN_SECRET_FILE)"
                    )
                })?;
                let identity = args.identity.clone().unwrap_or_else(default_identity);
                let claims = AdminKey::claims(&identity, TOKEN_TTL);
                AdminKey::new(secret.as_bytes()).issue(&claims)?
            }
        };
        let mut authorization = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| anyhow!("the admin token holds characters a header cannot carry"))?;
        authorization.set_sensitive(true);
        Ok(Api {
            client: client(https, args.ca_file.as_deref())?,
            base: args.url.clone(),
            authorization,
            given_token: args.token.is_some(),
        })
    }

    /// [`Api::send`], refused unless answered with a success.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<Answer> {
        self.accepted(self.send(method, path, body).await?)
    }

    /// `method` of `path` (which starts with `/`), with `body` as JSON: the answer,
    /// whatever its status. Fails when no answer came.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<Answer> {
        let url = format!("{}{path}", self.base);
        let mut request = Request::builder()
            .method(method)
            .uri(&url)
            .header(AUTHORIZATION, self.authorization.clone())
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, USER_AGENT_VALUE);
        let body = match body {
            Some(json) => {
                request = request.header(CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(serde_json::to_vec(&json)?))
            }
            None => Full::default(),
        };
        let request = request
            .body(body)
            .with_context(|| format!("cannot make a request of {url}"))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .with_context(|| format!("cannot reach {url}"))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| anyhow!(e))
                .with_context(|| format!("the answer of {url} was cut short"))?
                .to_bytes();
            anyhow::Ok(Answer { status, body })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow!("no answer from {url} within {REQUEST_TIMEOUT:?}"))?
    }

    /// `answer` if a success; else the server's refusal as an error: its message and
    /// status.
    pub fn accepted(&self, answer: Answer) -> anyhow::Result<Answer> {
        if answer.status.is_success() {
            return Ok(answer);
        }
        let why = serde_json::from_slice::<serde_json::Value>(&answer.body)
            .ok()
            .and_then(|v| v.get("message")?.as_str().map(str::to_string))
            .unwrap_or_else(|| {
                let text = String::from_utf8_lossy(&answer.body);
                print::cell(text.trim().chars().take(200).collect::<String>().as_str())
            });
        let status = answer.status;
        let hint = match (status, self.given_token) {
            (StatusCode::UNAUTHORIZED, true) => {
                "; the token of --token (or SFU_ADMIN_TOKEN) has expired, or is not signed \
                 with this server's admin secret"
            }
            (StatusCode::UNAUTHORIZED, false) => {
                "; the admin secret given is not this server's (its --admin-secret-file), or \
                 the clocks differ by minutes"
            }
            _ => "",
        };
        if why.is_empty() {
            bail!("the server refused: {status}{hint}");
        }
        bail!("the server refused: {why} ({status}){hint}")
    }
}

/// The HTTP client: HTTP/1.1, over rustls with aws-lc-rs for https, trusting the CA
/// certificates of `ca_file`, or else the system's (read only for https).
fn client(
    https: bool,
    ca_file: Option<&Path>,
) -> anyhow::Result<Client<HttpsConnector<HttpConnector>, Full<Bytes>>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = if https && ca_file.is_none() {
        HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider)
            .context("no CA certificates in the system's store: give --ca-file")?
    } else {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(path) = ca_file {
            let shown = path.display();
            let certs = CertificateDer::pem_file_iter(path)
                .with_context(|| format!("cannot read --ca-file {shown}"))?;
            for cert in certs {
                let cert = cert.with_context(|| format!("--ca-file {shown}: not PEM"))?;
                roots
                    .add(cert)
                    .with_context(|| format!("--ca-file {shown}: a bad certificate"))?;
            }
            if roots.is_empty() {
                bail!("--ca-file {shown} holds no certificate");
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        HttpsConnectorBuilder::new().with_tls_config(config)
    };
    let connector = tls.https_or_http().enable_http1().build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// The identity of a token made from the secret, without `--identity`.
fn default_identity() -> String {
    std::env::var("USER")
        .ok()
        .filter(|user| !user.is_empty())
        .unwrap_or_else(|| "admin-cli".into())
}

/// Whether the host of `url` (as `--url` gives it) is this machine.
fn loopback(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    let host = uri.host().unwrap_or_default();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `name` as one segment of a path (or a query value): every byte but letters, digits,
/// `-`, `_`, `.` and `~` percent-encoded, and the dots of `.` and `..` too (which
/// would mean the current and the parent path).
pub fn segment(name: &str) -> String {
    let dots = name.bytes().all(|b| b == b'.');
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~') || (b == b'.' && !dots) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_segment_each() {
        assert_eq!(segment("standup"), "standup");
        assert_eq!(segment("sales.emea-2_x~"), "sales.emea-2_x~");
        assert_eq!(segment("team/α β"), "team%2F%CE%B1%20%CE%B2");
        assert_eq!(segment("a+b?c#d%"), "a%2Bb%3Fc%23d%25");
        assert_eq!(segment(".."), "%2E%2E");
        assert_eq!(segment("."), "%2E");
        assert_eq!(segment("a..b"), "a..b");
    }

    #[test]
    fn only_this_machine_is_loopback() {
        assert!(loopback("http://127.0.0.1:8080"));
        assert!(loopback("http://localhost:8080/sfu"));
        assert!(loopback("http://[::1]:8080"));
        assert!(!loopback("http://10.0.0.1:8080"));
        assert!(!loopback("http://sfu.example"));
    }
}
