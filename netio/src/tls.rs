//! A TLS server certificate read from PEM files that can be replaced while the server
//! runs: on SIGHUP, and when the files change (a renewal by certbot or cert-manager).
//!
//! Connections already open keep the certificate they were made with; each new handshake
//! gets the current one ([`Certificate`] is rustls's certificate resolver). A reload that
//! fails (a missing file, a key that does not match the certificate, a renewal caught
//! half-written) keeps the previous certificate and says why in the log.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_rustls::rustls;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tracing::{info, warn};

/// How often [`Certificate::watch`] looks at the files' modification times.
const POLL: Duration = Duration::from_secs(10);

/// The certificate chain and private key of a TLS server, from two PEM files.
pub struct Certificate {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Certificate {
    /// Reads the chain and the key; the error names the file at fault, or says that the
    /// key is not the certificate's.
    pub fn load(cert: &Path, key: &Path) -> io::Result<Arc<Certificate>> {
        Ok(Arc::new(Certificate {
            current: RwLock::new(Arc::new(read(cert, key)?)),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        }))
    }

    /// Reads the files again and, if they hold a usable certificate, serves it from the
    /// next handshake on.
    pub fn reload(&self) -> io::Result<()> {
        let fresh = Arc::new(read(&self.cert, &self.key)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// A rustls server configuration (TLS 1.2 and 1.3, no client certificates) that
    /// offers `alpn` and serves this certificate as it is at each handshake.
    pub fn server_config(self: &Arc<Self>, alpn: &[&[u8]]) -> io::Result<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(format!("TLS versions: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    /// Reloads on SIGHUP, and when either file's modification time changes (looked at
    /// every 10 s), for ever; `name` says in the log which server's certificate it is.
    /// The SIGHUP handler is installed before this returns (call it in the runtime).
    pub fn watch(self: Arc<Self>, name: &'static str) -> impl Future<Output = ()> + Send {
        let hangup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!("{name}: no SIGHUP handler ({e}); the certificate reloads on change only");
                None
            }
        };
        self.watching(name, hangup)
    }

    async fn watching(self: Arc<Self>, name: &'static str, mut hangup: Option<Signal>) {
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen = self.stamp();
        loop {
            let hup = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            let asked = tokio::select! {
                _ = hup => true,
                _ = poll.tick() => false,
            };
            let stamp = self.stamp();
            // A change seen once is tried once: a file half-written is retried when its
            // next write moves its time again, without a warning every poll meanwhile.
            if !asked && stamp == seen {
                continue;
            }
            seen = stamp;
            match self.reload() {
                Ok(()) => info!("{name}: certificate reloaded from {}", self.cert.display()),
                Err(e) => warn!("{name}: certificate not reloaded, the previous one stays: {e}"),
            }
        }
    }

    /// The files' modification times (None for one that cannot be read).
    fn stamp(&self) -> [Option<SystemTime>; 2] {
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        [modified(&self.cert), modified(&self.key)]
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// The chain of `cert` and the key of `key`, checked to belong together.
fn read(cert: &Path, key: &Path) -> io::Result<CertifiedKey> {
    let bad_cert = |e: &dyn fmt::Display| invalid(format!("certificate {}: {e}", cert.display()));
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad_cert(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_cert(&e))?;
    if chain.is_empty() {
        return Err(bad_cert(&"no certificate in it"));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| invalid(format!("private key {}: {e}", key.display())))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    CertifiedKey::from_der(chain, private, &provider).map_err(|e| {
        invalid(format!(
            "private key {} and certificate {}: {e}",
            key.display(),
            cert.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of its own for one test's files, removed at the end.
    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let dir = std::env::temp_dir().join(format!("netio-tls-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Dir(dir)
        }

        fn write(&self, file: &str, text: &str) -> PathBuf {
            let path = self.0.join(file);
            std::fs::write(&path, text).unwrap();
            path
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A self-signed certificate for `name` and its key, in PEM, and the certificate's DER.
    fn pair(name: &str) -> (String, String, CertificateDer<'static>) {
        let made = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        let der = made.cert.der().clone();
        (made.cert.pem(), made.signing_key.serialize_pem(), der)
    }

    fn served(certificate: &Certificate) -> CertificateDer<'static> {
        certificate.current.read().unwrap().cert[0].clone()
    }

    #[test]
    fn a_start_is_refused_naming_the_file_at_fault() {
        let dir = Dir::new("load");
        let (cert, key, _) = pair("a.example");
        let (_, other_key, _) = pair("b.example");
        let cert_path = dir.write("cert.pem", &cert);
        let key_path = dir.write("key.pem", &key);
        assert!(Certificate::load(&cert_path, &key_path).is_ok());

        let missing = dir.0.join("missing.pem");
        let err = Certificate::load(&missing, &key_path)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("certificate {}", missing.display())),
            "{err}"
        );
        let err = Certificate::load(&cert_path, &missing)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("private key {}", missing.display())),
            "{err}"
        );
        // A key where the certificate should be.
        let err = Certificate::load(&key_path, &key_path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no certificate in it"), "{err}");
        let other = dir.write("other.pem", &other_key);
        let err = Certificate::load(&cert_path, &other)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("and certificate") && err.contains("Key"),
            "{err}"
        );
    }

    #[test]
    fn a_reload_serves_the_new_pair_and_a_bad_one_keeps_the_last_good() {
        let dir = Dir::new("reload");
        let (cert_a, key_a, der_a) = pair("a.example");
        let (cert_b, key_b, der_b) = pair("b.example");
        let cert = dir.write("cert.pem", &cert_a);
        let key = dir.write("key.pem", &key_a);
        let certificate = Certificate::load(&cert, &key).unwrap();
        assert_eq!(served(&certificate), der_a);

        dir.write("cert.pem", &cert_b);
        dir.write("key.pem", &key_b);
        certificate.reload().unwrap();
        assert_eq!(served(&certificate), der_b);

        // A renewal caught half-written: the new certificate, the old key.
        let (cert_c, _, _) = pair("c.example");
        dir.write("cert.pem", &cert_c);
        assert!(certificate.reload().is_err());
        assert_eq!(served(&certificate), der_b);
        std::fs::remove_file(&cert).unwrap();
        assert!(certificate.reload().is_err());
        assert_eq!(served(&certificate), der_b);
    }

    /// The watcher notices files replaced without a SIGHUP (time runs paused: its
    /// 10-second polls come at once).
    #[tokio::test(start_paused = true)]
    async fn files_replaced_are_served_after_the_next_poll() {
        let dir = Dir::new("watch");
        let (cert_a, key_a, der_a) = pair("a.example");
        let (cert_b, key_b, der_b) = pair("b.example");
        let cert = dir.write("cert.pem", &cert_a);
        let key = dir.write("key.pem", &key_a);
        let certificate = Certificate::load(&cert, &key).unwrap();
        tokio::spawn(certificate.clone().watch("test"));
        tokio::time::sleep(POLL * 2).await;
        assert_eq!(
            served(&certificate),
            der_a,
            "unchanged files are not reloaded"
        );

        dir.write("cert.pem", &cert_b);
        dir.write("key.pem", &key_b);
        // Coarse file times could equal the first files': set them apart.
        let later = SystemTime::now() + Duration::from_secs(5);
        for path in [&cert, &key] {
            let file = std::fs::File::options().write(true).open(path).unwrap();
            file.set_modified(later).unwrap();
        }
        tokio::time::sleep(POLL + Duration::from_secs(1)).await;
        assert_eq!(served(&certificate), der_b);
    }
}
